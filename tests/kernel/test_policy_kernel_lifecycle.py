"""Policy over time on the real kernel: update, delete, established flows, isolation, drift.

One topology (node + nine pods with responders) for the module; each test starts from no
policy and a flushed conntrack table in the node namespace.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from felixpy.dataplane.iface_names import veth_name_for_workload
from felixpy.dataplane.iptables_backend import tool
from felixpy.dataplane.links import VethSpec, WorkloadLinks
from policy.chains import dispatch_tree, isolated_endpoint_chains
from policy.convert import policy_from_doc
from policy.entities import Endpoint
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import POD_KEYS, TCP80, Doc, knp, namespace_labels, peer
from tests.fixtures.netns import Netns
from tests.kernel.policy_topology import (
    NODE,
    PolicyDataplane,
    PolicyTopology,
    flush_conntrack,
    pod_key_matrix,
    probe,
    probe_with_retry,
    running_topology,
    socket_in,
    start_responder,
    wait_ready,
)

pytestmark = pytest.mark.kernel
A = {"pod": "a"}
ALLOW_FROM_XB = knp("p", "x", A, ingress=[{"from": [peer({"pod": "b"})]}])
ALLOW_FROM_Y = knp("p", "x", A, ingress=[{"from": [peer(ns={"ns": "y"})]}])


@pytest.fixture(scope="module")
def topo() -> Iterator[PolicyTopology]:
    with running_topology() as built:
        yield built


@pytest.fixture
def dp(topo: PolicyTopology) -> Iterator[PolicyDataplane]:
    plane = PolicyDataplane(topo, backend="legacy")
    plane.restore()
    plane.set_policies([])
    flush_conntrack(topo.node)
    yield plane
    plane.set_policies([])
    plane.close()


def column(
    topo: PolicyTopology, dst: str = "x/a", *, expect: dict[str, bool] | None = None
) -> dict[str, bool]:
    """Who reaches ``dst`` on TCP/80 right now (new flows). A flow ``expect``ed allowed (every flow
    unless told) that came back denied is probed once more with a longer timeout: a slow machine can
    fake a timeout, never a reply (``probe_with_retry``)."""
    pairs = [(s, dst) for s in POD_KEYS]
    expected = {TCP80: {(s, dst): (expect or {}).get(s, True) for s in POD_KEYS}}
    return pod_key_matrix(probe_with_retry(topo, [TCP80], expected, pairs=pairs)[TCP80], dst)


def oracle_column(topo: PolicyTopology, docs: list[Doc], dst: str = "x/a") -> dict[str, bool]:
    ev = Evaluator(topo.endpoints, [policy_from_doc(d) for d in docs], namespace_labels())
    return {s: s == dst or ev.allowed(Flow(topo.ips[s], topo.ips[dst], "TCP", 80)) for s in POD_KEYS}


def test_policy_update_then_delete_is_followed(topo: PolicyTopology, dp: PolicyDataplane) -> None:
    dp.set_policies([ALLOW_FROM_XB])
    first = column(topo, expect=oracle_column(topo, [ALLOW_FROM_XB]))
    assert first == oracle_column(topo, [ALLOW_FROM_XB])
    assert [s for s, ok in first.items() if ok] == ["x/a", "x/b"]

    dp.set_policies([ALLOW_FROM_Y])  # same policy (x/p), new rule: y/* instead of x/b
    flush_conntrack(topo.node)
    second = column(topo, expect=oracle_column(topo, [ALLOW_FROM_Y]))
    assert second == oracle_column(topo, [ALLOW_FROM_Y])
    assert [s for s, ok in second.items() if ok] == ["x/a", "y/a", "y/b", "y/c"]

    changes = dp.set_policies([])  # delete: x/a is no longer isolated
    assert changes.removed_chains, "deleting the only policy removes its chain"
    flush_conntrack(topo.node)
    assert all(column(topo).values())


def _open(topo: PolicyTopology, src: str, dst: str) -> socket.socket:
    s = socket_in(topo.pods[src].path, socket.SOCK_STREAM)
    s.settimeout(2.0)
    s.connect((topo.ips[dst], 80))
    return s


def _echo(s: socket.socket, text: bytes) -> bool:
    try:
        s.sendall(text)
        return s.recv(64) == text
    except OSError:
        return False


def test_established_tcp_survives_policy_changes(topo: PolicyTopology, dp: PolicyDataplane) -> None:
    dp.set_policies([ALLOW_FROM_XB])
    with _open(topo, "x/b", "x/a") as conn:
        assert _echo(conn, b"before")
        # unrelated: deny all ingress in z, and x/a's own policy gains a rule (its chain is rewritten)
        deny_z = knp("deny", "z", types=["Ingress"])
        wider = knp("p", "x", A, ingress=[{"from": [peer({"pod": "b"})]}, {"from": [peer(ns={"ns": "y"})]}])
        changes = dp.set_policies([wider, deny_z])
        assert any("knp/x/p" in name for _, name in changes.chains), "x/a's policy chain was rewritten"
        assert _echo(conn, b"after unrelated change")
        assert not probe(topo.pods["y/a"].path, topo.ips["z/a"], TCP80, 0.6)  # the new policy is live
        # even a change that denies new flows from x/b keeps the established one (conntrack first)
        dp.set_policies([knp("deny", "x", types=["Ingress"])])
        assert _echo(conn, b"after deny")
        assert not probe(topo.pods["x/b"].path, topo.ips["x/a"], TCP80, 0.6)


def _add_pod(topo: PolicyTopology, pod: Netns, key: str, ip: str) -> Endpoint:
    """Wire a tenth pod into the running node: veth, /32 route (protocol 80), responder."""
    iface = veth_name_for_workload(*key.split("/"))
    links = WorkloadLinks(host_netns=topo.node.name)
    links.create(VethSpec(host_ifname=iface, netns=pod.path, addresses=(ip,)))
    topo.node.run("ip", "route", "add", f"{ip}/32", "dev", iface, "scope", "link", "proto", "80")
    topo.responders.append(start_responder(pod, 300))
    wait_ready(topo.responders[-1])
    ns, name = key.split("/")
    return Endpoint(key=key, namespace=ns, labels={"pod": name}, ips=(ip,), iface=iface, node=NODE,
                    profiles=("kns." + ns,))


def _reach(topo: PolicyTopology, pod: Netns, ip: str, timeout: float = 0.6) -> tuple[bool, bool]:
    """(new pod -> x/a, x/a -> new pod) on TCP/80, as new flows."""
    out = probe(pod.path, topo.ips["x/a"], TCP80, timeout)
    back = probe(topo.pods["x/a"].path, ip, TCP80, timeout)
    return out, back


def _isolation_drops(topo: PolicyTopology, chain: str) -> int:
    out = topo.node.run("iptables-legacy", "-t", "filter", "-L", chain, "-v", "-x", "-n")
    return sum(int(line.split()[0]) for line in out.splitlines() if "Isolated until" in line)


def test_new_endpoint_is_isolated_until_its_chains_are_written(
    topo: PolicyTopology, dp: PolicyDataplane, netns: Callable[..., Netns]
) -> None:
    key, ip = "x/d", "10.8.0.4"
    pod = netns("xd")
    ep = _add_pod(topo, pod, key, ip)
    assert ep.iface is not None
    assert _reach(topo, pod, ip) == (False, False), "unknown cali interface: dispatch drops"
    # the agent's first write for a new endpoint: isolated tw/fw chains, and dispatch to them
    ifaces = [e.iface for e in topo.endpoints if e.iface] + [ep.iface]
    for chain in (*isolated_endpoint_chains(ep.iface), *dispatch_tree(ifaces)):
        dp.iptables.update_chain(chain)
    dp.iptables.apply()
    assert _reach(topo, pod, ip) == (False, False), "isolated: no new flow either way"
    assert _isolation_drops(topo, f"cali-fw-{ep.iface}") > 0, "its outgoing SYN died in the isolated chain"
    assert _isolation_drops(topo, f"cali-tw-{ep.iface}") > 0, "x/a's SYN to it too"
    try:
        dp.compiler.update_endpoint(ep)  # its real chains (no policy: the namespace profile allows)
        changes = dp.apply()
        assert {f"cali-tw-{ep.iface}", f"cali-fw-{ep.iface}"} <= {n for _, n in changes.chains}
        assert _reach(topo, pod, ip, timeout=2.0) == (True, True)  # allowed: a slow reply still counts
    finally:
        dp.compiler.remove_endpoint(key)
        dp.apply()
    flush_conntrack(topo.node)
    assert _reach(topo, pod, ip) == (False, False), "endpoint removed: dispatch drops again"


def _save(topo: PolicyTopology) -> str:
    return topo.node.run(tool("legacy", "save"), "-t", "filter")


def test_drift_is_repaired_by_resync(topo: PolicyTopology, dp: PolicyDataplane) -> None:
    dp.set_policies([ALLOW_FROM_XB])
    want = oracle_column(topo, [ALLOW_FROM_XB])
    assert column(topo, expect=want) == want
    # someone deletes our FORWARD hook by hand: x/a is open to all
    topo.node.run("iptables-legacy", "-D", "FORWARD", "1")
    flush_conntrack(topo.node)
    assert all(column(topo).values())
    dp.iptables.resync()
    flush_conntrack(topo.node)
    assert column(topo, expect=want) == want
    # someone empties the ipset behind "pod == b in x": x/b loses access
    name = next(n for n, s in dp.compiler.ipsets().items() if topo.ips["x/b"] in s.members)
    topo.node.run("ipset", "flush", name)
    flush_conntrack(topo.node)
    assert not column(topo, expect=want)["x/b"]
    dp.ipsets.resync()
    flush_conntrack(topo.node)
    assert column(topo, expect=want) == want
    assert "cali-FORWARD" in _save(topo)
