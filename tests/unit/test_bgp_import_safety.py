"""Issue 12: no BGP peer can take a node's own pods; receive limits; no graceful restart after a
NOTIFICATION. The import policy as a table, the engine driven with ExaBGP's events, the FIB against an
in-memory kernel that keeps routes per (destination, protocol) as the real one does per metric."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bgp import exabgp_api as api
from bgp.engine import Engine
from bgp.fib import Fib, FibRoute
from bgp.filters import ImportPolicy, PoolInfo, import_reason, reason_kind
from bgp.metrics import BGPCollector
from bgp.route import PathAttrs, PeerInfo, Route
from bgp.service import borrowed_addresses, build_plan
from bgp.status import PeerStatus
from bgp.topology import compute_peers
from felixpy.resources import ResourceError
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec
from felixpy.resources.parse import parse_document

ME, B, TOR = "10.0.0.1", "10.0.0.2", "10.0.0.9"
POOL = PoolInfo("10.65.0.0/16")  # /26 blocks
OWN = frozenset({"10.65.1.0/26"})
POLICY = ImportPolicy(
    (POOL, PoolInfo("fd00:65::/48")),
    OWN,
    local_as=64512,
    router_id=ME,
    local_workloads=frozenset({"10.65.9.7/32"}),  # a pod of ours on an address borrowed from b's block
    borrowed={"10.65.1.9/32": "b", "10.65.9.7/32": "a", "10.65.5.3/32": "b"},
    node_addresses={ME: "a", B: "b"},
)


def route(prefix: str, hop: str = TOR, **attrs: Any) -> Route:
    return Route(prefix, hop, PathAttrs(**attrs), PeerInfo(hop))


@pytest.mark.parametrize(
    ("prefix", "hop", "peer_node", "kind"),
    [
        ("10.65.1.5/32", TOR, None, "inside own block"),  # a local pod's /32 (the issue's blackhole)
        ("10.65.1.5/32", B, "b", "inside own block"),  # from a node too: not a borrowed address
        ("10.65.1.0/26", TOR, None, "own block"),
        ("10.65.1.0/27", TOR, None, "inside own block"),
        ("10.65.0.0/23", TOR, None, "covers own block"),
        ("10.65.0.0/17", TOR, None, "covers local workload"),
        ("10.65.0.0/16", TOR, None, "covers IP pool"),  # the whole pool
        ("10.0.0.0/8", TOR, None, "covers IP pool"),
        ("10.65.9.7/32", TOR, None, "local workload"),  # our pod on a borrowed address
        ("10.65.9.7/32", B, "b", "local workload"),
        ("10.65.9.0/26", TOR, None, "covers local workload"),  # b's block holding our borrowed pod
        ("10.65.8.0/23", TOR, None, "covers local workload"),
        ("10.65.4.5/32", TOR, None, "longer than block size"),  # a neighbour node's pod /32
        ("10.65.4.0/28", B, "b", "longer than block size"),
        ("10.65.5.3/32", TOR, None, "borrowed by another node"),  # b's borrowed /32 from the ToR
        ("fd00:65::1:5/128", TOR, None, "longer than block size"),
        ("10.65.5.3/32", B, "b", None),  # b's borrowed /32 from b
        ("10.65.5.3/32", B, None, None),  # ... or with b as next hop (a ToR that kept the next hop)
        ("10.65.1.9/32", B, "b", None),  # b's pod on an address of OUR block
        ("10.65.128.0/17", TOR, None, None),  # an aggregate that covers nothing of ours
        ("10.65.4.0/26", B, "b", None),
        ("fd00:65::/122", TOR, None, None),
    ],
)
def test_import_protects_own_blocks_and_workloads(
    prefix: str, hop: str, peer_node: str | None, kind: str | None
) -> None:
    reason = import_reason(route(prefix, hop), POLICY, peer_node=peer_node)
    assert (reason_kind(reason) if reason else None) == kind, reason


def test_reflected_borrowed_route_is_accepted_by_its_originator() -> None:
    reflected = route("10.65.5.3/32", "10.0.0.7", originator_id=B)
    assert import_reason(reflected, POLICY, peer_node="rr") is None
    assert reason_kind(import_reason(route("10.65.5.3/32", "10.0.0.7"), POLICY, peer_node="rr") or "") == (
        "borrowed by another node"
    )


def test_default_route_only_when_configured() -> None:
    assert import_reason(route("0.0.0.0/0"), POLICY) == "default route"
    allowed = ImportPolicy(POLICY.pools, OWN, import_default=True)
    assert import_reason(route("0.0.0.0/0"), allowed) is None


def test_as_path_length_limit_default_and_per_session() -> None:
    ok = route("10.65.4.0/26", as_path=tuple(range(65001, 65001 + 64)))
    long = route("10.65.4.0/26", as_path=tuple(range(65001, 65001 + 65)))
    assert import_reason(ok, POLICY) is None
    assert import_reason(long, POLICY) == "AS path too long: 65 > 64"
    assert import_reason(long, POLICY, max_as_path=100) is None
    assert import_reason(ok, POLICY, max_as_path=3) == "AS path too long: 64 > 3"


# --- datastore → policy ------------------------------------------------------------------------
def node(name: str, ip: str) -> Node:
    return Node(metadata=ObjectMeta(name=name), spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address=f"{ip}/24")))


NODES = [node("a", ME), node("b", B)]
POOLS = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16"))]
BLOCKS = [("10.65.1.0/26", "a"), ("10.65.4.0/26", "b"), ("10.65.9.0/26", "b")]
WORKLOADS = [("a", "10.65.1.5"), ("a", "10.65.9.7"), ("b", "10.65.4.5"), ("b", "10.65.1.9")]


def test_borrowed_addresses_from_workloads_and_affinities() -> None:
    assert borrowed_addresses(WORKLOADS, BLOCKS) == {"10.65.9.7/32": "a", "10.65.1.9/32": "b"}


def test_plan_protects_and_exports_our_borrowed_address() -> None:
    plan = build_plan(
        "a", nodes=NODES, bgp_configs=[], peers=[], pools=POOLS, local_blocks=["10.65.1.0/26"],
        workloads=WORKLOADS, all_blocks=BLOCKS,
    ).desired  # fmt: skip
    policy = plan.import_policy
    assert policy.local_workloads == {"10.65.9.7/32"}
    assert policy.node_addresses[B] == "b"
    assert sorted(plan.exports) == ["10.65.1.0/26", "10.65.9.7/32"]  # block + our borrowed /32
    assert import_reason(route("10.65.1.9/32", B), policy, peer_node="b") is None
    assert import_reason(route("10.65.9.7/32", B), policy, peer_node="b") == "local workload: 10.65.9.7/32"


# --- receive limits: topology ------------------------------------------------------------------
def config(**spec: Any) -> BGPConfiguration:
    return BGPConfiguration(metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(**spec))


def peer(name: str, **spec: Any) -> BGPPeer:
    return BGPPeer(metadata=ObjectMeta(name=name), spec=BGPPeerSpec(**spec))


def test_limits_default_for_nodes_none_for_others_and_overridable() -> None:
    tor = peer("tor", peerIP=TOR, asNumber=65001)
    capped = peer("capped", peerIP="10.0.0.8", asNumber=65001, maxPrefixes=50, maxPrefixesAction="Block")
    sessions = {s.address: s for s in compute_peers("a", NODES, [], [tor, capped])}
    assert (sessions[B].max_prefixes, sessions[B].max_prefixes_action) == (10_000, "Restart")  # mesh
    assert sessions[TOR].max_prefixes == 0  # an external peer without maxPrefixes: no limit
    assert (sessions["10.0.0.8"].max_prefixes, sessions["10.0.0.8"].max_prefixes_action) == (50, "Block")
    custom = config(nodePeerMaxPrefixes=500, nodePeerMaxPrefixesAction="Warn", maxASPathLength=10)
    sessions = {s.address: s for s in compute_peers("a", NODES, [custom], [tor])}
    assert (sessions[B].max_prefixes, sessions[B].max_prefixes_action) == (500, "Warn")
    plan = build_plan("a", nodes=NODES, bgp_configs=[custom], peers=[], pools=POOLS, local_blocks=[])
    assert plan.desired.import_policy.max_as_path == 10


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("BGPPeer", {"peerIP": TOR, "asNumber": 1, "maxPrefixes": -1}, "spec.maxPrefixes"),
        ("BGPPeer", {"peerIP": TOR, "asNumber": 1, "maxPrefixes": "many"}, "spec.maxPrefixes"),
        ("BGPPeer", {"peerIP": TOR, "asNumber": 1, "maxPrefixesAction": "Drop"}, "spec.maxPrefixesAction"),
        ("BGPPeer", {"peerIP": TOR, "asNumber": 1, "maxASPathLength": 0}, "spec.maxASPathLength"),
        ("BGPConfiguration", {"nodePeerMaxPrefixes": -5}, "spec.nodePeerMaxPrefixes"),
        ("BGPConfiguration", {"nodePeerMaxPrefixesAction": "warn"}, "spec.nodePeerMaxPrefixesAction"),
        ("BGPConfiguration", {"maxASPathLength": 5000}, "spec.maxASPathLength"),
    ],
)
def test_new_fields_validated_by_name(kind: str, spec: dict[str, Any], field: str) -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": "default"}, "spec": spec}
    with pytest.raises(ResourceError) as info:
        parse_document(doc)
    assert info.value.field == field, str(info.value)
    assert "\n" not in str(info.value)


# --- the engine -------------------------------------------------------------------------------
class Kernel:
    """Routes by (destination, protocol): 80 = the dataplane's, 81 = BGP's (the real kernel keeps
    them apart by metric). ``owned_elsewhere`` as bgp.fib_netlink's."""

    def __init__(self, dataplane: set[str] | None = None) -> None:
        self.dataplane = set(dataplane or ())
        self.table: dict[str, FibRoute] = {}
        self.written: list[str] = []

    def list_routes(self) -> dict[str, FibRoute]:
        return dict(self.table)

    def replace_route(self, route: FibRoute) -> None:
        self.written.append(route.dst)
        self.table[route.dst] = route

    def del_route(self, dst: str) -> None:
        self.table.pop(dst, None)

    def owned_elsewhere(self, dsts: list[str]) -> set[str]:
        return self.dataplane.intersection(dsts)


