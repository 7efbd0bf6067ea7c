"""Controllers benchmarks: one JSON line per figure, {"name", "value", "unit", "reference"}.

* plan: the pure GC decision (felixpy.controllers.gc_plan.plan) for N allocations, N live pods and
  N/10 leaks, median of 5.
* pass: one whole GC pass (IPAM read from a private etcd, pod and node lists from the stand-in API
  server, plan, releases) with N pods alive and N/10 leaks past their grace period.

The etcd and the stand-in are started here and stopped at the end, even on failure.

    .venv/bin/python -m bench.controllers_gc [--pods 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from felixpy.controllers.gc_pass import GarbageCollector
from felixpy.controllers.gc_plan import Allocation, ClusterView, LivePod, plan
from felixpy.controllers.metrics import ControllerMetrics
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.datastore.resources import KVBackend
from ipam.ipam import IPAM
from tests.fixtures.etcd import running_etcd
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.ipam_helpers import make_pool


def emit(name: str, value: float, unit: str, reference: str) -> None:
    print(
        json.dumps({"name": name, "value": round(value, 4), "unit": unit, "reference": reference}), flush=True
    )


def bench_plan(n: int) -> None:
    allocs = [
        Allocation(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            f"net.c{i}",
            {"node": "n1", "namespace": "default", "pod": f"p{i}"},
        )
        for i in range(n)
    ]
    pods = {
        ("default", f"p{i}"): LivePod("default", f"p{i}", f"u{i}", "n1", frozenset({allocs[i].ip}), f"c{i}")
        for i in range(n)
        if i % 10
    }
    view = ClusterView(pods=pods, nodes=frozenset({"n1"}))
    cands = {a.key: 0.0 for a in allocs}
    times = []
    for _ in range(5):
        t = time.perf_counter()
        p = plan(allocs, [], view, candidates=cands, affine_nodes=["n1"], now=100.0, grace=10.0)
        times.append(time.perf_counter() - t)
    assert len(p.addresses) == n // 10
    emit(f"gc_plan_{n}_allocations", statistics.median(times) * 1000, "ms", "pure decision, 10% leaks")


def bench_pass(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_etcd(Path(tmp)) as etcd:
        kv = etcd.kv()
        api = KubeAPI()
        try:
            backend = KVBackend(kv)
            make_pool(backend, "p", "10.90.0.0/16", blockSize=26)
            ipam = IPAM(kv, backend, cache_seconds=60)
            api.store.create("nodes", None, {"metadata": {"name": "n1"}})
            for i in range(n):
                ip = ipam.auto_assign(
                    f"net.c{i}",
                    node="n1",
                    num_v4=1,
                    attrs={"node": "n1", "namespace": "default", "pod": f"p{i}"},
                ).v4[0]
                if i % 10:
                    api.store.create(
                        "pods",
                        "default",
                        {"metadata": {"name": f"p{i}"}, "spec": {"nodeName": "n1"}, "status": {"podIP": ip}},
                    )
            gc = GarbageCollector(
                kube=KubernetesBackend.for_url(api.url),
                ipam=ipam,
                backend=backend,
                metrics=ControllerMetrics(),
                etcd_mode=True,
            )
            gc.run_once(grace=3600)  # first sight of the leaks
            gc.candidates = {k: 0.0 for k in gc.candidates}  # as if the grace period had passed
            t = time.perf_counter()
            p = gc.run_once(grace=1.0)
            took = time.perf_counter() - t
            assert p is not None and len(p.addresses) == n // 10
            emit(f"gc_pass_{n}_pods", took, "s", f"{n // 10} releases (each: pod re-check + one CAS txn)")
            t = time.perf_counter()
            gc.run_once(grace=1.0)
            emit(
                f"gc_pass_{n}_pods_nothing_to_do",
                time.perf_counter() - t,
                "s",
                "read IPAM + list pods/nodes + plan",
            )
        finally:
            api.stop()
            kv.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    bench_plan(args.pods * 10)
    bench_pass(args.pods)


if __name__ == "__main__":
    main()
