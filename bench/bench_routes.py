"""Agent start-up's route work: N local workload routes through RouteTable, in a throwaway namespace.

    sudo .venv/bin/python -m bench.bench_routes [--endpoints 1000] [--repeat 3]

Makes a namespace ``fpt-routes-<pid>`` with N ``cali*`` veths (peers in the same namespace) and
times, through the agent's own ``RouteTable(IPRouteNetlink(ns))``:
  cold_start   the first commit of a new node: dump (nothing of ours), write N /32 ``dev caliX``
               routes and N/64 block blackholes
  restart      an agent restart: a new table finds every route already there (dump, no write)
  resync       the periodic route refresh on a converged table
  one_route    one more endpoint (a CNI ADD's route), median of 50
  remove_all   every route removed (the start-up sweep of a node that lost all its pods)
Prints one JSON line per figure (min and median over ``--repeat`` runs) on stdout; the agent's
route logs go to stderr. The namespace is deleted at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import structlog

from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.routes import RouteTable


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _desired(n: int) -> dict[str, RouteTarget]:
    routes = {
        f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}/32": RouteTarget.device(f"cali{i}")
        for i in range(n)
    }
    for block in range((n + 63) // 64):
        routes[f"10.{64 + block * 64 // 65536}.{(block * 64 // 256) % 256}.{block * 64 % 256}/26"] = (
            RouteTarget.blackhole()
        )
    return routes


def _make_namespace(name: str, n: int) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    script = "".join(f"link add cali{i} type veth peer name p{i}\nlink set cali{i} up\n" for i in range(n))
    script += "".join(f"link set dev p{i} up\n" for i in range(n))
    subprocess.run(["ip", "-n", name, "-batch", "-"], input=script, text=True, check=True)


def run_once(ns: str, n: int) -> dict[str, float]:
    desired = _desired(n)
    figures: dict[str, float] = {}
    with IPRouteNetlink(ns) as nl:
        table = RouteTable(nl)
        table.set_desired(desired)
        figures["cold_start_s"] = _timed(table.start)
    with IPRouteNetlink(ns) as nl:
        table = RouteTable(nl)
        table.set_desired(desired)
        figures["restart_s"] = _timed(table.start)
        figures["resync_s"] = _timed(table.resync)
        one = []
        for i in range(50):
            table.set_route(f"10.200.0.{i}/32", RouteTarget.device(f"cali{i % n}"))
            one.append(_timed(table.apply))
        figures["one_route_s"] = statistics.median(one)
        table.set_desired({})
        figures["remove_all_s"] = _timed(table.apply)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="", help="free text copied into every line (e.g. before/after)")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    ns = f"fpt-routes-{os.getpid()}"
    try:
        _make_namespace(ns, args.endpoints)
        runs = [run_once(ns, args.endpoints) for _ in range(args.repeat)]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(
            json.dumps(
                {
                    "bench": "routes",
                    "figure": key.removesuffix("_s"),
                    "endpoints": args.endpoints,
                    "routes": len(_desired(args.endpoints)),
                    "min_s": round(min(values), 4),
                    "median_s": round(statistics.median(values), 4),
                    "repeat": args.repeat,
                    "label": args.label,
                    "cpus": os.cpu_count(),
                    "load1": round(os.getloadavg()[0], 2),
                    "kernel": platform.release(),
                }
            )
        )


if __name__ == "__main__":
    main()
