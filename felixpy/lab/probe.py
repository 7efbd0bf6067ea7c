"""``probe`` and ``probe --matrix``: real connections between pods, as truth tables.

One prober process per source pod (inside its namespace) tries every target at once; at
most ``parallel`` such processes run together (2 cores: keep it small). The matrix is
printed like the Kubernetes network-policy e2e tables: rows are "from", columns are "to",
``.`` connected, ``X`` blocked.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from felixpy.lab.names import LabError
from felixpy.lab.pods import parse_pod_ref
from felixpy.lab.shell import in_netns, run
from felixpy.lab.state import LabState, PodRecord

MAX_PARALLEL = 4


@dataclass(frozen=True)
class Result:
    src: str
    dst: str
    ip: str
    port: int
    proto: str
    connected: bool
    ms: float
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "ip": self.ip, "port": self.port, "proto": self.proto,
                "connected": self.connected, "ms": self.ms, "error": self.error}


def pod_key(pod: PodRecord) -> str:
    return f"{pod.namespace}/{pod.name}"


def find_pod(st: LabState, ref: str) -> PodRecord:
    ns, name = parse_pod_ref(ref)
    pod = st.pod(ns, name)
    if pod is None or not pod.ip:
        raise LabError(f"no pod {ns}/{name} with an IP in lab {st.name!r}")
    return pod


def _run_prober(src: PodRecord, targets: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    request = json.dumps({"timeout": timeout, "targets": targets})
    argv = in_netns(src.netns, sys.executable, "-m", "felixpy.lab.prober")
    budget = 10.0 + timeout * (1 + len(targets) // 32)
    out = run(argv, input=request, timeout=budget).stdout
    return list(json.loads(out))


def probe_from(
    src: PodRecord, dsts: list[PodRecord], ports: list[int], protos: list[str], timeout: float
) -> list[Result]:
    """Every (dst, port, proto) from ``src``, in one prober process."""
    targets, meta = [], []
    for dst in dsts:
        for port in ports:
            for proto in protos:
                targets.append({"ip": dst.ip, "port": port, "proto": proto})
                meta.append(pod_key(dst))
    raw = _run_prober(src, targets, timeout)
    return [
        Result(pod_key(src), dst, r["ip"], r["port"], r["proto"], r["connected"], r["ms"], r["error"])
        for dst, r in zip(meta, raw, strict=True)
    ]


def matrix(
    st: LabState, ports: list[int], protos: list[str], *, timeout: float = 1.0, parallel: int = 2
) -> list[Result]:
    """Probe every ordered pod pair (including a pod to itself) on every port/protocol."""
    pods = [p for p in st.pods if p.ip]
    if not pods:
        raise LabError("the lab has no pods")
    workers = max(1, min(parallel, MAX_PARALLEL, len(pods)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunks = pool.map(lambda src: probe_from(src, pods, ports, protos, timeout), pods)
        return [r for chunk in chunks for r in chunk]


def format_tables(results: list[Result], pods: list[str]) -> str:
    """One truth table per (port, proto), k8s e2e style."""
    lookup = {(r.src, r.dst, r.port, r.proto): r.connected for r in results}
    combos = sorted({(r.port, r.proto) for r in results})
    width = max([len(p) for p in pods] + [8])
    blocks = []
    for port, proto in combos:
        lines = [f"{proto.upper()}/{port}".ljust(width) + " " + " ".join(p.ljust(width) for p in pods)]
        for src in pods:
            marks = ["." if lookup.get((src, dst, port, proto)) else "X" for dst in pods]
            lines.append(src.ljust(width) + " " + " ".join(m.ljust(width) for m in marks))
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks)


def matrix_json(results: list[Result], pods: list[str]) -> dict[str, Any]:
    tables: dict[str, dict[str, dict[str, bool]]] = {}
    for r in results:
        tables.setdefault(f"{r.port}/{r.proto}", {}).setdefault(r.src, {})[r.dst] = r.connected
    return {"pods": pods, "tables": tables, "results": [r.to_json() for r in results]}
