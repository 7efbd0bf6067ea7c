"""The end-to-end benchmarks' pure parts: sizes and flags, percentiles, the JSON record, ping parsing.

Their kernel parts (a node namespace, etcd, the real agent) need root and are run by hand
(docs/performance.md); this keeps the modules importable and their arithmetic right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import e2e_dataplane, e2e_node, e2e_startup


def test_sizes_are_the_issues_x1_x5_x10_and_counts_override() -> None:
    assert e2e_node.size_of("x1") == (100, 50)
    assert e2e_node.size_of("x5") == (500, 250)
    assert e2e_node.size_of("x10") == (1000, 500)
    assert e2e_node.size_of("x10", endpoints=7) == (7, 500)
    assert e2e_node.size_of("small", policies=0) == (20, 0)


@pytest.mark.parametrize(("size", "n", "m"), [("x3", None, None), ("x1", 0, None), ("x1", None, -1)])
def test_bad_sizes_are_refused_with_the_flag_named(size: str, n: int | None, m: int | None) -> None:
    with pytest.raises(ValueError, match="--"):
        e2e_node.size_of(size, n, m)


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert e2e_node.pct(samples, 0.5) == 50
    assert e2e_node.pct(samples, 0.99) == 99
    assert e2e_node.pct(list(reversed(samples)), 0.99) == 99
    assert e2e_node.pct([3.0], 0.99) == 3.0
    # 20 samples: p99 is the largest, not an interpolation below it
    assert e2e_node.pct([float(x) for x in range(20)], 0.99) == 19
    with pytest.raises(ValueError):
        e2e_node.pct([], 0.5)


def test_summary_is_one_json_line_with_p50_p99_n_and_load() -> None:
    rec = e2e_node.summary("x", [5.0, 1.0, 9.0, 3.0], "ms", "ref", endpoints=4)
    line = json.loads(json.dumps(rec))
    assert line["name"] == "x" and line["unit"] == "ms" and line["reference"] == "ref"
    assert line["value"] == line["p50"] == 3.0
    assert (line["p99"], line["min"], line["max"], line["n"]) == (9.0, 1.0, 9.0, 4)
    assert line["endpoints"] == 4 and isinstance(line["load1"], float)


def test_ping_summary_is_parsed_and_garbage_refused() -> None:
    out = "...\n--- 10.241.1.2 ping statistics ---\n412 packets transmitted, 409 received, 0.7% packet loss\n"
    assert e2e_node.parse_ping(out) == (412, 409)
    errs = "5 packets transmitted, 3 received, +2 errors, 40% packet loss, time 40ms"
    assert e2e_node.parse_ping(errs) == (5, 3)
    with pytest.raises(ValueError):
        e2e_node.parse_ping("ping: connect: Network is unreachable")


def test_preloaded_policies_select_local_endpoints_and_admit_a_service() -> None:
    from policy.selector import parse

    spec = e2e_node.policy_spec(13)
    assert parse(spec["selector"]).matches(e2e_node.endpoint_labels(3))
    source = spec["ingress"][0]["source"]["selector"]
    assert parse(source).matches(e2e_node.endpoint_labels(13))
    assert e2e_node.endpoint_ip(0) != e2e_node.endpoint_ip(250)


def test_flags_parse_and_bad_flags_give_one_line() -> None:
    args = e2e_dataplane.parse_args(["--size", "x5", "--samples", "30"])
    assert (args.n, args.m, args.samples, args.in_ns) == (500, 250, 30, False)
    args = e2e_startup.parse_args(["--endpoints", "3", "--restarts", "2", "--bgp"])
    assert (args.n, args.m, args.restarts, args.bgp) == (3, 10, 2, True)
    assert e2e_dataplane.main(["--size", "huge"]) == 2
    assert e2e_startup.main(["--restarts", "0"]) == 2
    assert e2e_startup.main(["--remote", "-1"]) == 2
    assert e2e_startup.parse_args(["--remote", "10000"]).remote == 10000


def test_plot_groups_sizes_and_writes_one_png_per_figure(tmp_path: Path) -> None:
    from bench import plot

    common = {"name": "e2e_wep_to_route", "n": 20, "unit": "ms"}
    big = {**common, "value": 40, "p50": 40, "p99": 90, "endpoints": 500, "policies": 250}
    small = {**common, "value": 30, "p50": 30, "p99": 70, "endpoints": 100, "policies": 50}
    lines = [
        "# a comment line from a benchmark",
        json.dumps(big),
        json.dumps(small),
        json.dumps({"name": "no_size", "value": 1, "unit": "s"}),
        "not json",
    ]
    records = plot.read_records(lines)
    assert list(records) == ["e2e_wep_to_route"]
    want = {"p50": ([100, 500], [30.0, 40.0]), "p99": ([100, 500], [70.0, 90.0])}
    assert plot.series(records["e2e_wep_to_route"]) == want
    pytest.importorskip("matplotlib", reason="matplotlib (dev extra) draws the PNGs")
    (png,) = plot.plot(tmp_path, records)
    assert png.name == "e2e_wep_to_route.png" and png.read_bytes()[:4] == b"\x89PNG"


def test_bgp_mesh_convergence_counts_the_session_time_once() -> None:
    from bench import bench_bgp

    setup, converged = bench_bgp.mesh_figures(10, t_up=1.3, t_routes=2.1)
    assert (setup["name"], setup["value"], setup["nodes"]) == ("bgp_mesh_setup", 1.3, 10)
    assert "45 sessions" in setup["reference"]
    # both times run from the same start(): converged is t_routes, not t_up + t_routes
    assert (converged["name"], converged["value"]) == ("bgp_mesh_converged", 2.1)


def test_bird_is_timed_only_once_the_sources_session_is_up_too() -> None:
    from bench import bench_bgp

    socks = bench_bgp.sessions_before_timing("src.ctl", ["c0.ctl", "c1.ctl"])
    assert socks == ["src.ctl", "c0.ctl", "c1.ctl"]


def test_reflect_figures_give_both_directions_with_median_range_and_runs_over_3x() -> None:
    from bench import bench_bgp

    rows = [
        {"load1": load, "ours_in": oi, "bird_in": bi, "ratio_in": oi / bi, "ours_out": oo, "bird_out": bo,
         "ratio_out": oo / bo, "exabgp_cpu": 0.1, "agent_cpu": 0.5}
        for load, oi, bi, oo, bo in [(1.0, 0.05, 0.025, 0.1, 0.02), (2.0, 0.04, 0.02, 0.06, 0.03),
                                     (3.0, 0.09, 0.02, 0.05, 0.025)]
    ]  # fmt: skip
    figures = {f["name"]: f for f in bench_bgp.reflect_figures(rows, 10_000, 4)}
    announce, withdraw = figures["bgp_reflect_ratio"], figures["bgp_reflect_withdraw_ratio"]
    assert (announce["value"], announce["min"], announce["max"], announce["over_3x"]) == (2.0, 2.0, 4.5, 1)
    assert (withdraw["value"], withdraw["over_3x"], withdraw["runs"]) == (2.0, 1, 3)
    assert figures["bgp_reflect_withdraw_ours"]["value"] == 0.06 and announce["load1_median"] == 2.0


def test_withdraw_capture_keeps_update_segments_and_drops_keepalives() -> None:
    from bench import bench_bgp

    out = (
        "1796628260.100000 IP 10.0.1.1.179 > 10.0.1.11.40000: tcp 19\n"  # KEEPALIVE
        "1796628260.120000 IP 10.0.1.1.179 > 10.0.1.11.40000: tcp 4096\n"
        "1796628260.150500 IP 10.0.1.1.179 > 10.0.1.12.40001: tcp 1203\n"
        "1796628260.200000 IP 10.0.1.1.179 > 10.0.1.12.40001: tcp 0\n"  # a bare ACK
    )
    assert bench_bgp.update_times(out) == [1796628260.12, 1796628260.1505]


def test_peer_flag_defaults_to_bird_and_frr_needs_learned_routes() -> None:
    assert e2e_startup.parse_args(["--size", "x10", "--bgp"]).peer == "bird"
    args = e2e_startup.parse_args(["--size", "x10", "--bgp", "--peer", "frr"])
    assert (args.peer, args.routes) == ("frr", 10000)
    assert e2e_startup.main(["--peer", "frr"]) == 2  # no --bgp: nothing for a peer to announce
    assert e2e_startup.main(["--bgp", "--peer", "gobgp"]) == 2


def test_frr_announces_the_same_prefixes_as_bird_with_graceful_restart_ibgp() -> None:
    conf = e2e_node.frr_conf(2000, "10.79.0.1", "/x/frr.log")
    frr = [line.split()[1] for line in conf.splitlines() if line.strip().startswith("network ")]
    bird = [line.split()[1] for line in e2e_node.bird_static(2000).splitlines() if "blackhole" in line]
    assert frr == bird and len(set(frr)) == 2000
    assert frr[0] == "10.64.0.0/26" and frr[-1] == "10.65.243.192/26"
    assert "router bgp 64512" in conf and "remote-as 64512" in conf and "bgp graceful-restart" in conf
    assert "next-hop-self" in conf and "bgp router-id 10.78.0.2" in conf


def test_the_peers_end_of_rib_is_read_from_the_agents_log_and_split_from_programmed() -> None:
    log = (
        "timestamp='2026-12-07T20:21:09.363746Z' level='info' logger=None event='datastore.in_sync'\n"
        "timestamp='2026-12-07T20:21:10.000000Z' level='info' logger='bgp.engine' "
        "event='bgp End-of-RIB from 10.9.9.9 (0 stale routes removed)'\n"
        "timestamp='2026-12-07T20:21:11.338716Z' level='info' logger='bgp.engine' "
        "event='bgp End-of-RIB from 10.78.0.2 (0 stale routes removed)'\n"
        "timestamp='2026-12-07T20:21:12.000000Z' level='info' logger='bgp.engine' "
        "event='bgp End-of-RIB from 10.78.0.2 (3 stale routes removed)'\n"
    )
    when = e2e_startup.peer_eor_time(log)
    assert when is not None and abs(when - 1796674871.338716) < 1e-6  # the first, of the bench's peer
    assert e2e_startup.peer_eor_time(log.splitlines()[0]) is None
    to_eor, after, missing = e2e_startup.eor_split([4.0, 1.0, 2.0], [3.5, None, 2.5])
    assert (to_eor, after, missing) == ([3.5, 2.5], [0.5, -0.5], 1)


def test_the_peers_session_time_is_read_from_bird_and_frr_logs() -> None:
    bird = (
        "20:27:54.973 <TRACE> felix: State changed to start\n"
        "20:27:59.371 <TRACE> felix: BGP session established\n"
        "20:28:13.328 <TRACE> felix: BGP session established\n"
    )
    frr = (
        "2026/12/07 20:28:51.025 BGP: [T91AW-FGMHW] bgp_fsm_change_status : Status: Established\n"
        "2026/12/07 20:28:51.025 BGP: [ZQHFG-DQGX1] 10.79.0.1 went from OpenConfirm to Established\n"
    )
    assert e2e_startup.peer_session_times(bird, "bird") == [20 * 3600 + 27 * 60 + 59.371,
                                                             20 * 3600 + 28 * 60 + 13.328]  # fmt: skip
    assert e2e_startup.peer_session_times(frr, "frr") == [20 * 3600 + 28 * 60 + 51.025]
    import time

    wall = time.mktime((2026, 12, 7, 20, 27, 55, 0, 0, -1)) + 0.111  # local time, as the peers log
    got = e2e_startup.session_after(e2e_startup.peer_session_times(bird, "bird"), wall)
    assert got is not None and abs(got - 4.26) < 1e-6  # the first session after the exec
    assert e2e_startup.session_after([], wall) is None
    # just before midnight, a session just after it
    late = time.mktime((2026, 12, 7, 23, 59, 59, 0, 0, -1)) + 0.5
    got = e2e_startup.session_after([0.75], late)
    assert got is not None and abs(got - 1.25) < 1e-6  # 23:59:59.5 -> 00:00:00.75


def test_the_agents_sources_are_byte_compiled_before_the_exec_even_when_python_writes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The e2e benchmarks time an installed agent: with PYTHONDONTWRITEBYTECODE set (as on these
    # machines) an editable install would compile every module at every exec.
    import sys

    from bench.e2e_node import compile_sources

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("X = 1\n")
    assert compile_sources(tmp_path, ("pkg", "absent"))
    cached = sorted(p.name.split(".")[0] for p in pkg.rglob("*.pyc"))
    assert cached == ["__init__", "mod"]
    (pkg / "bad.py").write_text("def (:\n")
    assert not compile_sources(tmp_path, ("pkg",))
