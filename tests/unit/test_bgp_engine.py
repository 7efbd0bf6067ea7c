"""The engine driven by scripted ExaBGP events, with a recording command sink and an in-memory kernel."""

from __future__ import annotations

from bgp import exabgp_api as api
from bgp.engine import Engine
from bgp.fib import Fib, FibRoute, NextHop, Resolver
from bgp.filters import PoolInfo
from bgp.route import PathAttrs, PeerInfo, Route
from bgp.service import build_plan
from bgp.status import format_peers, peer_status
from felixpy.resources.base import ObjectMeta
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec


class MemoryRoutes:
    """A kernel table of our protocol's routes."""

    def __init__(self, initial: dict[str, FibRoute] | None = None) -> None:
        self.table: dict[str, FibRoute] = dict(initial or {})
        self.writes = 0

    def list_routes(self) -> dict[str, FibRoute]:
        return dict(self.table)

    def replace_route(self, route: FibRoute) -> None:
        self.writes += 1
        self.table[route.dst] = route

    def del_route(self, dst: str) -> None:
        self.writes += 1
        self.table.pop(dst, None)


def node(name: str, ip: str) -> Node:
    return Node(metadata=ObjectMeta(name=name), spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address=f"{ip}/24")))


NODES = [node("a", "10.0.0.1"), node("b", "10.0.0.2"), node("c", "10.0.1.3")]
POOLS = [
    IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16", ipip_mode="CrossSubnet")),
    IPPool(metadata=ObjectMeta(name="vx"), spec=IPPoolSpec(cidr="10.70.0.0/16", vxlan_mode="Always")),
]


def plan(blocks: list[str]):
    return build_plan("a", nodes=NODES, bgp_configs=[], peers=[], pools=POOLS, local_blocks=blocks).desired


def announce(peer: str, *prefixes: str, nh: str | None = None) -> api.Update:
    return api.Update(peer, 64512, PathAttrs(), tuple(api.Announce(p, nh or peer) for p in prefixes))


def make(initial: dict[str, FibRoute] | None = None) -> tuple[Engine, list[str], MemoryRoutes]:
    sent: list[str] = []
    kernel = MemoryRoutes(initial)
    fib = Fib(kernel)
    engine = Engine(sent.extend, fib, now=0.0, wall=lambda: 1000.0)
    fib.resync()
    return engine, sent, kernel


def bring_up(engine: Engine, peer: str, gr: int | None = 120) -> None:
    engine.handle(api.Open(peer, peer, 64512, gr), 0)
    engine.handle(api.StateChange(peer, "up"), 0)


def test_announces_after_hello_and_eor_after_up() -> None:
    engine, sent, _ = make()
    engine.configure(plan(["10.65.0.0/26"]))
    assert sent == []  # nothing before the bridge is there
    engine.handle(api.BridgeNote(0), 0)
    assert sorted(sent) == [
        "neighbor 10.0.0.2 announce attributes next-hop self origin igp nlri 10.65.0.0/26",
        "neighbor 10.0.1.3 announce attributes next-hop self origin igp nlri 10.65.0.0/26",
    ]
    sent.clear()
    bring_up(engine, "10.0.0.2")
    assert sent == ["neighbor 10.0.0.2 announce eor ipv4 unicast"]
    sent.clear()
    engine.configure(plan([]))
    assert sorted(sent) == [
        "neighbor 10.0.0.2 withdraw attributes next-hop 0.0.0.0 nlri 10.65.0.0/26",
        "neighbor 10.0.1.3 withdraw attributes next-hop 0.0.0.0 nlri 10.65.0.0/26",
    ]


def test_installs_direct_tunnel_and_skips_vxlan() -> None:
    engine, _, kernel = make()
    engine.configure(plan([]))
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, "10.0.0.2")
    bring_up(engine, "10.0.1.3")
    engine.handle(announce("10.0.0.2", "10.65.2.0/26", "10.70.0.0/26", "192.168.1.0/24"), 0)
    engine.handle(announce("10.0.1.3", "10.65.3.0/26"), 0)
    engine.flush()
    assert kernel.table == {
        "10.65.2.0/26": FibRoute("10.65.2.0/26", (NextHop("10.0.0.2"),)),  # same subnet: direct
        "10.65.3.0/26": FibRoute("10.65.3.0/26", (NextHop("10.0.1.3", "tunl0", True),)),  # across: IPIP
    }
    engine.handle(api.Update("10.0.0.2", 64512, PathAttrs(), (), ("10.65.2.0/26",)), 0)
    engine.flush()
    assert list(kernel.table) == ["10.65.3.0/26"]


