"""Calc state sequences: datastore states in, the expected NodeState after each.

Each scenario is replayed forward, reversed, split (flush after every single update),
squashed (from empty straight to each state) and with updates inside a transition
reversed; the recorder that applies the emitted deltas must always equal the expectation.
"""

from __future__ import annotations

import itertools

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.updates import VXLAN_DEVICE, Encap, NodeState, Route, Vtep
from felixpy.calc.vxlan import vtep_mac
from felixpy.resources import IPPool, Node, WorkloadEndpoint
from policy.entities import Endpoint
from tests.fixtures.calc_recorder import RecordingDataplane

ME = "node1"


def wep(
    name: str, ip: str, *, node: str = ME, iface: str | None = None, ns: str = "default"
) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {
                "node": node,
                "pod": name,
                "interfaceName": iface or f"cali{name}",
                "ipNetworks": [f"{ip}/32"],
                "profiles": [f"kns.{ns}"],
            },
        }
    )


def wep_ds(name: str, *ips: str) -> WorkloadEndpoint:
    """A local endpoint with several addresses (dual-stack or IPv6-only), as the CNI writes them."""
    nets = [f"{ip}/{128 if ':' in ip else 32}" for ip in ips]
    doc = wep(name, "10.0.0.0").to_dict()
    doc["spec"]["ipNetworks"] = nets
    return WorkloadEndpoint.model_validate(doc)


def ep_ds(name: str, *ips: str) -> Endpoint:
    return Endpoint(
        f"default/{name}",
        "default",
        iface=f"cali{name}",
        ips=ips,
        labels={"app": name},
        node=ME,
        profiles=("kns.default",),
        pod=name,
    )


def local6(name: str, ip: str) -> Route:
    return Route(f"{ip}/128", "local", iface=f"cali{name}", reason=f"workload default/{name}")


def node(name: str, ip: str, *, vxlan: str | None = None) -> Node:
    spec: dict = {"bgp": {"ipv4Address": ip}}
    if vxlan:
        spec["ipv4VXLANTunnelAddr"] = vxlan
    return Node.model_validate({"metadata": {"name": name}, "spec": spec})


def pool(cidr: str, vxlan: str = "Never", name: str = "default-pool") -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, "vxlanMode": vxlan}})


def ep(name: str, ip: str, ns: str = "default") -> Endpoint:
    return Endpoint(
        key=f"{ns}/{name}",
        namespace=ns,
        iface=f"cali{name}",
        ips=(ip,),
        labels={"app": name},
        node=ME,
        profiles=(f"kns.{ns}",),
        pod=name,
    )


def local_route(name: str, ip: str, ns: str = "default") -> Route:
    return Route(f"{ip}/32", "local", iface=f"cali{name}", reason=f"workload {ns}/{name}")


def key_of(obj) -> tuple:
    return (obj.KIND, obj.metadata.namespace or "", obj.name)


def state(*objs, blocks: dict[str, str] | None = None) -> dict:
    out: dict = {key_of(o): o for o in objs}
    for cidr, owner in (blocks or {}).items():
        out[("block", "", cidr)] = owner
    return out


def feed(graph: CalcGraph, key: tuple, value) -> None:
    kind, ns, name = key
    if kind == "block":
        graph.on_block(name, value)
    else:
        graph.on_resource(kind, (ns, name), value)


def transition(old: dict, new: dict) -> list[tuple[tuple, object]]:
    ups = [(k, None) for k in old if k not in new]
    ups += [(k, v) for k, v in new.items() if old.get(k) is not v]
    return ups


N2_MAC = vtep_mac("node2")
ME_NODE = node(ME, "10.0.0.1/24", vxlan="192.168.0.1")
VX_POOL = pool("192.168.0.0/16", vxlan="Always")
VX_ENCAP = Encap(vxlan=True, vxlan_tunnel_addr="192.168.0.1", vxlan_mac=vtep_mac(ME), node_ip="10.0.0.1/24")
N2 = node("node2", "10.0.1.2/24", vxlan="192.168.1.1")
N2_VTEP = Vtep("node2", "192.168.1.1", N2_MAC, "10.0.1.2")
N2_ROUTE = Route(
    "192.168.1.0/26",
    "vxlan",
    iface=VXLAN_DEVICE,
    gateway="192.168.1.1",
    onlink=True,
    reason="block of node2 (vxlan pool 192.168.0.0/16)",
)
BH = Route("192.168.0.0/26", "blackhole", reason="local IPAM block")
BLOCKS = {"192.168.0.0/26": ME, "192.168.1.0/26": "node2"}
NO_POOL_ENCAP = Encap(vxlan_mac=vtep_mac(ME))

