"""The BGP view to debug with: the engine's per-peer status detail and routes view, and
``felixctl node routes`` / ``node status --detail`` / ``-o json|yaml`` printing them (golden files).

Regenerate the goldens after an intended change with ``FELIXPY_REGEN=1`` and review the diff."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgp import exabgp_api as api
from bgp.route import PathAttrs
from bgp.status import ROUTES_FILE, ROUTES_REQUEST, write_routes, write_status
from felixpy.ctl import node_cmd
from tests.unit.test_bgp_peer_options import TOR, bgp_filter, make, peer

DATA = Path(__file__).with_name("test_bgp_data")


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("FELIXPY_REGEN"):
        path.write_text(text)
    assert text == path.read_text()


def scenario() -> Any:
    """A ToR (eBGP, with a BGPFilter) and a mesh peer; routes accepted, best, refused two ways."""
    f = bgp_filter("tor-in", importV4=[
        {"action": "Reject", "communities": {"values": ["65001:666"]}},
        {"action": "Accept", "cidr": "10.65.5.0/26", "matchOperator": "Equal",
         "operations": [{"addCommunity": {"value": "64512:5"}}]},
    ], exportV4=[{"action": "Reject", "cidr": "10.65.0.64/26", "matchOperator": "Equal"}])  # fmt: skip
    engine, _ = make([peer("tor", peer_ip=TOR, as_number=65001, filters=["tor-in"])], [f],
                     ["10.65.0.0/26", "10.65.0.64/26"])  # fmt: skip
    engine.handle(api.Open(TOR, "192.0.2.1", 65001, 120, 90, ("asn4", "graceful restart")), 0)
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001,)), (
        api.Announce("10.65.5.0/26", TOR), api.Announce("10.65.6.0/26", TOR),
        api.Announce("10.65.0.0/26", TOR),  # our own block: refused by felixpy's own checks
    )), 0)  # fmt: skip
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001, 65009), communities=("65001:666",)),
                             (api.Announce("10.65.7.0/26", TOR),)), 0)  # fmt: skip
    # the mesh peer sends 10.65.6.0/26 too, with a shorter path (iBGP, empty AS_PATH): it wins
    engine.handle(api.Update("10.0.0.2", 64512, PathAttrs(), (api.Announce("10.65.6.0/26", "10.0.0.2"),)), 0)
    engine.flush()
    return engine


def test_engine_status_detail_and_routes_view() -> None:
    engine = scenario()
    tor = next(s for s in engine.status() if s.address == TOR)
    # advertised: our first block (the export rule keeps the second) and the mesh's route
    assert (tor.routes_received, tor.routes_accepted, tor.routes_advertised) == (4, 2, 2)
    assert tor.routes_rejected == {"own block": 1, "rejected by BGPFilter tor-in": 1}
    assert (tor.hold_time, tor.capabilities, tor.established) == (90, ("asn4", "graceful restart"), 1)
    assert tor.graceful_restart.startswith("negotiated: peer restart time 120s")
    view = engine.routes_view()
    got = {
        r["prefix"]: (r["status"], r["reason"])
        for p in view["peers"]
        if p["peer"] == TOR
        for r in p["received"]
    }
    assert got == {
        "10.65.0.0/26": ("rejected", "own block: 10.65.0.0/26"),
        "10.65.5.0/26": ("best", ""),
        "10.65.6.0/26": ("accepted", ""),  # the mesh path won
        "10.65.7.0/26": ("rejected", "rejected by BGPFilter tor-in: importV4[0]"),
    }
    assert [k["prefix"] for k in view["kernel"]] == ["10.65.5.0/26", "10.65.6.0/26"]
    # the withdrawn route leaves every list, the rejected count with it
    engine.handle(api.Update(TOR, 65001, PathAttrs(), (), ("10.65.7.0/26",)), 0)
    engine.flush()
    tor = next(s for s in engine.status() if s.address == TOR)
    assert tor.routes_rejected == {"own block": 1} and tor.routes_received == 3


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    node_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    engine = scenario()
    write_status(tmp_path, engine.status())
    write_routes(tmp_path, engine.routes_view())
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["node", "routes"], "node_routes.txt"),
        (["node", "routes", "-o", "wide", "--peer", TOR], "node_routes_wide.txt"),
        (["node", "routes", "--prefix", "10.65.6.0/26"], "node_routes_prefix.txt"),
        (["node", "status", "--detail"], "node_status_detail.txt"),
    ],
    ids=["routes", "routes-wide-peer", "routes-prefix", "status-detail"],
)
def test_golden(run_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], name: str) -> None:
    cached = ["--cached"] if argv[1] == "routes" else []
    code, out = run([*argv, *cached, "--run-dir", str(run_dir)], capsys)
    assert code == 0
    golden(name, out)


def test_json_and_yaml_carry_the_same_documents(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, as_json = run(["node", "routes", "--cached", "-o", "json", "--run-dir", str(run_dir)], capsys)
    _, as_yaml = run(["node", "routes", "--cached", "-o", "yaml", "--run-dir", str(run_dir)], capsys)
    assert json.loads(as_json) == yaml.safe_load(as_yaml)
    doc = json.loads(as_json)
    tor = next(p for p in doc["peers"] if p["peer"] == TOR)
    assert {r["prefix"]: r["status"] for r in tor["received"]}["10.65.5.0/26"] == "best"
    # 10.65.0.64/26 is held back by the export rule; the mesh's best path goes with our AS first
    assert [(a["prefix"], a["asPath"]) for a in tor["advertised"]] == [
        ("10.65.0.0/26", []),
        ("10.65.6.0/26", [64512]),
    ]
    _, status_json = run(["node", "status", "-o", "json", "--run-dir", str(run_dir)], capsys)
    _, status_yaml = run(["node", "status", "-o", "yaml", "--run-dir", str(run_dir)], capsys)
    status = json.loads(status_json)
    assert status == yaml.safe_load(status_yaml)
    tor_status = next(p for p in status["peers"] if p["address"] == TOR)
    assert tor_status["routesRejected"] == {"own block": 1, "rejected by BGPFilter tor-in": 1}
    assert (tor_status["holdTime"], tor_status["routesReceived"], tor_status["peerAs"]) == (90, 4, 65001)


def test_errors_say_what_is_wrong(run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cached = ["node", "routes", "--cached", "--run-dir", str(run_dir)]
    code, out = run([*cached, "--prefix", "10.65/26"], capsys)
    assert (code, out) == (1, "error: --prefix: '10.65/26' is not a CIDR (e.g. 10.65.1.0/26)\n")
    code, out = run([*cached, "--prefix", "10.65.6.7/26"], capsys)
    assert code == 0 and "10.65.6.0/26" in out  # host bits are dropped, as ip route does
    code, out = run([*cached, "--peer", "203.0.113.1"], capsys)
    assert code == 1 and out.startswith("error: --peer: 203.0.113.1 is not a BGP peer of this node")
    (run_dir / ROUTES_FILE).unlink()
    code, out = run(["node", "routes", "--cached", "--run-dir", str(run_dir)], capsys)
    assert code == 1 and "has not written its routes view yet" in out
    empty = tmp_path / "none"
    empty.mkdir()
    assert run(["node", "routes", "--run-dir", str(empty)], capsys) == (1, "felixpy is not running.\n")


def test_node_routes_asks_the_agent_for_a_fresh_view(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --cached: the request file is touched, and a view older than it is not taken as the
    answer; no answer within the bound shows the last view with a warning naming its time."""
    from felixpy.ctl.node_routes import fresh_view

    old = json.loads((run_dir / ROUTES_FILE).read_text())
    old["updated"] = 1.0
    (run_dir / ROUTES_FILE).write_text(json.dumps(old))
    started = time.monotonic()
    view = fresh_view(run_dir, timeout=0.5)
    assert time.monotonic() - started >= 0.5  # it waited for a fresher one
    assert view is not None and view["updated"] == 1.0
    assert (run_dir / ROUTES_REQUEST).stat().st_mtime > 1.0
    assert "did not refresh its routes view within 0.5s; showing the one from 1970-01-01T00:00:01Z" in (
        capsys.readouterr().err
    )
    # an answer written after the request is taken at once
    old["updated"] = time.time() + 1
    (run_dir / ROUTES_FILE).write_text(json.dumps(old))
    assert fresh_view(run_dir, timeout=5.0) == old