def engine_with(
    peers: Sequence[BGPPeer] = (), configs: Sequence[BGPConfiguration] = (), kernel: Kernel | None = None
) -> tuple[Engine, list[str], Kernel]:
    sent: list[str] = []
    kernel = kernel or Kernel()
    engine = Engine(sent.extend, Fib(kernel), now=0.0, wall=lambda: 1000.0)
    engine.fib.resync()  # type: ignore[union-attr]
    plan = build_plan(
        "a", nodes=NODES, bgp_configs=list(configs), peers=list(peers), pools=POOLS,
        local_blocks=["10.65.1.0/26"], workloads=WORKLOADS, all_blocks=BLOCKS,
    ).desired  # fmt: skip
    engine.configure(plan)
    engine.handle(api.BridgeNote(0), 0)
    for address in [s.address for s in plan.peers]:
        engine.handle(api.Open(address, address, 64512, 120), 0)
        engine.handle(api.StateChange(address, "up"), 0)
    sent.clear()
    return engine, sent, kernel


def announce(peer_ip: str, *prefixes: str, hop: str | None = None, asn: int = 64512) -> api.Update:
    path = () if asn == 64512 else (asn,)
    return api.Update(
        peer_ip, asn, PathAttrs(as_path=path), tuple(api.Announce(p, hop or peer_ip) for p in prefixes)
    )


