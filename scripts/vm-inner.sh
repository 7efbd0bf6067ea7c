#!/usr/bin/env bash
# Runs INSIDE the VM that scripts/vm-tests.sh boots (Debian's kernel, this checkout over --rwdir):
# the kernel-level `vm` tests first, then the labs named in VM_LABS (ipip, wireguard), in turn
# (run at once, on a loaded machine, the two labs' five agents starved each other: an agent's etcd
# calls passed their deadline). Each lab's output goes to the console and to .vm/<module>.log in the
# checkout as it happens (kept on the host even when the stage times out).
# Prints VM-PYTEST-EXIT=<worst exit> last. VM_TESTS=<pytest args> runs just that selection instead.
set -u
cd "$(dirname "$0")/.."
echo "VM-BOOTED $(uname -r)"
export FELIXPY_REQUIRE_KERNEL_FEATURES=ipip,wireguard FELIXPY_TIME_SCALE=${VM_TIME_SCALE:-10} FELIXPY_LAB_TRACE=1
# a lab test that keeps its agents' logs (test_lab_wireguard.py) copies them here after each test: the
# lab's run dir is on the guest's own /run, gone with the VM; .vm/ is in the checkout (--rwdir)
export FELIXPY_LAB_LOG_DIR=$PWD/.vm/lab-logs
pytest=(.venv/bin/pytest -p no:cacheprovider --timeout "${VM_TEST_TIMEOUT:-1200}" -ra -v -s --durations=0)
started=$(date +%s)

if [[ -n ${VM_TESTS:-} ]]; then
    # shellcheck disable=SC2086  # a pytest selection, split as words on purpose
    "${pytest[@]}" $VM_TESTS
    echo "VM-PYTEST-EXIT=$?"
    exit 0
fi

kernel=() labs=()
for f in tests/kernel/test_dataplane_encap.py tests/kernel/test_bgp_fib.py tests/kernel/test_wireguard_kernel.py; do
    [[ -f $f ]] && kernel+=("$f")
done
# VM_LABS: which labs, "ipip" and/or "wireguard" (none by default: neither has yet been shown green
# in the VM; on this shared machine their agents did not get through start-up within the bound)
for lab in ${VM_LABS:-}; do
    f=tests/e2e/test_lab_$lab.py
    [[ -f $f ]] && labs+=("$f")
done

"${pytest[@]}" -m vm "${kernel[@]}"
worst=$?
echo "VM-PART kernel tests: exit $worst after $(($(date +%s) - started))s"

for f in "${labs[@]}"; do
    log=.vm/$(basename "$f" .py).log
    echo "VM-PART $f: output also in $log"
    "${pytest[@]}" -m vm "$f" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    echo "VM-PART $f: exit $rc after $(($(date +%s) - started))s"
    ((rc > worst)) && worst=$rc
done
echo "VM-PYTEST-EXIT=$worst"
