"""Benchmark: how long the lab takes to come up, add pods, probe, and go away (root only).

    .venv/bin/python -m bench.lab [--nodes 3,10] [--pods 6]

For each node count: ``felixpy-lab up`` (until every agent is ready and every BGP session
Established), ``pod add`` latency (each a real felixpy-cni ADD through the agent), one
``probe --matrix`` over the pods, and ``down``. Drives the CLI as a user would. Prints one
JSON line per figure: {"name", "value", "unit", "nodes", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from felixpy.lab.testing import LabCLI, missing_prerequisites


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def timed(fn: object, *args: str, timeout: float = 600) -> float:
    t0 = time.monotonic()
    fn(*args, timeout=timeout)  # type: ignore[operator]
    return time.monotonic() - t0


def bench(nodes: int, pods: int) -> None:
    lab = LabCLI(f"bn{nodes}")
    lab.down()
    try:
        emit("lab.up", timed(lab.ok, "up", "--nodes", str(nodes), "--timeout", "300"), "s", nodes=nodes)
        adds = []
        for i in range(pods):
            node = f"node{i % nodes + 1}"
            adds.append(timed(lab.ok, "pod", "add", f"b/p{i}", "--node", node, "--serve", "80", timeout=60))
        emit("lab.pod_add.p50", statistics.median(adds), "s", nodes=nodes, pods=pods)
        emit("lab.pod_add.max", max(adds), "s", nodes=nodes, pods=pods)
        t = timed(lab.ok, "probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json", timeout=120)
        emit("lab.probe_matrix", t, "s", nodes=nodes, probes=pods * pods)
    finally:
        t0 = time.monotonic()
        lab.down()
        emit("lab.down", time.monotonic() - t0, "s", nodes=nodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="3,10")
    ap.add_argument("--pods", type=int, default=6)
    args = ap.parse_args()
    reason = missing_prerequisites()
    if reason:
        sys.exit(f"bench/lab.py: {reason}")
    emit("machine.cpus", os.cpu_count() or 0, "cores", kernel=platform.release())
    for n in (int(x) for x in args.nodes.split(",") if x):
        bench(n, args.pods)


if __name__ == "__main__":
    main()