def tor_peer(**spec: Any) -> BGPPeer:
    return peer("tor", peerIP=TOR, asNumber=65001, **spec)


def test_engine_refuses_counts_and_logs_the_issue_routes(caplog: pytest.LogCaptureFixture) -> None:
    engine, _, kernel = engine_with([tor_peer()])
    hostile = ("10.65.1.5/32", "10.65.0.0/16", "10.65.0.0/23", "10.65.4.5/32", "10.65.9.7/32")
    with caplog.at_level(logging.WARNING, logger="bgp.engine"):
        engine.handle(announce(TOR, *hostile, "10.65.12.0/26", asn=65001), 0)
        engine.flush()
    assert list(kernel.table) == ["10.65.12.0/26"]
    refused = {k[2]: v for k, v in engine.counters.items() if k[0] == "refused" and k[1] == TOR}
    assert refused == {
        "inside own block": 1,
        "covers IP pool": 1,
        "covers own block": 1,
        "longer than block size": 1,
        "local workload": 1,
    }
    line = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert TOR in line and "10.65.1.5/32 (inside own block" in line


def test_fib_ownership_holds_when_the_filter_is_bypassed() -> None:
    kernel = Kernel(dataplane={"10.65.1.5/32"})
    engine, _, _ = engine_with(kernel=kernel)
    fib = engine.fib
    assert fib is not None
    fib.stage("10.65.1.5/32", [route("10.65.1.5/32", B)])  # straight into the FIB, no filter
    fib.stage("10.65.4.0/26", [route("10.65.4.0/26", B)])
    fib.apply()
    assert kernel.written == ["10.65.4.0/26"] and fib.refused_owned == 1
    bulk = [f"10.65.{i}.{j}/32" for i in range(2, 4) for j in range(10)]
    kernel.dataplane.update(bulk)
    for prefix in bulk:  # the batched path too
        fib.stage(prefix, [route(prefix, B)])
    fib.apply()
    assert kernel.written == ["10.65.4.0/26"] and fib.refused_owned == 21


