"""The NetworkPolicy conformance cases through the reference evaluator."""

from __future__ import annotations

import pytest

from policy.convert import policy_from_doc
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import (
    CASES,
    DEFAULT_IPS,
    POD_KEYS,
    NetpolCase,
    namespace_labels,
    topology,
)


def evaluator_for(case: NetpolCase) -> Evaluator:
    policies = [policy_from_doc(doc) for doc in case.policies]
    return Evaluator(topology(), policies, namespace_labels())


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_evaluator_agrees_with_truth_table(case: NetpolCase) -> None:
    ev = evaluator_for(case)
    wrong = []
    for (proto, port), table in case.truth_table().items():
        for (src, dst), expected in table.items():
            flow = Flow(DEFAULT_IPS[src], DEFAULT_IPS[dst], proto, port, src_port=40000)
            if ev.allowed(flow) != expected:
                wrong.append(f"{proto}/{port} {src}->{dst}: expected {'allow' if expected else 'deny'}")
    assert not wrong, "\n".join(wrong)


def test_truth_tables_are_not_trivial() -> None:
    """Every case but the allow-all ones denies something, so a broken evaluator cannot pass."""
    trivial = {c.name for c in CASES if all(all(t.values()) for t in c.truth_table().values())}
    assert trivial == {
        "allow-all-ingress",
        "deny-then-allow-all",
        "ingress-allow-all-takes-precedence",
        "egress-allow-all-takes-precedence",
        "egress-except-allowed-by-other-policy",
    }


def test_no_policy_allows_everything() -> None:
    ev = Evaluator(topology(), [], namespace_labels())
    assert all(
        ev.allowed(Flow(DEFAULT_IPS[s], DEFAULT_IPS[d], "UDP", 81)) for s in POD_KEYS for d in POD_KEYS
    )


def test_traffic_from_outside_is_only_checked_against_ingress() -> None:
    case = next(c for c in CASES if c.name == "ingress-ip-block")
    ev = evaluator_for(case)
    assert not ev.allowed(Flow("192.0.2.1", DEFAULT_IPS["x/a"], "TCP", 80))
    assert ev.allowed(Flow("192.0.2.1", DEFAULT_IPS["x/b"], "TCP", 80))
    assert ev.allowed(Flow(DEFAULT_IPS["x/a"], "192.0.2.1", "TCP", 80))
