"""Benchmark: N /26 routes from a BIRD 2 peer into one felixpy node's kernel (root only).

Two throwaway namespaces on one veth: BIRD (10.0.0.2) with a disabled static protocol of N
routes, and a BGPService (10.0.0.1). Times ``birdc enable`` → N routes with protocol 81 in
the node's kernel, then ``birdc disable`` → none. Prints one JSON line per figure.

    .venv/bin/python bench/bgp.py [--routes 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec

PREFIX = f"fpt-bench-{os.getpid()}"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def count_routes(ns: str) -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "-4", "route", "show", "proto", "81"], capture_output=True, timeout=60
    )
    return out.stdout.count(b"\n")


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"timeout waiting for {what}")


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def bird_conf(n: int, path: Path) -> None:
    routes = "\n".join(
        f"    route 10.{64 + i // 1024}.{(i // 4) % 256}.{(i % 4) * 64}/26 blackhole;" for i in range(n)
    )
    path.write_text(f"""router id 10.0.0.2;
protocol device {{ }}
protocol static st {{ disabled; ipv4;
{routes}
}}
protocol bgp felix {{ local 10.0.0.2 as 64512; neighbor 10.0.0.1 as 64512; direct; graceful restart on;
    ipv4 {{ import none; export where proto = "st"; next hop self; }}; }}
""")


def setup(node_ns: str, bird_ns: str) -> None:
    for ns in (node_ns, bird_ns):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", node_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", bird_ns)
    for ns, cidr in ((node_ns, "10.0.0.1/24"), (bird_ns, "10.0.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")


def teardown(*names: str) -> None:
    for ns in names:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    print(
        json.dumps({"bench": "bgp", "figure": name, "value": round(value, 3), "unit": unit, **extra}),
        flush=True,
    )


def run(n: int, work: Path) -> None:
    node_ns, bird_ns = f"{PREFIX}-node", f"{PREFIX}-bird"
    setup(node_ns, bird_ns)
    bird_conf(n, work / "bird.conf")
    sock = str(work / "bird.ctl")
    subprocess.Popen(
        ["ip", "netns", "exec", bird_ns, "bird", "-f", "-c", str(work / "bird.conf"), "-s", sock]
    )
    svc = BGPService("n1", work / "node", netns=node_ns)
    nodes = [Node(metadata=ObjectMeta(name="n1"), spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address="10.0.0.1/24")))]
    pools = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.64.0.0/10"))]
    peers = [BGPPeer(metadata=ObjectMeta(name="bird"), spec=BGPPeerSpec(peer_ip="10.0.0.2", as_number=64512))]
    svc.update(nodes=nodes, bgp_configs=[], peers=peers, pools=pools, local_blocks=[])
    svc.start()
    try:
        wait(lambda: [p.state for p in svc.status()] == ["up"], 30, "session up")
        sh("birdc", "-s", sock, "enable", "st")
        t_in = wait(lambda: count_routes(node_ns) >= n, 300, f"{n} routes in the kernel")
        emit("install", n / t_in, "routes/s", routes=n, seconds=round(t_in, 3))
        pid = svc.speaker.pid or 0
        emit("exabgp_peak_rss", vm_hwm_kb(pid) / 1024, "MB")
        emit("agent_peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")
        sh("birdc", "-s", sock, "disable", "st")
        t_out = wait(lambda: count_routes(node_ns) == 0, 300, "routes removed")
        emit("withdraw", n / t_out, "routes/s", routes=n, seconds=round(t_out, 3))
    finally:
        svc.stop(graceful=False)
        teardown(node_ns, bird_ns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=10_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/bgp.py needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fpt-bench-") as work:
        run(args.routes, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
