#!/usr/bin/env bash
# The VM stage: the kernel-gated tests (pytest marker `vm`: IPIP, WireGuard) inside a real Debian
# kernel booted with virtme-ng over this checkout, because the CI host's kernel may lack ipip and
# wireguard. Inside the VM FELIXPY_REQUIRE_KERNEL_FEATURES=ipip,wireguard turns "kernel lacks X"
# from a skip into a failure.
#
#   bash scripts/vm-tests.sh                 # the whole stage (what .ci/run calls)
#   VM_TESTS='-m vm tests/kernel/test_bgp_fib.py' bash scripts/vm-tests.sh   # just that, inside the VM
#
# Exit: 0 = tests passed, or the VM cannot boot here (one "vm-tests: SKIPPED: <why>" line);
# 1 = a test failed or the stage timed out. The VM's whole console is kept in $VM_LOG.
# Inside (scripts/vm-inner.sh): the kernel-level tests, then the two labs one after the other
# (tests/e2e/test_lab_ipip.py: IPIP Always + policy; test_lab_wireguard.py: IPIP CrossSubnet +
# WireGuard on/rotate/off/metrics), each lab built once for its module, each also into
# .vm/<module>.log as it runs. pytest runs with -s: each phase prints "[lab-timing] ..." with its time.
# Knobs: VM_STAGE_TIMEOUT (s, default 2100: the whole stage, boot and labs included, stays inside
# 35 min), VM_TEST_TIMEOUT (s per test, 1200; the lab modules set their own), VM_TIME_SCALE
# (multiplies the tests' own waits, default 10: TCG is ~30x slower), VM_KVM=1 to try KVM,
# VM_KERNEL=/boot/vmlinuz-..., VM_CPUS (2), VM_MEMORY (4G), VM_LABS (the labs run, "ipip" and/or
# "wireguard": none by default until each has been shown green in the VM; see docs/operations.md).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=${VM_LOG:-$ROOT/.vm/vm-tests.log}
STAGE_TIMEOUT=${VM_STAGE_TIMEOUT:-2100}
TEST_TIMEOUT=${VM_TEST_TIMEOUT:-1200}
mkdir -p "$(dirname "$LOG")"
started=$(date +%s)

skip() { echo "vm-tests: SKIPPED: $*"; exit 0; }
say() { echo "vm-tests: $*"; }

# ---- what the stage needs -------------------------------------------------------------------
need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need_apt+=(linux-image-amd64)
command -v busybox >/dev/null || need_apt+=(busybox-static)  # virtme-ng's initramfs
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
if ((${#need_apt[@]})); then
    say "installing ${need_apt[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" \
        >>"$LOG.install" 2>&1 || skip "apt-get install ${need_apt[*]} failed (see $LOG.install)"
fi
if [[ ! -x .venv-vm/bin/vng ]]; then
    say "installing virtme-ng into .venv-vm (pip)"
    { python3 -m venv .venv-vm && .venv-vm/bin/pip install -q virtme-ng; } >>"$LOG.install" 2>&1 \
        || skip "pip install virtme-ng failed (see $LOG.install)"
fi
[[ -x .venv/bin/pytest ]] || skip "no .venv with pytest in $ROOT (run scripts/install.sh first)"
# The CNI forwarders (static C binaries the labs' pods use) are built here when missing or stale:
# in the VM, gcc -static under TCG took over its 120 s bound (a fresh .venv failed the WireGuard
# lab's setup that way in session 7).
.venv/bin/python -c 'from felixpy.cni import forwarder
for name in forwarder.SOURCES: forwarder.binary(name)' >>"$LOG.install" 2>&1 \
    || say "could not build the CNI forwarders on the host (see $LOG.install); the VM will try"

KERNEL=${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[[ -r $KERNEL ]] || skip "no kernel image to boot (/boot/vmlinuz-*)"
version=${KERNEL#/boot/vmlinuz-}
[[ -d /lib/modules/$version ]] || skip "kernel $version has no /lib/modules/$version"
for mod in ipip wireguard; do
    find "/lib/modules/$version" -name "$mod.ko*" | grep -q . \
        || grep -q "CONFIG_$(tr a-z A-Z <<<"$mod")=y" "/boot/config-$version" 2>/dev/null \
        || skip "kernel $version has no $mod module"
done
kvm=(--disable-kvm)
[[ ${VM_KVM:-0} == 1 && -w /dev/kvm ]] && kvm=()

# ---- inside the VM ----------------------------------------------------------------------------
# scripts/vm-inner.sh: the kernel-level tests, then the labs (their logs also in .vm/ as they run)
inner="cd '$ROOT' && VM_TESTS=$(printf %q "${VM_TESTS:-}") VM_LABS=$(printf %q "${VM_LABS:-}") \
VM_TIME_SCALE=${VM_TIME_SCALE:-10} VM_TEST_TIMEOUT=$TEST_TIMEOUT bash scripts/vm-inner.sh"

rm -rf "$ROOT"/.vm/test_lab_*.log "$ROOT"/.vm/lab-logs  # the labs' logs of an earlier run
: >"$LOG"  # then appended to (O_APPEND: QEMU's and the guest's writes never overwrite each other)
say "booting $KERNEL (${kvm[*]:-kvm}) over $ROOT; console -> $LOG (stage limit ${STAGE_TIMEOUT}s)"
PATH=$ROOT/.venv-vm/bin:$PATH timeout --kill-after=30 "$STAGE_TIMEOUT" \
    vng -r "$KERNEL" "${kvm[@]}" --user root --cpus "${VM_CPUS:-2}" --memory "${VM_MEMORY:-4G}" \
    --rwdir "$ROOT" -- "$inner" >>"$LOG" 2>&1 </dev/null
rc=$?
elapsed=$(($(date +%s) - started))
tail -n 60 "$LOG"

if ! grep -q 'VM-BOOTED [0-9]' "$LOG"; then
    ((rc == 124)) && skip "the VM did not boot within ${STAGE_TIMEOUT}s (console in $LOG)"
    skip "the VM could not boot here (vng exit $rc after ${elapsed}s; console in $LOG)"
fi
result=$(grep -o 'VM-PYTEST-EXIT=[0-9]*' "$LOG" | tail -n 1)
if [[ -z $result ]]; then
    for f in "$ROOT"/.vm/test_lab_*.log; do
        [[ -f $f ]] && { echo "---- last lines of $f"; tail -n 25 "$f"; }
    done
    [[ -d $ROOT/.vm/lab-logs ]] && say "the labs' agent logs, kept after each test: $ROOT/.vm/lab-logs/"
    say "FAILED: the tests did not finish within ${STAGE_TIMEOUT}s (vng exit $rc; console in $LOG)"
    exit 1
fi
[[ -d $ROOT/.vm/lab-logs ]] && say "the labs' agent logs, kept after each test: $ROOT/.vm/lab-logs/"
code=${result#VM-PYTEST-EXIT=}
summary=$(grep -E '^(=+ .*(passed|failed|error).* =+)$' "$LOG" | tr -d '=' | paste -sd ';' -)
if [[ $code == 0 ]]; then
    say "passed in ${elapsed}s: $summary"
    exit 0
fi
say "FAILED (pytest exit $code) in ${elapsed}s: $summary"
exit 1