BH4 = Route("10.1.0.0/26", "blackhole", reason="local IPAM block")
BH6 = Route("fd00:10::/122", "blackhole", reason="local IPAM block")
DS_BLOCKS = {"10.1.0.0/26": ME, "fd00:10::/122": ME, "fd00:10::40/122": "node2"}
DS_LOCAL = frozenset({"10.1.0.0/26", "fd00:10::/122"})

SCENARIOS = {
    "dual stack": [
        (
            state(wep_ds("a", "10.1.0.1", "fd00:10::1"), blocks=DS_BLOCKS),
            NodeState(
                endpoints={("default", "a"): ep_ds("a", "10.1.0.1", "fd00:10::1")},
                routes={
                    "10.1.0.1/32": local_route("a", "10.1.0.1"),
                    "fd00:10::1/128": local6("a", "fd00:10::1"),
                    "10.1.0.0/26": BH4,
                    "fd00:10::/122": BH6,
                },
                local_blocks=DS_LOCAL,
            ),
        ),
        (
            state(wep_ds("a", "10.1.0.1", "fd00:10::2"), wep_ds("b", "fd00:10::3"), blocks=DS_BLOCKS),
            NodeState(
                endpoints={
                    ("default", "a"): ep_ds("a", "10.1.0.1", "fd00:10::2"),
                    ("default", "b"): ep_ds("b", "fd00:10::3"),
                },
                routes={
                    "10.1.0.1/32": local_route("a", "10.1.0.1"),
                    "fd00:10::2/128": local6("a", "fd00:10::2"),
                    "fd00:10::3/128": local6("b", "fd00:10::3"),
                    "10.1.0.0/26": BH4,
                    "fd00:10::/122": BH6,
                },
                local_blocks=DS_LOCAL,
            ),
        ),
        (
            state(wep_ds("b", "fd00:10::3"), blocks={"fd00:10::40/122": "node2"}),
            NodeState(
                endpoints={("default", "b"): ep_ds("b", "fd00:10::3")},
                routes={"fd00:10::3/128": local6("b", "fd00:10::3")},
            ),
        ),
        (state(), NodeState()),
    ],
    "local endpoints": [
        (state(), NodeState(encap=Encap())),
        (
            state(wep("a", "10.1.0.1")),
            NodeState(
                endpoints={("default", "a"): ep("a", "10.1.0.1")},
                routes={"10.1.0.1/32": local_route("a", "10.1.0.1")},
            ),
        ),
        (
            state(wep("a", "10.1.0.1"), wep("b", "10.1.0.2"), wep("r", "10.1.0.3", node="node2")),
            NodeState(
                endpoints={("default", "a"): ep("a", "10.1.0.1"), ("default", "b"): ep("b", "10.1.0.2")},
                routes={
                    "10.1.0.1/32": local_route("a", "10.1.0.1"),
                    "10.1.0.2/32": local_route("b", "10.1.0.2"),
                },
            ),
        ),
        (
            state(wep("b", "10.1.0.2")),
            NodeState(
                endpoints={("default", "b"): ep("b", "10.1.0.2")},
                routes={"10.1.0.2/32": local_route("b", "10.1.0.2")},
            ),
        ),
        (
            state(wep("b", "10.1.0.9")),
            NodeState(
                endpoints={("default", "b"): ep("b", "10.1.0.9")},
                routes={"10.1.0.9/32": local_route("b", "10.1.0.9")},
            ),
        ),
    ],
    "vxlan remote blocks": [
        (
            state(ME_NODE, blocks={"192.168.0.0/26": ME}),
            NodeState(
                routes={"192.168.0.0/26": BH},
                encap=Encap(vxlan_tunnel_addr="192.168.0.1", vxlan_mac=vtep_mac(ME), node_ip="10.0.0.1/24"),
                local_blocks=frozenset({"192.168.0.0/26"}),
            ),
        ),
        (
            state(ME_NODE, VX_POOL, N2, blocks=BLOCKS),
            NodeState(
                routes={"192.168.0.0/26": BH, "192.168.1.0/26": N2_ROUTE},
                vteps={"node2": N2_VTEP},
                encap=VX_ENCAP,
                local_blocks=frozenset({"192.168.0.0/26"}),
            ),
        ),
        (
            state(ME_NODE, VX_POOL, node("node2", "10.0.1.2/24"), blocks=BLOCKS),
            NodeState(
                routes={"192.168.0.0/26": BH}, encap=VX_ENCAP, local_blocks=frozenset({"192.168.0.0/26"})
            ),
        ),
        (
            state(
                ME_NODE,
                pool("192.168.0.0/16", vxlan="CrossSubnet"),
                node("node2", "10.0.0.2/24", vxlan="192.168.1.1"),
                blocks=BLOCKS,
            ),
            NodeState(
                routes={
                    "192.168.0.0/26": BH,
                    "192.168.1.0/26": Route(
                        "192.168.1.0/26",
                        "direct",
                        gateway="10.0.0.2",
                        reason="block of node2 (vxlan pool 192.168.0.0/16), same subnet",
                    ),
                },
                vteps={"node2": Vtep("node2", "192.168.1.1", N2_MAC, "10.0.0.2")},
                encap=VX_ENCAP,
                local_blocks=frozenset({"192.168.0.0/26"}),
            ),
        ),
        (
            state(ME_NODE, pool("192.168.0.0/16"), N2, blocks=BLOCKS),
            NodeState(
                routes={"192.168.0.0/26": BH},
                encap=Encap(vxlan_tunnel_addr="192.168.0.1", vxlan_mac=vtep_mac(ME), node_ip="10.0.0.1/24"),
                local_blocks=frozenset({"192.168.0.0/26"}),
            ),
        ),
    ],
}


