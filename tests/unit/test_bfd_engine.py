"""BFD tied to BGP (pure): which sessions run it, and what a failure does to routes and sessions."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp.bfd_config import BfdSpec, daemon_sessions, resolve
from bgp.bfd_gate import MAX_FACTOR, BfdGate
from bgp.bfd_status import format_bfd
from bgp.service import build_plan
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BFDSettings, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.parse import parse_documents
from tests.unit.test_bgp_engine import NODES, POOLS, announce, bring_up, make

PEER = "10.0.0.2"


def config(**spec: Any) -> BGPConfiguration:
    return BGPConfiguration(metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(**spec))


def external(mode: str | None = None, **bfd: Any) -> BGPPeer:
    spec = BGPPeerSpec(
        peer_ip="192.0.2.1",
        as_number=65000,
        failure_detection_mode=mode,
        bfd=BFDSettings(**bfd) if bfd else None,
    )
    return BGPPeer(metadata=ObjectMeta(name="tor"), spec=spec)


def sessions(configs: list[BGPConfiguration], peers: list[BGPPeer]) -> dict[str, BfdSpec | None]:
    desired = build_plan(
        "a", nodes=NODES, bgp_configs=configs, peers=peers, pools=POOLS, local_blocks=[]
    ).desired
    return {p.address: p.bfd for p in desired.peers}


# ----------------------------------------------------------------------------- which sessions
def test_mesh_on_by_default_at_300ms_x3_external_off_unless_set() -> None:
    got = sessions([], [external()])
    assert got[PEER] == BfdSpec(mode="auto", min_rx=300_000, min_tx=300_000, idle_tx=1_000_000, multiplier=3)
    assert got["192.0.2.1"] is None
    got = sessions([], [external("BFDIfDirectlyConnected", minimumRecvInterval="100ms", multiplier=5)])
    assert got["192.0.2.1"] == BfdSpec(mode="direct", min_rx=100_000, min_tx=300_000, multiplier=5)


def test_bgp_configuration_sets_node_defaults_and_can_turn_the_mesh_off() -> None:
    cfg = config(node_peer_failure_detection_mode="None")
    assert sessions([cfg], [])[PEER] is None
    cfg = config(node_peer_bfd=BFDSettings(minimum_send_interval="50ms", hold_down_time="0s"))
    spec = sessions([cfg], [])[PEER]
    assert spec is not None and spec.min_tx == 50_000 and spec.min_rx == 300_000 and spec.hold_down == 0.0
    # an external peer with BFD asked for takes the node defaults under its own fields
    got = sessions([cfg], [external("BFD", multiplier=4)])["192.0.2.1"]
    assert got is not None and got.min_tx == 50_000 and got.multiplier == 4


def test_route_reflector_sessions_default_on_and_daemon_config() -> None:
    rr = BGPPeer(
        metadata=ObjectMeta(name="rr"), spec=BGPPeerSpec(node_selector="all()", peer_selector="has(nothing)")
    )
    assert resolve(None, None, node=True, config=None) == BfdSpec(mode="auto")
    assert resolve(None, None, node=False, config=None) is None
    desired = build_plan("a", nodes=NODES, bgp_configs=[], peers=[rr], pools=POOLS, local_blocks=[]).desired
    rows = daemon_sessions(desired.peers)
    assert rows[0] == {
        "peer": PEER,
        "local": "10.0.0.1",
        "mode": "auto",
        "min_tx": 300_000,
        "min_rx": 300_000,
        "idle_tx": 1_000_000,
        "multiplier": 3,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("failureDetectionMode: Bfd", "field 'spec.failureDetectionMode'"),
        (
            "bfd: {minimumRecvInterval: 5ms}",
            "field 'spec.bfd.minimumRecvInterval': '5ms' is outside 0.01s..60s",
        ),
        ("bfd: {idleSendInterval: 500ms}", "field 'spec.bfd.idleSendInterval': '500ms' is outside 1s..60s"),
        ("bfd: {holdDownTime: soon}", "field 'spec.bfd.holdDownTime': 'soon' is not a duration"),
        ("bfd: {multiplier: 0}", "spec.bfd.multiplier"),
    ],
)
def test_bad_bfd_fields_name_the_field_and_reason(spec: str, message: str) -> None:
    head = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: x}\n"
    doc = head + f"spec: {{peerIP: 192.0.2.4, asNumber: 1, {spec}}}"
    with pytest.raises(Exception) as err:
        parse_documents(doc)
    assert message in str(err.value)


# ---------------------------------------------------------------------------------- the gate
def ev(old: str, new: str, *, remote: str = "Down", cpi: bool = True, peer: str = PEER) -> dict[str, Any]:
    return {
        "event": "state",
        "peer": peer,
        "old": old,
        "state": new,
        "remote_state": remote,
        "remote_cpi": cpi,
        "diag_text": "control detection time expired",
        "time": 1.0,
    }


def test_gate_failure_hold_down_doubles_and_admin_down_is_not_a_failure() -> None:
    gate = BfdGate()
    gate.configure({PEER: 2.0})
    assert gate.handle(ev("Init", "Up"), 0) == []
    assert gate.handle(ev("Up", "Down", remote="AdminDown"), 1) == []  # RFC 5882 §3.2
    assert not gate.holds(PEER)
    [failure] = gate.handle(ev("Up", "Down"), 2)
    assert failure.remote_cpi and gate.holds(PEER) and failure.reason.startswith("BFD down")
    assert gate.due(100) == []  # not before BFD is Up again
    gate.handle(ev("Init", "Up"), 10)
    assert gate.due(11.9) == [] and gate.due(12.0) == [PEER] and not gate.holds(PEER)
    gate.handle(ev("Up", "Down"), 20)
    gate.handle(ev("Init", "Up"), 20)
    assert gate.due(23.9) == [] and gate.due(24.0) == [PEER]  # 2nd failure in the window: 4 s
    for t in range(30, 60, 2):
        gate.handle(ev("Up", "Down"), t)
        gate.handle(ev("Init", "Up"), t)
    assert gate.hold_for(gate.peers[PEER], 60) == 2.0 * MAX_FACTOR
    assert gate.configure({}) == [PEER]  # BFD removed while held: released


def test_gate_snapshot_after_agent_restart_sets_state_without_acting() -> None:
    gate = BfdGate()
    gate.configure({PEER: 5.0})
    assert (
        gate.handle({"hello": {"pid": 1}, "status": [{"peer": PEER, "state": "Up", "since": 5.0}]}, 0) == []
    )
    assert gate.peers[PEER].state == "Up" and not gate.holds(PEER)
    table = format_bfd(gate.rows(0))
    assert "Up" in table and PEER in table


# ---------------------------------------------------------------------------------- the engine
def bfd_plan():  # type: ignore[no-untyped-def]
    cfg = config(node_peer_bfd=BFDSettings(hold_down_time="3s"))
    return build_plan("a", nodes=NODES, bgp_configs=[cfg], peers=[], pools=POOLS, local_blocks=[]).desired


def test_bfd_failure_removes_routes_at_once_closes_the_session_and_holds_until_hold_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bgp")
    engine, sent, kernel = make()
    engine.configure(bfd_plan())
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, PEER)
    engine.bfd_message(ev("Init", "Up"), 0)
    engine.handle(announce(PEER, "10.65.2.0/26"), 0)
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]
    sent.clear()
    engine.bfd_message(ev("Up", "Down"), 1)
    engine.flush()
    assert kernel.table == {}  # at once: no hold timer, no graceful restart
    assert sent == [f"neighbor {PEER} teardown 4"]
    assert engine.counters[("bfd_down", PEER)] == 1
    engine.handle(api.StateChange(PEER, "down", "closed"), 1)
    engine.tick(130)
    # the peer comes back: BGP first, routes arrive but are held while BFD is down
    bring_up(engine, PEER)
    engine.handle(announce(PEER, "10.65.2.0/26"), 2)
    engine.flush()
    assert kernel.table == {}
    engine.bfd_message(ev("Init", "Up"), 5)
    engine.tick(7.9)
    engine.flush()
    assert kernel.table == {}  # hold-down: 3 s
    engine.tick(8.0)
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]
    assert engine.status_changed
    # every step logged with its reason: the failure (BFD's diagnostic), the hold-down, the release
    said = [r.getMessage() for r in caplog.records]
    assert any(
        PEER in m and "BFD down: control detection time expired" in m and "1 routes removed at once" in m
        for m in said
    ), said
    assert any(f"bfd {PEER} Up again: its routes held 3.0s more" in m for m in said), said
    assert any(PEER in m and "BFD Up and hold-down passed" in m for m in said), said


def test_bfd_failure_during_graceful_restart_respects_the_c_bit() -> None:
    engine, _, kernel = make()
    engine.configure(bfd_plan())
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, PEER)
    engine.bfd_message(ev("Init", "Up"), 0)
    engine.handle(announce(PEER, "10.65.2.0/26"), 0)
    engine.handle(api.StateChange(PEER, "down", "closing"), 1)  # peer's BGP restarting: stale kept
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]
    engine.bfd_message(ev("Up", "Down", cpi=False), 2)  # its BFD shares fate with its control plane
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]
    engine.bfd_message(ev("Init", "Up"), 3)
    engine.tick(6.0)
    engine.bfd_message(ev("Up", "Down", cpi=True), 7)  # control-plane independent: forwarding is gone
    engine.flush()
    assert kernel.table == {}


def test_agent_side_restart_keeps_routes_when_bfd_stays_up() -> None:
    engine, _, kernel = make()
    engine.configure(bfd_plan())
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, PEER)
    engine.bfd_message({"hello": {"pid": 9}, "status": [{"peer": PEER, "state": "Up", "since": 1.0}]}, 0)
    engine.handle(announce(PEER, "10.65.2.0/26"), 0)
    engine.handle(api.BridgeNote(0), 1)  # ExaBGP restarted: routes stale, BFD still Up
    engine.flush()
    assert list(kernel.table) == ["10.65.2.0/26"]


# ---------------------------------------------------------------------------- status, metrics
class _Service:
    def counters(self) -> tuple[dict[tuple[str, ...], int], dict[str, int], int]:
        return {("bfd_down", PEER): 2}, {}, 0

    def bfd_status(self) -> list[dict[str, Any]]:
        return [{"peer": PEER, "state": "Down", "failures": 2, "held": "until BFD is Up"}]

    def bfd_drops(self) -> dict[str, int]:
        return {"ttl": 3}

    def status(self) -> list[Any]:
        return []  # no BGP sessions: only the BFD families are looked at here


def test_metrics_and_node_status_show_bfd() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bgp.metrics import BGPCollector
    from felixpy.ctl.node_cmd import render_status

    registry = CollectorRegistry()
    registry.register(BGPCollector(_Service()))
    text = generate_latest(registry).decode()
    assert f'felixpy_bfd_session_up{{peer="{PEER}"}} 0.0' in text
    assert f'felixpy_bfd_session_state{{peer="{PEER}"}} 1.0' in text
    assert f'felixpy_bfd_failures_total{{peer="{PEER}"}} 2.0' in text
    assert f'felixpy_bfd_routes_held{{peer="{PEER}"}} 1.0' in text
    assert 'felixpy_bfd_packets_dropped_total{reason="ttl"} 3.0' in text
    doc = {"pid": 1, "running": True, "peers": [], "bfd": _Service().bfd_status()}
    import os

    doc["pid"] = os.getpid()
    out, code = render_status(doc)
    assert code == 0 and "BFD status" in out and "routes held until BFD is Up" in out
