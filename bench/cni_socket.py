"""What the agent's CNI socket costs per request: the bounded server (read timeout, connection and
request caps) against the unbounded one it replaced, same stub handler, runs interleaved.

    .venv/bin/python bench/cni_socket.py [--requests 2000] [--rounds 5] [--idle 300] [--baseline REV]

The baseline server is ``felixpy/cni/server.py`` as it was at git revision REV (default: the commit
before the bounds, 2bae4d5), loaded from ``git show``; both serve a handler that answers at once, so
the figure is the socket's own overhead (connect, one line each way, a thread per connection).
``--idle N`` first opens N idle connections to each server (the bounded one still answers; the old
one had a backlog of 5 and no read timeout). No root needed. One JSON line per figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REQUEST = (
    json.dumps(
        {
            "command": "ADD",
            "containerID": "c1",
            "config": {"cniVersion": "1.0.0", "name": "n"},
            "reply": "cni",
        }
    ).encode()
    + b"\n"
)


def _baseline(rev: str) -> ModuleType:
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:felixpy/cni/server.py"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="cni-socket-bench-")) / "server_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("server_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one(path: str) -> float:
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(REQUEST)
        s.makefile("rb").readline()
    return (time.perf_counter() - start) * 1000


def _run(server_cls: Any, n: int, idle: int) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="cni-socket-bench-"))
    server = server_cls(str(tmp / "cni.sock"), lambda req: {"result": None})
    server.start()
    held = []
    try:
        for _ in range(idle):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(server.path)
            except BlockingIOError:
                s.close()
                continue
            held.append(s)
        time.sleep(0.2)
        return [_one(server.path) for _ in range(n)]
    finally:
        for s in held:
            s.close()
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--baseline", default="2bae4d5")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from felixpy.cni.server import CNIServer

    old = _baseline(args.baseline).CNIServer
    got: dict[str, list[float]] = {"bounded": [], "baseline": []}
    for _ in range(args.rounds):  # interleaved, so host load hits both alike
        got["baseline"] += _run(old, args.requests, args.idle)
        got["bounded"] += _run(CNIServer, args.requests, args.idle)
    for name, ms in got.items():
        ms.sort()
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            value = ms[min(len(ms) - 1, int(q * len(ms)))]
            print(
                json.dumps(
                    {
                        "name": f"cni_socket_{name}_{label}",
                        "value": round(value, 3),
                        "unit": "ms",
                        "reference": f"round trip of one request, stub handler, {args.idle} idle connections",
                        "requests": len(ms),
                    }
                )
            )
    ratio = statistics.median(got["bounded"]) / statistics.median(got["baseline"])
    print(
        json.dumps(
            {"name": "cni_socket_ratio_p50", "value": round(ratio, 3), "unit": "x", "reference": "<= 1.1"}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
