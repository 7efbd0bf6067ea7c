"""A GlobalNetworkSet on the real kernel (the conformance topology of tests/kernel/policy_topology.py).

A GlobalNetworkPolicy on x/a allows ingress only from ``role == 'trusted'``; no pod has that label,
only a GlobalNetworkSet does. Traffic from an address inside the set's nets reaches x/a, from outside
it is dropped; changing the set's nets (an ipset member change, no chain rewritten) flips the verdict,
a set of 0.0.0.0/0 lets everyone in, deleting the set nobody; the reference evaluator agrees with the
kernel every time.
"""

from __future__ import annotations

import pytest

from felixpy.resources.stored import GlobalNetworkSet
from policy.convert import endpoint_from_network_set, network_set_key, policy_from_doc
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
FROM_TRUSTED = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "from-trusted"},
    "spec": {
        "selector": "projectcalico.org/namespace == 'x' && pod == 'a'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'trusted'"}}],
    },
}


def trusted(nets: list[str]) -> GlobalNetworkSet:
    return GlobalNetworkSet.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkSet",
            "metadata": {"name": "trusted", "labels": {"role": "trusted"}},
            "spec": {"nets": nets},
        }
    )


def kernel_column(topo: PolicyTopology, expect: dict[str, bool]) -> dict[str, bool]:
    """Who reaches x/a on TCP/80 with new flows now (a flow expected allowed that came back denied
    is probed once more with a longer timeout: a slow machine can fake a timeout, never a reply)."""
    flush_conntrack(topo.node)
    expected = {TCP80: {(s, DST): expect[s] for s in POD_KEYS}}
    pairs = [(s, DST) for s in POD_KEYS]
    return pod_key_matrix(probe_with_retry(topo, [TCP80], expected, pairs=pairs)[TCP80], DST)


def oracle_column(topo: PolicyTopology, gns: GlobalNetworkSet) -> dict[str, bool]:
    ev = Evaluator(
        [*topo.endpoints, endpoint_from_network_set(gns)], [policy_from_doc(FROM_TRUSTED)], namespace_labels()
    )
    return {s: s == DST or ev.allowed(Flow(topo.ips[s], topo.ips[DST], "TCP", 80)) for s in POD_KEYS}


def test_policy_allows_only_the_network_sets_nets(topo: PolicyTopology, legacy: PolicyDataplane) -> None:
    dp = legacy
    try:
        first = trusted(["10.8.1.0/24"])  # namespace y's pods
        dp.compiler.update_network_set(first)
        dp.set_policies([FROM_TRUSTED])
        want = oracle_column(topo, first)
        assert [s for s, ok in want.items() if ok] == ["x/a", "y/a", "y/b", "y/c"]
        assert kernel_column(topo, want) == want

        second = trusted(["10.8.2.2/31", "10.8.0.2"])  # z/b, z/c and x/b instead
        dp.compiler.update_network_set(second)
        changes = dp.apply()
        assert changes.chains == {} and not changes.removed_chains, "a nets change rewrites no chain"
        assert len(changes.ipsets) == 1
        want = oracle_column(topo, second)
        assert [s for s, ok in want.items() if ok] == ["x/a", "x/b", "z/b", "z/c"]
        assert kernel_column(topo, want) == want

        everyone = trusted(["0.0.0.0/0"])  # hash:net refuses /0: written as its two /1 halves
        dp.compiler.update_network_set(everyone)
        dp.apply()
        want = oracle_column(topo, everyone)
        assert all(want.values())
        assert kernel_column(topo, want) == want

        dp.compiler.remove_network_set(network_set_key(None, "trusted"))
        dp.apply()
        want = {s: s == DST for s in POD_KEYS}  # the set is gone: nothing matches the selector
        assert kernel_column(topo, want) == want
    finally:
        dp.compiler.remove_network_set(network_set_key(None, "trusted"))
        dp.set_policies([])