def test_route_installed_before_the_dataplane_took_it_is_withdrawn_from_the_kernel() -> None:
    kernel = Kernel()
    engine, _, _ = engine_with(kernel=kernel)
    fib = engine.fib
    assert fib is not None
    fib.stage("10.65.4.9/32", [route("10.65.4.9/32", B)])
    fib.apply()
    assert "10.65.4.9/32" in kernel.table
    kernel.dataplane.add("10.65.4.9/32")
    fib.resync()
    assert "10.65.4.9/32" not in kernel.table


@pytest.mark.parametrize("reason", ["notification received (6,2)", "notification sent (4,0)"])
def test_no_stale_routes_after_a_notification(reason: str) -> None:
    engine, _, kernel = engine_with()
    engine.handle(announce(B, "10.65.4.0/26"), 0)
    engine.flush()
    engine.handle(api.StateChange(B, "down", reason), 10)
    engine.flush()
    assert kernel.table == {}  # at once, not after the 120 s restart time
    assert engine.counters[("notification_down", B)] == 1


def test_stale_routes_kept_when_the_session_just_closed() -> None:
    engine, _, kernel = engine_with()
    engine.handle(announce(B, "10.65.4.0/26"), 0)
    engine.flush()
    engine.handle(api.StateChange(B, "down", "closing connection"), 10)
    engine.flush()
    assert list(kernel.table) == ["10.65.4.0/26"]


def teardowns(sent: list[str]) -> list[str]:
    return [line for line in sent if "teardown" in line]


def blocks(n: int, start: int = 128) -> list[str]:
    return [f"10.65.{start + i // 4}.{(i % 4) * 64}/26" for i in range(n)]


def test_limit_warn_keeps_everything_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    engine, sent, kernel = engine_with([tor_peer(maxPrefixes=10, maxPrefixesAction="Warn")])
    with caplog.at_level(logging.WARNING, logger="bgp.engine"):
        engine.handle(announce(TOR, *blocks(8), asn=65001), 0)
        engine.handle(announce(TOR, *blocks(8, 140), asn=65001), 0)
        engine.handle(announce(TOR, *blocks(4, 150), asn=65001), 0)
        engine.flush()
    assert len(kernel.table) == 20 and teardowns(sent) == []
    assert engine.counters[("max_prefixes", TOR, "Warn")] == 1
    assert sum("limit of 10 prefixes" in r.getMessage() for r in caplog.records) == 1


def test_limit_block_keeps_the_first_n() -> None:
    engine, sent, kernel = engine_with([tor_peer(maxPrefixes=10, maxPrefixesAction="Block")])
    engine.handle(announce(TOR, *blocks(8), asn=65001), 0)
    engine.handle(announce(TOR, *blocks(8, 140), asn=65001), 0)
    engine.flush()
    assert len(kernel.table) == 10 and teardowns(sent) == []
    assert engine.counters[("refused", TOR, "max prefixes")] == 6
    engine.handle(announce(TOR, *blocks(8), asn=65001), 0)  # re-announcing what it has is fine
    engine.handle(
        api.Update(
            TOR,
            65001,
            PathAttrs(),
            (),
            tuple(blocks(2)),
        ),
        0,
    )  # two withdrawn: room for two
    engine.handle(announce(TOR, *blocks(3, 160), asn=65001), 0)
    engine.flush()
    assert len(kernel.table) == 10


