"""A stored Profile on the real kernel (the conformance topology of tests/kernel/policy_topology.py).

x/a lists only the profile ``restricted`` (no policy applies to it). A Profile denying all ingress
isolates it from every pod; one allowing TCP/80 from ``team == 'blue'`` (a label the y pods get from a
second profile's labelsToApply) admits exactly them; a policy that applies to x/a decides alone (the
profile is not reached); deleting the stored profile leaves x/a with a profile nobody stored, which
allows nothing. The reference evaluator agrees with the kernel every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from policy.convert import policy_from_doc, profile_from_doc
from policy.entities import Profile
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import POD_KEYS, TCP80, namespace_labels
from tests.kernel.policy_topology import (
    PolicyDataplane,
    PolicyTopology,
    flush_conntrack,
    legacy_fixture,  # noqa: F401 (module-scoped fixture)
    pod_key_matrix,
    probe_with_retry,
    topo_fixture,  # noqa: F401 (module-scoped fixture)
)

pytestmark = pytest.mark.kernel
DST = "x/a"
ALLOW_X_A = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "x-a-from-all"},
    "spec": {
        "selector": "projectcalico.org/namespace == 'x' && pod == 'a'",
        "ingress": [{"action": "Allow"}],
    },
}


def profile(name: str, **spec: Any) -> Profile:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": name}, "spec": spec}
    return profile_from_doc(doc)


DENY_ALL = profile("restricted", ingress=[{"action": "Deny"}], egress=[{"action": "Allow"}])
PORT80_FROM_BLUE = profile(
    "restricted",
    ingress=[
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": "team == 'blue'"},
            "destination": {"ports": [80]},
        }
    ],
    egress=[{"action": "Allow"}],
)
BLUE = profile("blue", labelsToApply={"team": "blue"})


def kernel_column(topo: PolicyTopology, expect: dict[str, bool]) -> dict[str, bool]:
    """Who reaches x/a on TCP/80 with new flows now (a flow expected allowed that came back denied is
    probed once more with a longer timeout: a slow machine can fake a timeout, never a reply)."""
    flush_conntrack(topo.node)
    expected = {TCP80: {(s, DST): expect[s] for s in POD_KEYS}}
    pairs = [(s, DST) for s in POD_KEYS]
    return pod_key_matrix(probe_with_retry(topo, [TCP80], expected, pairs=pairs)[TCP80], DST)


def oracle_column(
    topo: PolicyTopology, endpoints: list[Any], profiles: list[Profile], policies: Sequence[Any] = ()
) -> dict[str, bool]:
    ev = Evaluator(endpoints, [policy_from_doc(p) for p in policies], namespace_labels(), profiles=profiles)
    return {s: s == DST or ev.allowed(Flow(topo.ips[s], topo.ips[DST], "TCP", 80)) for s in POD_KEYS}


def test_profile_rules_decide_when_no_policy_applies(topo: PolicyTopology, legacy: PolicyDataplane) -> None:
    dp = legacy
    original = list(topo.endpoints)
    endpoints = [
        replace(ep, profiles=("restricted",))
        if ep.key == DST
        else replace(ep, profiles=(*ep.profiles, "blue"))
        if ep.namespace == "y"
        else ep
        for ep in original
    ]
    try:
        for ep in endpoints:
            dp.compiler.update_endpoint(ep)
        dp.compiler.update_profile(BLUE)
        dp.compiler.update_profile(DENY_ALL)
        dp.apply()
        want = oracle_column(topo, endpoints, [BLUE, DENY_ALL])
        assert [s for s, ok in want.items() if ok] == [DST], "a deny-all profile isolates x/a"
        assert kernel_column(topo, want) == want

        dp.compiler.update_profile(PORT80_FROM_BLUE)
        dp.apply()
        want = oracle_column(topo, endpoints, [BLUE, PORT80_FROM_BLUE])
        assert [s for s, ok in want.items() if ok] == ["x/a", "y/a", "y/b", "y/c"]
        assert kernel_column(topo, want) == want

        dp.compiler.update_profile(DENY_ALL)
        dp.set_policies([ALLOW_X_A])  # a policy applies: the profile is not reached
        want = oracle_column(topo, endpoints, [BLUE, DENY_ALL], [ALLOW_X_A])
        assert all(want.values())
        assert kernel_column(topo, want) == want

        dp.set_policies([])
        dp.compiler.remove_profile("restricted")  # a profile nobody stored allows nothing
        dp.apply()
        want = {s: s == DST for s in POD_KEYS}
        assert oracle_column(topo, endpoints, [BLUE]) == want
        assert kernel_column(topo, want) == want
    finally:
        dp.compiler.remove_profile("restricted")
        dp.compiler.remove_profile("blue")
        for ep in original:
            dp.compiler.update_endpoint(ep)
        dp.set_policies([])
