# felixpy node image: the agent, felixctl, the CNI plugins, ExaBGP and the kernel tools they drive.
#
# Build anywhere:   docker build -t felixpy/felixpy:0.1.0 .
# Build here / CI:  scripts/build-image.sh   (no registry: a debootstrap'd bookworm base passed as BASE,
#                   then `buildah bud --isolation chroot`; see docs/operations.md, "Building the node image")
#
# Two stages. The builder has what only the build needs (gcc, python3-dev for python-iptables' small C
# library, python3-venv, the whole containernetworking-plugins package); the runtime stage gets the venv
# with the static CNI binaries, `portmap`, and the kernel tools the agent runs: iptables, ipset,
# iproute2, ethtool, and wireguard-tools (`wg`: WireGuard keys and peers when FelixConfiguration
# wireguardEnabled is true). Every RUN is `set -eu`: no step hides a failure.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev ca-certificates containernetworking-plugins; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY felixpy ./felixpy
COPY bgp ./bgp
COPY policy ./policy
COPY ipam ./ipam
# A non-editable install: the venv holds felixpy itself, not a link to /src. Bytecode is compiled here so
# the agent, felixctl and the CNI plugin do not write it at run time. The kubernetes client's asyncio
# twin (kubernetes/aio, 68 MB with its bytecode) is removed: felixpy uses the synchronous client only. BUILD_CA_CERT: a CA bundle for pip
# when the build goes through a TLS-intercepting proxy (scripts/build-image.sh mounts this machine's).
ARG BUILD_CA_CERT=""
RUN set -eu; \
    if [ -n "$BUILD_CA_CERT" ]; then export PIP_CERT="$BUILD_CA_CERT"; fi; \
    python3 -m venv /opt/felixpy/venv; \
    /opt/felixpy/venv/bin/pip install --no-cache-dir --disable-pip-version-check . ; \
    /opt/felixpy/venv/bin/pip uninstall -y -q pip setuptools; \
    rm -rf /opt/felixpy/venv/lib/python3.11/site-packages/kubernetes/aio; \
    /opt/felixpy/venv/bin/python3 -c "import kubernetes.client, kubernetes.config, kubernetes.watch"; \
    /opt/felixpy/venv/bin/python3 -m compileall -q /opt/felixpy/venv/lib; \
    /opt/felixpy/venv/bin/felixpy --help >/dev/null; \
    /opt/felixpy/venv/bin/felixctl --help >/dev/null
# The host-side CNI binaries (felixpy/cni/forwarder.py): the runtime runs CNI plugins on the HOST, so what
# `felixpy install-cni` copies there is static: the forwarder to the agent's socket (installed as
# /opt/cni/bin/felixpy and felixpy-ipam) and the bundle launcher install-cni puts in front of Debian's
# portmap (dynamic: copied with its loader and libc). Built after the install, so they are newer than
# their sources in the venv; -static, so they must have no program interpreter.
RUN set -eu; \
    /opt/felixpy/venv/bin/python3 -m felixpy.cni.forwarder; \
    for b in /opt/felixpy/venv/libexec/felixpy/*; do \
        if readelf -l "$b" | grep -q "program interpreter"; then echo "$b is not static" >&2; exit 1; fi; \
    done; \
    mkdir -p /out/cni; \
    cp /usr/lib/cni/portmap /out/cni/portmap

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 iptables ipset iproute2 ethtool wireguard-tools; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/felixpy /opt/felixpy
# install-cni copies the reference plugins the conflist chains from here (CNI_PLUGIN_SOURCE_DIR, Debian's path).
COPY --from=builder /out/cni/ /usr/lib/cni/
RUN set -eu; \
    for tool in felixpy felixctl felixpy-cni felixpy-ipam exabgp; do \
        ln -s "/opt/felixpy/venv/bin/$tool" "/usr/local/bin/$tool"; \
    done; \
    felixpy --help >/dev/null; felixctl --help >/dev/null; exabgp version >/dev/null; \
    iptables --version; command -v ipset; ip -V; wg --version; CNI_COMMAND=VERSION /usr/lib/cni/portmap; \
    test -x /opt/felixpy/venv/libexec/felixpy/felixpy-cni; \
    test -x /opt/felixpy/venv/libexec/felixpy/felixpy-bundle-exec

ENV PATH=/opt/felixpy/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    FELIXPY_RUN_DIR=/var/run/felixpy
ENTRYPOINT []
CMD ["felixpy", "node"]
