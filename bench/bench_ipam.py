"""IPAM allocation benchmark on a private local etcd, against a raw etcd transaction floor.

    .venv/bin/python -m bench.bench_ipam [--n 2000] [--procs 8]

Starts etcd (/usr/bin/etcd, or $FELIXPY_ETCD_BIN) on free loopback ports in a temp dir,
then measures, in one run:
  raw_txn_1      one client: a compare-and-swap update of one key, in a loop (the floor)
  ipam_1         one client: IPAM.auto_assign of one IPv4 address per new handle
  raw_txn_8      --procs processes, each its own client, the same single-key CAS on its own key
  ipam_8         --procs processes across 4 nodes, each its own client, auto_assign
  release_1      one client: release_by_handle of the addresses ipam_1 took
Prints one JSON line per figure: p50/p99 latency (ms), throughput (ops/s), and the
IPAM/raw ratio. Everything is stopped and removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ETCD = os.environ.get("FELIXPY_ETCD_BIN", "/usr/bin/etcd")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = _port(), _port()
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    args = [
        ETCD,
        "--name",
        "bench",
        "--data-dir",
        str(base / "data"),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        purl,
        "--initial-advertise-peer-urls",
        purl,
        "--initial-cluster",
        f"bench={purl}",
        "--log-level",
        "warn",
        "--logger",
        "zap",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if b"true" in r.read():
                    return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("etcd did not become healthy")


def _pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def raw_loop(endpoints: str, key: str, n: int) -> tuple[list[float], float]:
    from felixpy.datastore.etcd import EtcdKV

    kv = EtcdKV(endpoints)
    rev = kv.put(key, b"0")
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        rev = kv.update(key, str(i).encode() * 20, rev)
        lat.append(time.perf_counter() - t)
    took = time.perf_counter() - t0
    kv.close()
    return lat, took


def ipam_loop(endpoints: str, tag: str, n: int, nodes: list[str]) -> tuple[list[float], float]:
    from felixpy.datastore.etcd import EtcdKV
    from felixpy.datastore.resources import KVBackend
    from ipam.ipam import IPAM

    kv = EtcdKV(endpoints)
    ipam = IPAM(kv, KVBackend(kv))
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        node = nodes[(i * len(nodes)) // n]
        t = time.perf_counter()
        ipam.auto_assign(f"bench.{tag}-{i}", node=node, attrs={"node": node})
        lat.append(time.perf_counter() - t)
    took = time.perf_counter() - t0
    kv.close()
    return lat, took


def release_loop(endpoints: str, tag: str, n: int) -> tuple[list[float], float]:
    from felixpy.datastore.etcd import EtcdKV
    from felixpy.datastore.resources import KVBackend
    from ipam.ipam import IPAM

    kv = EtcdKV(endpoints)
    ipam = IPAM(kv, KVBackend(kv))
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        ipam.release_by_handle(f"bench.{tag}-{i}")
        lat.append(time.perf_counter() - t)
    took = time.perf_counter() - t0
    kv.close()
    return lat, took


def parallel(fn, argsets: list[tuple]) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(argsets)) as pool:
        pool.starmap(_noop, [()] * len(argsets))  # warm the workers (interpreter start-up is not measured)
        t0 = time.perf_counter()
        results = pool.starmap(fn, argsets)
        took = time.perf_counter() - t0
    return [x for lat, _ in results for x in lat], took


def _noop() -> None:
    import felixpy.datastore.etcd  # noqa: F401
    import ipam.ipam  # noqa: F401


def emit(name: str, lat: list[float], took: float, clients: int, **extra: object) -> dict[str, Any]:
    row = {
        "bench": "ipam",
        "figure": name,
        "clients": clients,
        "ops": len(lat),
        "p50_ms": round(_pct(lat, 0.50), 3),
        "p99_ms": round(_pct(lat, 0.99), 3),
        "ops_per_s": round(len(lat) / took, 1),
        **extra,
    }
    print(json.dumps(row), flush=True)
    return row


def run(n: int, procs: int) -> None:
    from felixpy.datastore.etcd import EtcdKV
    from felixpy.datastore.resources import KVBackend
    from felixpy.resources.ippool import IPPool

    base = Path(tempfile.mkdtemp(prefix="felixpy-bench-ipam-"))
    proc, url = start_etcd(base)
    try:
        kv = EtcdKV(url)
        KVBackend(kv).create(
            IPPool.model_validate({"metadata": {"name": "bench"}, "spec": {"cidr": "10.128.0.0/14"}})
        )
        print(
            json.dumps(
                {
                    "bench": "ipam",
                    "machine": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                }
            ),
            flush=True,
        )
        raw = emit("raw_txn_1", *raw_loop(url, "/bench/raw", n), 1)
        one = emit("ipam_1", *ipam_loop(url, "one", n, [f"solo-{i}" for i in range(max(1, n // 1000))]), 1)
        print(
            json.dumps(
                {
                    "bench": "ipam",
                    "figure": "ratio_1",
                    "p50_ipam_over_raw": round(one["p50_ms"] / raw["p50_ms"], 2),
                }
            ),
            flush=True,
        )  # type: ignore[operator]
        per = max(1, n // procs)
        raw8 = emit(
            "raw_txn_8", *parallel(raw_loop, [(url, f"/bench/raw{p}", per) for p in range(procs)]), procs
        )
        ipam8 = emit(
            "ipam_8",
            *parallel(ipam_loop, [(url, f"p{p}", per, [f"node-{p % 4}"]) for p in range(procs)]),
            procs,
        )
        print(
            json.dumps(
                {
                    "bench": "ipam",
                    "figure": "ratio_8",
                    "p50_ipam_over_raw": round(ipam8["p50_ms"] / raw8["p50_ms"], 2),
                }
            ),
            flush=True,
        )  # type: ignore[operator]
        emit("release_1", *release_loop(url, "one", n), 1)
        kv.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="operations per single-client figure")
    ap.add_argument("--procs", type=int, default=8)
    a = ap.parse_args()
    run(a.n, a.procs)


if __name__ == "__main__":
    main()
