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

kernel=() labs=() selects=()
for f in tests/kernel/test_dataplane_encap.py tests/kernel/test_bgp_fib.py tests/kernel/test_wireguard_kernel.py; do
    [[ -f $f ]] && kernel+=("$f")
done
# VM_LABS: which labs, "ipip" and/or "wireguard", each optionally "<lab>:<pytest -k expression>"
# (underscores standing for spaces, as VM_LABS is split on spaces) to run part of a lab module.
# CI: "wireguard:crosssubnet_or_down", the WireGuard lab's IPIP CrossSubnet phase (3 nodes, 2 racks)
# and its clean-up, without the ~35 min of WireGuard phases. None by default
for lab in ${VM_LABS:-}; do
    f=tests/e2e/test_lab_${lab%%:*}.py
    sel=""
    [[ $lab == *:* ]] && sel=${lab#*:}
    if [[ -f $f ]]; then
        labs+=("$f")
        selects+=("${sel//_/ }")
    else
        echo "VM-PART $f: no such lab module (VM_LABS=$lab)"
        worst_missing=1
    fi
done

"${pytest[@]}" -m vm "${kernel[@]}"
worst=$?
((${worst_missing:-0} > worst)) && worst=${worst_missing}
echo "VM-PART kernel tests: exit $worst after $(($(date +%s) - started))s"

for i in "${!labs[@]}"; do
    f=${labs[$i]} sel=${selects[$i]}
    log=.vm/$(basename "$f" .py).log
    echo "VM-PART $f${sel:+ -k '$sel'}: output also in $log"
    if [[ -n $sel ]]; then
        "${pytest[@]}" -m vm "$f" -k "$sel" 2>&1 | tee "$log"
    else
        "${pytest[@]}" -m vm "$f" 2>&1 | tee "$log"
    fi
    rc=${PIPESTATUS[0]}
    echo "VM-PART $f: exit $rc after $(($(date +%s) - started))s"
    ((rc > worst)) && worst=$rc
done
echo "VM-PYTEST-EXIT=$worst"