def _check(graph: CalcGraph, rec: RecordingDataplane, expected: NodeState) -> None:
    rec.apply(graph.flush())
    got = rec.state()
    assert got == graph.state()
    assert got.endpoints == expected.endpoints
    assert got.routes == expected.routes
    assert got.vteps == expected.vteps
    assert got.local_blocks == expected.local_blocks
    if expected.encap != Encap():
        assert got.encap == expected.encap
    else:
        assert (got.encap.ipip, got.encap.vxlan) == (False, False)


def _orders(steps):
    yield "forward", steps, False, False
    yield "reversed", list(reversed(steps)), False, False
    yield "split", steps, True, False
    yield "inner-reversed", steps, False, True


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("order", ["forward", "reversed", "split", "inner-reversed"])
def test_state_sequence(scenario: str, order: str) -> None:
    steps = dict((o[0], o) for o in _orders(SCENARIOS[scenario]))[order][1]
    split = order == "split"
    inner_rev = order == "inner-reversed"
    graph, rec, current = CalcGraph(ME), RecordingDataplane(), state()
    for desired, expected in steps:
        ups = transition(current, desired)
        if inner_rev:
            ups.reverse()
        for k, v in ups:
            feed(graph, k, v)
            if split:
                rec.apply(graph.flush())
        _check(graph, rec, expected)
        current = desired


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_squashed(scenario: str) -> None:
    for desired, expected in SCENARIOS[scenario]:
        graph, rec = CalcGraph(ME), RecordingDataplane()
        for k, v in transition(state(), desired):
            feed(graph, k, v)
        _check(graph, rec, expected)


def test_all_pairs_of_states_converge() -> None:
    for scenario in SCENARIOS.values():
        for (a, _), (b, exp_b) in itertools.permutations(scenario, 2):
            graph, rec = CalcGraph(ME), RecordingDataplane()
            for k, v in transition(state(), a):
                feed(graph, k, v)
            rec.apply(graph.flush())
            for k, v in transition(a, b):
                feed(graph, k, v)
            _check(graph, rec, exp_b)


def test_flush_coalesces_and_is_quiet_when_nothing_changed() -> None:
    graph = CalcGraph(ME)
    for i in range(5):
        graph.on_resource("WorkloadEndpoint", ("default", "a"), wep("a", f"10.1.0.{i + 1}"))
    ups = graph.flush()
    routes = [u for u in ups if type(u).__name__ == "RouteUpdate"]
    assert [u.dst for u in routes if u.route is not None] == ["10.1.0.5/32"]
    graph.on_resource("WorkloadEndpoint", ("default", "a"), wep("a", "10.1.0.5"))
    assert [u for u in graph.flush() if type(u).__name__ in ("RouteUpdate", "EndpointUpdate")] == []


def test_duplicate_ip_keeps_route_until_last_owner_goes() -> None:
    graph, rec = CalcGraph(ME), RecordingDataplane()
    graph.on_resource("WorkloadEndpoint", ("default", "a"), wep("a", "10.1.0.1"))
    graph.on_resource("WorkloadEndpoint", ("default", "b"), wep("b", "10.1.0.1"))
    graph.on_resource("WorkloadEndpoint", ("default", "a"), None)
    rec.apply(graph.flush())
    assert rec.routes["10.1.0.1/32"].iface == "calib"


def test_vtep_mac_derivation() -> None:
    mac = vtep_mac("node1")
    assert mac.startswith("66:") and len(mac.split(":")) == 6
    assert vtep_mac("node1", "AA:BB:CC:DD:EE:FF") == "aa:bb:cc:dd:ee:ff"
    assert vtep_mac("node1") != vtep_mac("node2")
