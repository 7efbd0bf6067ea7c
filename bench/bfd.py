"""Failure-to-withdrawal with and without BFD (root only): JSON lines {"name", "value", "unit", "reference"}.

Two node namespaces on one bridge, each with a BGPService (real ExaBGP, real felixpy-bfd), full
mesh. One trial: the victim (10.0.0.2) is up, its block in the observer's kernel; its bridge port
goes down first (nothing escapes), then every process in its namespace is SIGKILLed; the figure is
the time from the link going down until the observer's kernel no longer has the victim's block
(``ip route`` polled every 10 ms). Then the port comes back and a new victim starts.

- ``bfd``: the defaults (300 ms x 3), with ``holdDownTime: 0s`` so that flap damping does not
  stretch the 20 back-to-back failures (it does not affect the withdrawal, only the return).
- ``no_bfd``: ``nodePeerFailureDetectionMode: None`` and a hold time of 3 s (ExaBGP's minimum)
  so the run ends; the figure is the hold time plus detection slack and scales with it (default
  90 s). A hold-timer expiry ends the session with a NOTIFICATION, so felixpy keeps no stale
  routes after it; a peer that retains them (BIRD as graceful-restart helper after a session
  loss without NOTIFICATION) adds its restart time (120 s by default).

Left out: the kernel's own delay to tell a route is gone (a netlink dump per poll), pod traffic,
ExaBGP's UPDATE to third parties (the e2e tests measure BIRD). Both services run in this process
(threads), as in bench.bench_bgp; the daemons and ExaBGP are separate processes.

    .venv/bin/python -m bench.bfd [--trials 20] [--only bfd,no_bfd]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec

PREFIX = f"fpt-bfdb-{os.getpid()}"
POOL = IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16"))
VICTIM_BLOCK = "10.65.2.0/26"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def emit(name: str, value: float, unit: str, reference: str = "", **extra: object) -> None:
    print(
        json.dumps({"name": name, "value": round(value, 3), "unit": unit, "reference": reference, **extra}),
        flush=True,
    )


def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    raise SystemExit(f"timeout waiting for {what}")


def kill_all(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def node(name: str, ip: str) -> Node:
    return Node(metadata=ObjectMeta(name=name), spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address=f"{ip}/24")))


def config(mode: str) -> BGPConfiguration:
    if mode == "bfd":
        spec = BGPConfigurationSpec.model_validate({"nodePeerBFD": {"holdDownTime": "0s"}})
    else:
        spec = BGPConfigurationSpec(node_peer_failure_detection_mode="None", node_mesh_max_restart_time="3s")
    return BGPConfiguration(metadata=ObjectMeta(name="default"), spec=spec)


def has_block(ns: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", ns, "route", "show", VICTIM_BLOCK], capture_output=True, text=True, timeout=10
    )
    return VICTIM_BLOCK in out.stdout


def service(name: str, ns: str, work: Path, mode: str, block: str) -> BGPService:
    svc = BGPService(name, work, netns=ns)
    if mode == "no_bfd":
        svc.speaker.settings.hold_time = 3
    nodes = [node("obs", "10.0.0.1"), node("victim", "10.0.0.2")]
    svc.update(nodes=nodes, bgp_configs=[config(mode)], peers=[], pools=[POOL], local_blocks=[block])
    svc.start()
    return svc


def trials(mode: str, count: int, work: Path, ns: dict[str, str]) -> list[float]:
    observer = service("obs", ns["obs"], work / f"{mode}-obs", mode, "10.65.1.0/26")
    out: list[float] = []
    bound = 5.0 if mode == "bfd" else 20.0
    try:
        for i in range(count):
            victim = service("victim", ns["victim"], work / f"{mode}-v{i}", mode, VICTIM_BLOCK)
            wait(lambda: has_block(ns["obs"]), 60, "the victim's block on the observer")
            if mode == "bfd":
                wait(
                    lambda: any(r["state"] == "Up" and not r["held"] for r in observer.bfd_status()),
                    60,
                    "BFD Up",
                )
            time.sleep(0.5)
            sh("ip", "-n", ns["sw"], "link", "set", "pv", "down")
            cut = time.monotonic()
            kill_all(ns["victim"])
            wait(lambda: not has_block(ns["obs"]), bound + 10, "withdrawal", interval=0.01)
            took = time.monotonic() - cut
            out.append(took)
            victim.stop(graceful=False)
            sh("ip", "-n", ns["sw"], "link", "set", "pv", "up")
            print(json.dumps({"trial": i, "mode": mode, "seconds": round(took, 3)}), flush=True)
    finally:
        observer.stop(graceful=False, stop_bfd=True)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def build() -> dict[str, str]:
    ns = {k: f"{PREFIX}-{k}" for k in ("sw", "obs", "victim")}
    for name in ns.values():
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", ns["sw"], "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", ns["sw"], "link", "set", "br0", "up")
    for port, key, ip in (("po", "obs", "10.0.0.1/24"), ("pv", "victim", "10.0.0.2/24")):
        sh(
            "ip",
            "-n",
            ns["sw"],
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns[key],
        )
        sh("ip", "-n", ns["sw"], "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns[key], "addr", "add", ip, "dev", "eth0")
        sh("ip", "-n", ns[key], "link", "set", "eth0", "up")
    return ns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bfd", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--only", default="bfd,no_bfd")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.bfd needs root (network namespaces)")
    ns = build()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fpt-bfdb-") as tmp:
            for mode in args.only.split(","):
                load = os.getloadavg()[0]
                values = trials(mode, args.trials, Path(tmp), ns)
                results[mode] = values
                what = (
                    "BFD 300 ms x 3 (hold-down 0 s)"
                    if mode == "bfd"
                    else "no BFD: hold time 3 s (default 90 s)"
                )
                for p in (50, 99):
                    emit(
                        f"bfd.failure_to_withdrawal.{mode}.p{p}",
                        percentile(values, p),
                        "s",
                        f"{what}; link cut + kill -9 of the peer -> its block out of our kernel",
                        trials=len(values),
                        load1=round(load, 2),
                        max=round(max(values), 3),
                    )
    finally:
        for name in ns.values():
            kill_all(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