@pytest.mark.parametrize("action", ["Restart", "Disable"])
def test_limit_tears_down_and_removes_at_once(action: str) -> None:
    engine, sent, kernel = engine_with([tor_peer(maxPrefixes=10, maxPrefixesAction=action)])
    engine.handle(announce(TOR, *blocks(8), asn=65001), 0)
    engine.flush()
    assert len(kernel.table) == 8
    engine.handle(announce(TOR, *blocks(8, 140), asn=65001), 0)
    engine.handle(announce(TOR, *blocks(2, 150), asn=65001), 0)  # still in flight: ignored
    engine.flush()
    assert kernel.table == {}
    assert teardowns(sent) == [f"neighbor {TOR} teardown 1"]
    engine.handle(
        api.StateChange(
            TOR, "down", "graceful restarted negotiated, closing without sending any notification"
        ),
        1,
    )
    engine.flush()
    assert kernel.table == {}  # nothing stale comes back
    assert (TOR in engine.disabled) == (action == "Disable")
    assert engine.counters[("max_prefixes", TOR, action)] == 1


def test_disabled_peer_reconnecting_before_exabgp_drops_it_is_still_ignored() -> None:
    engine, sent, kernel = engine_with([tor_peer(maxPrefixes=2, maxPrefixesAction="Disable")])
    engine.handle(announce(TOR, *blocks(3), asn=65001), 0)
    engine.handle(api.StateChange(TOR, "down", "closing connection"), 1)
    sent.clear()
    engine.handle(api.StateChange(TOR, "up"), 2)  # ExaBGP reconnected before its reload removed the peer
    assert sent == [f"neighbor {TOR} teardown 1"]  # closed again at once, nothing announced to it
    engine.handle(announce(TOR, *blocks(2), asn=65001), 2)
    # no NOTIFICATION this time: still nothing kept
    engine.handle(api.StateChange(TOR, "down", "stop, message [removed]"), 3)
    engine.flush()
    assert kernel.table == {}
    status = next(s for s in engine.status() if s.address == TOR)
    assert status.state != "up" and "receive limit" in status.info


def test_disabled_peer_comes_back_when_its_definition_changes() -> None:
    engine, _, _ = engine_with([tor_peer(maxPrefixes=2, maxPrefixesAction="Disable")])
    engine.handle(announce(TOR, *blocks(3), asn=65001), 0)
    assert engine.disabled == {TOR} and engine.disabled_changed
    engine.disabled_changed = False
    redefined = tor_peer(maxPrefixes=5, maxPrefixesAction="Disable")
    plan = build_plan(
        "a", nodes=NODES, bgp_configs=[], peers=[redefined], pools=POOLS, local_blocks=[]
    ).desired
    engine.configure(plan)
    assert engine.disabled == set() and engine.disabled_changed


def test_as_path_limit_in_the_engine() -> None:
    engine, _, kernel = engine_with([tor_peer(maxASPathLength=3)])
    engine.handle(
        api.Update(TOR, 65001, PathAttrs(as_path=(65001, 1, 2, 3)), (api.Announce("10.65.30.0/26", TOR),)), 0
    )
    engine.handle(
        api.Update(TOR, 65001, PathAttrs(as_path=(65001, 1, 2)), (api.Announce("10.65.31.0/26", TOR),)), 0
    )
    engine.flush()
    assert list(kernel.table) == ["10.65.31.0/26"]
    assert engine.counters[("refused", TOR, "AS path too long")] == 1


class _Service:
    def counters(self) -> tuple[dict[tuple[str, ...], int], dict[str, int], int]:
        return (
            {
                ("refused", TOR, "local workload"): 3,
                ("max_prefixes", TOR, "Restart"): 1,
                ("notification_down", B): 2,
                ("command_error", B): 3,
            },
            {TOR: 7},
            4,
        )

    def status(self) -> list[PeerStatus]:
        return [
            PeerStatus(TOR, "global", "up", 1700000000.0, "Established", "tor", 7, routes_accepted=4,
                       routes_rejected={"local workload": 3}, routes_advertised=2, established=1),
            PeerStatus(B, "node-to-node mesh", "start", 1700000001.0, "Active Connect", "", 0),
        ]  # fmt: skip


