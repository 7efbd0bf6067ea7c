#!/usr/bin/env bash
# Builds the felixpy node image without a registry or a daemon (run as root):
#   1. a Debian bookworm root filesystem made by `debootstrap --variant=minbase` (cached as a tarball),
#   2. imported into buildah as the base image (`buildah from scratch` + `buildah add` of the tarball),
#   3. `buildah bud --isolation chroot --build-arg BASE=<that image>` of the repository's Dockerfile.
# Every step is bounded in time and none hides a failure; the image's size and each step's time are
# printed at the end (and written to $FELIXPY_IMAGE_REPORT when set, as JSON).
#
#   scripts/build-image.sh [TAG]            TAG defaults to felixpy/felixpy:<chart appVersion>
#
# Environment:
#   FELIXPY_IMAGE_CACHE   where the debootstrap tarball is kept between runs (default /var/cache/felixpy-image;
#                         a tarball older than FELIXPY_BASE_MAX_AGE_DAYS, default 7, is rebuilt)
#   DEBIAN_MIRROR         default http://deb.debian.org/debian
#   FELIXPY_IMAGE_REPORT  a file to write {"tag", "size_bytes", "seconds": {step: s}} to
#   FELIXPY_BUILD_CA      the CA bundle pip trusts during the build (default: this machine's,
#                         /etc/ssl/certs/ca-certificates.crt, so a TLS-intercepting proxy trusted here
#                         is trusted by the build too); mounted for the RUN steps only, not in the image
set -euo pipefail
cd "$(dirname "$0")/.."

APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/felixpy/Chart.yaml)
TAG=${1:-felixpy/felixpy:${APP_VERSION:?charts/felixpy/Chart.yaml has no appVersion}}
CACHE=${FELIXPY_IMAGE_CACHE:-/var/cache/felixpy-image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
MAX_AGE_DAYS=${FELIXPY_BASE_MAX_AGE_DAYS:-7}
SUITE=bookworm
BASE_IMAGE="localhost/felixpy-base:$SUITE"

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and buildah's chroot isolation)"
for tool in buildah debootstrap tar timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install buildah debootstrap)"
done

declare -A SECONDS_OF
step() {  # step NAME LIMIT_SECONDS CMD...: run CMD bounded by LIMIT, record its time
    local name=$1 limit=$2 start rc=0
    shift 2
    start=$(date +%s)
    say "$name (at most ${limit}s) ..."
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    SECONDS_OF[$name]=$(( $(date +%s) - start ))
    [ "$rc" -eq 124 ] && die "$name took longer than ${limit}s"
    [ "$rc" -eq 0 ] || die "$name failed (exit $rc)"
    say "$name: ${SECONDS_OF[$name]}s"
}

make_base_tarball() {
    local root
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" RETURN
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; return 1; }
    # What bookworm-slim has and minbase lacks: the updates suite, and no docs or apt caches in layers.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
EOF
    # A mirror may serve a dated snapshot: do not refuse its Release files for their age.
    printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99felixpy-snapshot"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$root/etc/apt/apt.conf.d/99felixpy-no-recommends"
    # As bookworm-slim: no documentation, manual pages or translations, now or from later installs.
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-felixpy-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$root/usr/share/man" "$root/usr/share/info" -mindepth 1 -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
}

import_base() {
    local ctr
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$BASE_TAR" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash --label "felixpy.base.sha256=$BASE_SUM" "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

# The cached tarball is named by the recipe that made it: a changed recipe makes a new base.
RECIPE=$(declare -f make_base_tarball | sha256sum | cut -c1-12)
BASE_TAR="$CACHE/debian-$SUITE-minbase-$RECIPE.tar"
mkdir -p "$CACHE"
find "$CACHE" -maxdepth 1 -name "debian-$SUITE-minbase-*.tar" ! -name "${BASE_TAR##*/}" -delete
if [ -f "$BASE_TAR" ] && [ -z "$(find "$BASE_TAR" -mtime +"$MAX_AGE_DAYS")" ]; then
    say "debootstrap base: cached $BASE_TAR"
    SECONDS_OF[debootstrap]=0
else
    step debootstrap 1200 bash -c "$(declare -f make_base_tarball); $(declare -p SUITE MIRROR CACHE BASE_TAR); make_base_tarball"
fi

BASE_SUM=$(sha256sum "$BASE_TAR" | cut -d' ' -f1)
have=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "felixpy.base.sha256"}}' \
    "$BASE_IMAGE" 2>/dev/null || true)
if [ "$have" = "$BASE_SUM" ]; then
    say "base image: $BASE_IMAGE is the cached tarball"
    SECONDS_OF[import]=0
else
    step import 300 bash -c "$(declare -f import_base); $(declare -p BASE_TAR BASE_IMAGE BASE_SUM); import_base"
fi

CA=${FELIXPY_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
BUD=(buildah bud --isolation chroot --layers --force-rm --build-arg "BASE=$BASE_IMAGE" -t "$TAG" -f Dockerfile)
if [ -f "$CA" ]; then
    BUD+=(--volume "$CA:/run/felixpy-build/ca.crt:ro" --build-arg BUILD_CA_CERT=/run/felixpy-build/ca.crt)
fi
bud() {  # the whole log in $CACHE/bud.log; its end on the terminal when it fails
    "${BUD[@]}" . >"$CACHE/bud.log" 2>&1 || { rc=$?; tail -40 "$CACHE/bud.log" >&2; return "$rc"; }
}
step bud 1800 bash -c "$(declare -f bud); $(declare -p BUD CACHE); bud"

# The image's size: the bytes of its root filesystem (what a node stores once the layers are unpacked).
measure() {
    local ctr mnt
    ctr=$(buildah from --pull-never "$TAG")
    mnt=$(buildah mount "$ctr")
    du -sb "$mnt" | cut -f1
    buildah umount "$ctr" >/dev/null
    buildah rm "$ctr" >/dev/null
}
SIZE=$(timeout 120 bash -c "$(declare -f measure); $(declare -p TAG); measure")
[[ "$SIZE" =~ ^[0-9]+$ ]] || die "could not measure the image's size"
say "image $TAG: $SIZE bytes ($(( SIZE / 1024 / 1024 )) MiB); seconds: debootstrap ${SECONDS_OF[debootstrap]}, import ${SECONDS_OF[import]}, bud ${SECONDS_OF[bud]}"
if [ -n "${FELIXPY_IMAGE_REPORT:-}" ]; then
    printf '{"tag": "%s", "size_bytes": %s, "seconds": {"debootstrap": %s, "import": %s, "bud": %s}}\n' \
        "$TAG" "$SIZE" "${SECONDS_OF[debootstrap]}" "${SECONDS_OF[import]}" "${SECONDS_OF[bud]}" \
        >"$FELIXPY_IMAGE_REPORT"
fi
echo "$TAG"