def test_graceful_restart_leaves_nothing_the_peer_did_not_send_again() -> None:
    """Routes the peer did not re-send before End-of-RIB go from what it sent too: not listed by
    node routes, not counted, and not brought back by a later re-filter (the filter removed)."""
    from tests.unit.test_bgp_peer_options import desired

    engine = scenario()
    engine.handle(api.StateChange(TOR, "down", "connection closed"), 0)  # no NOTIFICATION: stale
    view = {r["prefix"]: r for p in engine.routes_view()["peers"] if p["peer"] == TOR for r in p["received"]}
    assert view["10.65.5.0/26"]["stale"] and view["10.65.7.0/26"]["stale"]
    engine.handle(api.StateChange(TOR, "up"), 1)
    engine.handle(
        api.Update(TOR, 65001, PathAttrs(as_path=(65001,)), (api.Announce("10.65.5.0/26", TOR),)), 1
    )
    engine.handle(api.EndOfRib(TOR, "ipv4 unicast"), 1)
    engine.flush()
    view = {r["prefix"]: r for p in engine.routes_view()["peers"] if p["peer"] == TOR for r in p["received"]}
    assert list(view) == ["10.65.5.0/26"] and not view["10.65.5.0/26"]["stale"]
    tor = next(s for s in engine.status() if s.address == TOR)
    assert (tor.routes_received, tor.routes_rejected) == (1, {})
    engine.configure(desired([peer("tor", peer_ip=TOR, as_number=65001)], [], ["10.65.0.0/26"]))
    assert {p for p, _ in engine.rib.best_routes()} == {"10.65.5.0/26", "10.65.6.0/26"}  # 6.0: the mesh's