def test_metrics_exported() -> None:
    registry = CollectorRegistry()
    registry.register(BGPCollector(_Service()))
    text = generate_latest(registry).decode()
    assert f'felixpy_bgp_routes_refused_total{{peer="{TOR}",reason="local workload"}} 3.0' in text
    assert f'felixpy_bgp_max_prefixes_exceeded_total{{action="Restart",peer="{TOR}"}} 1.0' in text
    assert f'felixpy_bgp_notification_closes_total{{peer="{B}"}} 2.0' in text
    assert f'felixpy_bgp_command_errors_total{{peer="{B}"}} 3.0' in text
    assert "felixpy_bgp_fib_refused_total 4.0" in text
    assert f'felixpy_bgp_received_prefixes{{peer="{TOR}"}} 7.0' in text
    # per session, from the service's status
    for line in (
        'felixpy_bgp_sessions{state="Established"} 1.0',
        'felixpy_bgp_sessions{state="Active"} 1.0',
        'felixpy_bgp_sessions{state="Idle"} 0.0',
        f'felixpy_bgp_session_up{{peer="{TOR}"}} 1.0',
        f'felixpy_bgp_session_up{{peer="{B}"}} 0.0',
        f'felixpy_bgp_session_last_change_timestamp_seconds{{peer="{TOR}"}} 1.7e+09',
        f'felixpy_bgp_session_established_total{{peer="{TOR}"}} 1.0',
        f'felixpy_bgp_prefixes_received{{peer="{TOR}"}} 7.0',
        f'felixpy_bgp_prefixes_accepted{{peer="{TOR}"}} 4.0',
        f'felixpy_bgp_prefixes_rejected{{peer="{TOR}",reason="local workload"}} 3.0',
        f'felixpy_bgp_prefixes_advertised{{peer="{TOR}"}} 2.0',
    ):
        assert line in text, line


# --- the agent's sink: workloads reach the BGP service only when they change what is borrowed ------
def test_sink_passes_workloads_only_when_borrowed_addresses_change() -> None:
    from felixpy.calc.graph import CalcGraph
    from felixpy.dataplane.bgp_sink import BGPSink
    from felixpy.resources.endpoint import WorkloadEndpoint

    calls: list[dict[str, Any]] = []

    class Recorder:
        def update(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    def wep(name: str, node_name: str, ip: str) -> WorkloadEndpoint:
        doc = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": f"{node_name}-k8s-{name}-eth0", "namespace": "x"},
            "spec": {
                "node": node_name,
                "pod": name,
                "ipNetworks": [f"{ip}/32"],
                "interfaceName": f"cali{name}",
            },
        }
        obj = parse_document(doc)
        assert isinstance(obj, WorkloadEndpoint)
        return obj

    graph, sink = CalcGraph("a"), BGPSink(Recorder())
    graph.on_block("10.65.1.0/26", "a")
    graph.on_block("10.65.4.0/26", "b")
    sink(graph.flush())
    assert len(calls) == 1
    graph.on_resource("WorkloadEndpoint", ("x", "p1"), wep("p1", "b", "10.65.4.5"))  # in its node's block
    sink(graph.flush())
    assert len(calls) == 1  # nothing the BGP service needs changed
    graph.on_resource("WorkloadEndpoint", ("x", "p2"), wep("p2", "b", "10.65.1.9"))  # borrowed from a's block
    sink(graph.flush())
    assert len(calls) == 2
    assert ("b", "10.65.1.9") in calls[-1]["workloads"]
    assert borrowed_addresses(calls[-1]["workloads"], calls[-1]["all_blocks"]) == {"10.65.1.9/32": "b"}


# --- receive limits, the pure part ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("limit", "action", "over", "kept", "blocked"),
    [
        (0, "Restart", False, ["n1", "n2", "n3", "h1"], 0),  # no limit
        (5, "Restart", False, ["n1", "n2", "n3", "h1"], 0),  # 2 held + 3 new = 5: at the limit is fine
        (4, "Warn", True, ["n1", "n2", "n3", "h1"], 0),
        (4, "Block", True, ["n1", "n2", "h1"], 1),  # room for 2 new; a re-announced one always fits
        (2, "Block", True, ["h1"], 3),
        (4, "Restart", True, None, 0),
        (4, "Disable", True, None, 0),
    ],
)
def test_receive_limit_verdicts(
    limit: int, action: str, over: bool, kept: list[str] | None, blocked: int
) -> None:
    from bgp import limits

    held = {"h1", "h2"}
    verdict = limits.check(limit, action, held, len(held), [("nh", ["n1", "n2"]), ("nh2", ["n3", "h1"])])
    assert verdict.over is over
    assert verdict.blocked == blocked
    got = None if verdict.keep is None else [p for _, prefixes in verdict.keep for p in prefixes]
    assert got == kept