def test_graceful_restart_keeps_stale_routes_until_eor_or_timeout() -> None:
    engine, _, kernel = make()
    engine.configure(plan([]))
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, "10.0.0.2", gr=60)
    engine.handle(announce("10.0.0.2", "10.65.2.0/26", "10.65.4.0/26"), 0)
    engine.flush()
    engine.handle(api.StateChange("10.0.0.2", "down", "closing"), 10)
    engine.flush()
    assert sorted(kernel.table) == ["10.65.2.0/26", "10.65.4.0/26"]  # kept while the peer restarts
    bring_up(engine, "10.0.0.2", gr=60)
    engine.handle(announce("10.0.0.2", "10.65.2.0/26"), 11)
    engine.handle(api.EndOfRib("10.0.0.2", "ipv4 unicast"), 11)
    engine.flush()
    assert sorted(kernel.table) == ["10.65.2.0/26"]  # the one not re-sent is gone at End-of-RIB
    engine.handle(api.StateChange("10.0.0.2", "down"), 20)
    engine.tick(79)
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]
    engine.tick(81)
    engine.flush()
    assert kernel.table == {}  # restart time over


def test_no_graceful_restart_means_immediate_withdraw() -> None:
    engine, _, kernel = make()
    engine.configure(plan([]))
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, "10.0.0.2", gr=None)
    engine.handle(announce("10.0.0.2", "10.65.2.0/26"), 0)
    engine.flush()
    engine.handle(api.StateChange("10.0.0.2", "down"), 1)
    engine.flush()
    assert kernel.table == {}


def test_previous_runs_routes_adopted_until_peers_resent_their_tables() -> None:
    old = {"10.65.9.0/26": FibRoute("10.65.9.0/26", (NextHop("10.0.0.2"),))}
    engine, _, kernel = make(old)
    engine.configure(plan([]))
    engine.handle(api.BridgeNote(0), 0)
    engine.flush()
    engine.tick(1)
    assert "10.65.9.0/26" in kernel.table  # not flushed on restart
    bring_up(engine, "10.0.0.2")
    bring_up(engine, "10.0.1.3")
    engine.tick(2)
    # sessions up is not enough (issue 15: their UPDATEs may still be on the way); it used to be
    assert "10.65.9.0/26" in kernel.table
    engine.handle(api.EndOfRib("10.0.0.2", "ipv4 unicast"), 3)
    engine.handle(api.EndOfRib("10.0.1.3", "ipv4 unicast"), 3)
    engine.tick(3)
    assert kernel.table == {}  # every session re-sent its table and nobody re-announced it


def test_routes_refused_then_accepted_when_a_pool_appears() -> None:
    engine, _, kernel = make()
    engine.configure(
        build_plan("a", nodes=NODES, bgp_configs=[], peers=[], pools=[], local_blocks=[]).desired
    )
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, "10.0.0.2")
    engine.handle(announce("10.0.0.2", "10.65.2.0/26"), 0)
    engine.flush()
    assert kernel.table == {}
    engine.configure(plan([]))
    assert list(kernel.table) == ["10.65.2.0/26"]


def test_resolver_ecmp_multipath() -> None:
    resolver = Resolver(pools=(PoolInfo("10.65.0.0/16", ipip_mode="Always"),), local_subnets=("10.0.0.0/24",))
    best = [Route("10.65.2.0/26", nh, PathAttrs(), PeerInfo(nh)) for nh in ("10.0.1.3", "10.0.0.2")]
    assert resolver.resolve("10.65.2.0/26", best) == FibRoute(
        "10.65.2.0/26", (NextHop("10.0.0.2", "tunl0", True), NextHop("10.0.1.3", "tunl0", True))
    )


def test_status_table_shape() -> None:
    rows = [
        peer_status("10.0.0.2", kind="node-to-node mesh", name="Mesh_10_0_0_2", exa_state="up", since=0),
        peer_status("10.0.0.3", kind="global", name="Global_10_0_0_3", exa_state="down", since=0),
    ]
    assert format_peers(rows) == "\n".join(
        [
            "+--------------+-------------------+-------+-------+-------------+",
            "| PEER ADDRESS | PEER TYPE         | STATE | SINCE | INFO        |",
            "+--------------+-------------------+-------+-------+-------------+",
            "| 10.0.0.2     | node-to-node mesh | up    |       | Established |",
            "| 10.0.0.3     | global            | start |       | Active      |",
            "+--------------+-------------------+-------+-------+-------------+",
        ]
    )
    assert format_peers(rows, family=6) == "No IPv6 peers found."
