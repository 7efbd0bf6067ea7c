"""Tiers on the real kernel, one node (the conformance topology of tests/kernel/policy_topology.py).

The tier cases of ``tests.fixtures.tier_cases`` go through the real compiler and writers (iptables-restore
legacy): per case the tiers are set first, then the two policies, conntrack is flushed and every pod
probes the pods of namespace ``x`` on TCP 80. The kernel must give both the case's truth table and
the reference evaluator's answer. One more test changes nothing but the order of two tiers and
watches the same connection flip from dropped to allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from policy.convert import policy_from_doc
from policy.evaluator import Evaluator, Flow
from policy.tiers import DEFAULT_TIER, TierInfo
from tests.fixtures.conformance_cases import DEFAULT_IPS, POD_KEYS, TCP80, namespace_labels
from tests.fixtures.tier_cases import TIER_CASES, TierCase
from tests.kernel.policy_topology import (
    Matrix,
    PolicyDataplane,
    PolicyTopology,
    flush_conntrack,
    legacy_fixture,  # noqa: F401 (module-scoped fixture)
    probe,
    probe_with_retry,
    render_matrix,
    topo_fixture,  # noqa: F401 (module-scoped fixture)
)

pytestmark = pytest.mark.kernel
INTO_X = [(s, d) for s in POD_KEYS for d in POD_KEYS if d.startswith("x/") and s != d]


def set_tiers(dp: PolicyDataplane, tiers: Iterable[TierInfo]) -> None:
    """Make ``tiers`` the whole tier set of the compiler (``default`` stays built in)."""
    wanted = {t.name: t for t in tiers}
    for name in [n for n in dp.compiler.tiers if n not in wanted and n != DEFAULT_TIER]:
        dp.compiler.remove_tier(name)
    for t in wanted.values():
        dp.compiler.update_tier(t)


def expected_and_oracle(topo: PolicyTopology, case: TierCase) -> tuple[Matrix, Matrix]:
    truth = case.netpol().truth_table()[TCP80]
    ev = Evaluator(
        topo.endpoints, [policy_from_doc(d) for d in case.policies], namespace_labels(), tiers=case.tiers
    )
    flows = {(s, d): Flow(DEFAULT_IPS[s], DEFAULT_IPS[d], "TCP", 80, src_port=40000) for s, d in INTO_X}
    return {TCP80: {k: truth[k] for k in INTO_X}}, {TCP80: {k: ev.allowed(f) for k, f in flows.items()}}


@pytest.mark.parametrize("case", TIER_CASES, ids=lambda c: c.name)
def test_tier_case_on_kernel(topo: PolicyTopology, legacy: PolicyDataplane, case: TierCase) -> None:
    set_tiers(legacy, case.tiers)
    legacy.set_policies(case.policies)
    flush_conntrack(topo.node)
    expected, oracle = expected_and_oracle(topo, case)
    got = probe_with_retry(topo, [TCP80], expected, pairs=INTO_X)
    report = (
        f"case {case.name}\nkernel:\n{render_matrix(got[TCP80])}\nexpected:\n{render_matrix(expected[TCP80])}"
    )
    assert got == expected, report
    assert got == oracle, report


def test_only_the_tier_order_changes_and_the_verdict_flips(
    topo: PolicyTopology, legacy: PolicyDataplane
) -> None:
    """y/a → x/b on TCP 80: with security (end-of-tier Deny) before platform (Allow from pods a) the
    connection is dropped; moving platform before security, nothing else, lets it through, and back."""
    by_name = {c.name: c for c in TIER_CASES}
    case = by_name["tiers-order-security-first"]
    set_tiers(legacy, case.tiers)
    legacy.set_policies(case.policies)
    src, dst = topo.pods["y/a"].path, topo.ips["x/b"]
    verdicts = []
    for platform_order in (200, 50, 200):
        legacy.compiler.update_tier(TierInfo("platform", platform_order))
        legacy.apply()
        flush_conntrack(topo.node)
        verdicts.append(probe(src, dst, TCP80, timeout=1.0) or probe(src, dst, TCP80, timeout=2.0))
    assert verdicts == [False, True, False]