def test_agent_registers_the_bgp_metrics() -> None:
    from felixpy.agent import Agent
    from felixpy.runtime.health import Metrics

    metrics = Metrics()
    parts: dict[str, Any] = dict.fromkeys(
        ("settings", "params", "kv", "backend", "writer", "dataplane", "sources")
    )
    Agent(**parts, metrics=metrics, cni=None, bgp=_Service())
    text = generate_latest(metrics.registry).decode()
    assert f'felixpy_bgp_routes_refused_total{{peer="{TOR}",reason="local workload"}} 3.0' in text
    assert "felixpy_local_endpoints" in text  # beside the agent's own


def test_calc_memoised_borrowed_addresses_agree_with_the_pure_function_over_a_sequence() -> None:
    """BGPInputsCalc memoises each (node, address) answer; after every step (endpoints added,
    moved, removed, blocks re-affined) it must equal ``borrowed_addresses`` over the same state."""
    from types import SimpleNamespace

    from felixpy.calc.bgp_inputs import BGPInputsCalc

    def wep(node_name: str, *ips: str) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(node=node_name, ip_networks=list(ips)))

    calc = BGPInputsCalc()
    steps: list[tuple[str, Any]] = [
        ("blocks", (("10.65.1.0/26", "a"), ("10.65.4.0/26", "b"))),
        ("wep", (("x", "p1"), wep("b", "10.65.4.5/32"))),
        ("wep", (("x", "p2"), wep("b", "10.65.1.9/32"))),
        ("wep", (("x", "p3"), wep("c", "10.66.0.1/32", "fd00::1/128"))),
        ("wep", (("x", "p4"), wep("a", "10.65.1.9/32"))),  # the same address on another node
        ("blocks", (("10.65.1.0/26", "b"), ("10.65.4.0/26", "b"))),  # a's block re-affined to b
        ("wep", (("x", "p2"), None)),
        ("wep", (("x", "p1"), wep("a", "10.65.4.5/32"))),  # moved
        ("blocks", (("10.65.1.0/26", "a"),)),
    ]
    blocks: tuple[tuple[str, str], ...] = ()
    for what, arg in steps:
        if what == "blocks":
            blocks = arg
            calc.on_blocks(frozenset(), blocks)
        else:
            calc.on_resource("WorkloadEndpoint", *arg)
        calc.flush()
        pairs = tuple(pair for pairs in calc._workloads.values() for pair in pairs)
        assert calc._borrowed == borrowed_addresses(pairs, blocks), (what, arg)


def test_reflector_bulk_prefix_reasons_match_one_at_a_time() -> None:
    """A route reflector (no blocks or pods of its own) checks a whole UPDATE in one pass: every
    prefix gets the reason it gets alone, whether in the pool's blocks, the pool itself, a /32,
    a default route, outside the pool, or IPv6 beside an IPv6 pool; with and without service
    ranges (the case the one pass does not take)."""
    from bgp.filters import prefix_reason, prefix_reasons
    from bgp.route import normalize_prefix

    bag = [
        "10.64.0.0/26",
        "10.64.3.64/26",
        "10.64.0.0/10",
        "10.64.0.0/24",
        "10.70.0.5/32",
        "10.127.255.192/26",
        "10.128.0.0/26",
        "0.0.0.0/0",
        "192.168.1.0/24",
        "10.64.0.0/9",
        "fd00:10::/122",
        "fd00:10::40/122",
        "fd00:11::/64",
    ]
    bag = [normalize_prefix(p) for p in bag]
    pools = (PoolInfo("10.64.0.0/10"), PoolInfo("fd00:10::/48"))
    for policy in (
        ImportPolicy(pools=pools),
        ImportPolicy(pools=pools, import_default=True),
        ImportPolicy(pools=pools, service_cidrs=("10.64.3.0/24",)),
        ImportPolicy(pools=pools[:1]),
    ):
        alone = [prefix_reason(p, policy, canonical=True, announcers=("n2",)) for p in bag]
        assert prefix_reasons(bag, policy, announcers=("n2",)) == alone
        assert alone[0] is None and alone[2] is not None  # a block passes, the pool itself does not
