"""The NetworkPolicy conformance cases on the real kernel, one node.

One topology for the whole module (node + nine pods, responders on 80/81 TCP/UDP); per
case the previous policies are removed and the case's applied through the real compiler and
writers (iptables-restore legacy), conntrack is flushed in the node namespace, and the full
matrix is probed. The kernel's table must equal BOTH the case's truth table and the
reference evaluator's answer. A short second pass runs a handful of cases through the nft
and python-iptables backends.
"""

from __future__ import annotations

import pytest

from policy.convert import policy_from_doc
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import CASES, DEFAULT_IPS, NetpolCase, namespace_labels
from tests.kernel.policy_topology import (
    Matrix,
    PolicyDataplane,
    PolicyTopology,
    flush_conntrack,
    legacy_fixture,  # noqa: F401 (module-scoped fixture)
    probe_with_retry,
    render_matrix,
    topo_fixture,  # noqa: F401 (module-scoped fixture)
)

pytestmark = pytest.mark.kernel
OTHER_BACKEND_CASES = (
    "default-deny-all",
    "ingress-named-port-from-namespace",
    "egress-ip-block-except",
    "calico-pass-skips-k8s-deny",
    "ingress-pod-and-namespace-one-peer",
)


def evaluator_matrix(topo: PolicyTopology, case: NetpolCase) -> Matrix:
    ev = Evaluator(topo.endpoints, [policy_from_doc(d) for d in case.policies], namespace_labels())
    return {
        (proto, port): {
            (s, d): s == d or ev.allowed(Flow(DEFAULT_IPS[s], DEFAULT_IPS[d], proto, port, src_port=40000))
            for (s, d) in table
        }
        for (proto, port), table in case.truth_table().items()
    }


def diff_report(case: NetpolCase, got: Matrix, expected: Matrix, oracle: Matrix) -> str:
    parts = [f"case {case.name}"]
    for pr in case.probes:
        if got[pr] == expected[pr] == oracle[pr]:
            continue
        parts.append(f"--- {pr[0]}/{pr[1]} kernel:\n{render_matrix(got[pr])}")
        parts.append(f"--- {pr[0]}/{pr[1]} expected (truth table):\n{render_matrix(expected[pr])}")
        if oracle[pr] != expected[pr]:
            parts.append(f"--- {pr[0]}/{pr[1]} evaluator:\n{render_matrix(oracle[pr])}")
        wrong = sorted(k for k in got[pr] if got[pr][k] != expected[pr][k])
        parts.append("differs at: " + ", ".join(f"{s}->{d}" for s, d in wrong))
    return "\n".join(parts)


def run_case(topo: PolicyTopology, dp: PolicyDataplane, case: NetpolCase) -> None:
    dp.set_policies(case.policies)
    flush_conntrack(topo.node)
    expected = case.truth_table()
    got = probe_with_retry(topo, case.probes, expected)
    oracle = evaluator_matrix(topo, case)
    report = diff_report(case, got, expected, oracle)
    if got != expected or got != oracle:
        print(report)
    assert got == expected, report
    assert got == oracle, report


def test_there_are_enough_kernel_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_on_kernel(topo: PolicyTopology, legacy: PolicyDataplane, case: NetpolCase) -> None:
    run_case(topo, legacy, case)


@pytest.mark.parametrize("backend", ["nft", "python-iptables"])
def test_cases_through_other_backends(topo: PolicyTopology, legacy: PolicyDataplane, backend: str) -> None:
    """The same kernel written by another backend; the legacy writer's chains are withdrawn
    first (two writers of FORWARD would both filter) and restored after."""
    legacy.withdraw()
    dp = PolicyDataplane(topo, backend=backend)  # type: ignore[arg-type]
    try:
        for case in (c for c in CASES if c.name in OTHER_BACKEND_CASES):
            run_case(topo, dp, case)
    finally:
        dp.set_policies([])
        dp.withdraw()
        dp.close()
        legacy.restore()
