"""Datastore benchmark: Syncer vs the raw pyetcd client, same etcd, same keys, same run.

    .venv/bin/python -m bench.datastore [--weps 10000] [--policies 1000] [--events 20000] [--runs 3]

Starts its own etcd on loopback (temp dir, removed at the end) and prints one JSON line
per figure: {"name", "value", "unit", "reference": {...}}.

1. initial sync of N WorkloadEndpoints + M NetworkPolicies: the raw client's get_prefix of
   the same two prefixes vs Syncer start → "in-sync" (lazy models), and Syncer plus building
   every pydantic model. Each measured in a fresh child process (so peak RSS is its own);
   median of --runs.
2. watch throughput: E events already in etcd's history are replayed from a start revision,
   through the raw client's watch_prefix and through the Syncer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.kv import TxnOp
from felixpy.datastore.resources import ROOT, encode
from felixpy.datastore.syncer import Syncer
from felixpy.resources import NetworkPolicy, WorkloadEndpoint

WEP_PREFIX = ROOT + "workloadendpoints/"
POL_PREFIX = ROOT + "networkpolicies/"
GRPC_OPTS = [("grpc.max_receive_message_length", 512 * 1024 * 1024)]


def make_wep(i: int) -> WorkloadEndpoint:
    ns = f"ns-{i % 50}"
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": f"node{i % 100}-k8s-pod{i}-eth0",
                "namespace": ns,
                "labels": {"app": f"app-{i % 200}", "tier": "web", "projectcalico.org/namespace": ns},
            },
            "spec": {
                "node": f"node{i % 100}",
                "orchestrator": "k8s",
                "pod": f"pod{i}",
                "containerID": f"{i:064x}",
                "interfaceName": f"cali{i:011x}",
                "mac": "ee:ee:ee:ee:ee:ee",
                "ipNetworks": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"],
                "profiles": [f"kns.{ns}", "ksa.default"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
            },
        }
    )


def make_policy(i: int) -> NetworkPolicy:
    return NetworkPolicy.model_validate(
        {
            "metadata": {"name": f"policy-{i}", "namespace": f"ns-{i % 50}"},
            "spec": {
                "order": i,
                "selector": f"app == 'app-{i % 200}'",
                "types": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"selector": "tier == 'web'"},
                        "destination": {"ports": [80, 443]},
                    }
                ],
                "egress": [{"action": "Allow", "destination": {"nets": ["10.0.0.0/8"]}}],
            },
        }
    )


def populate(kv: EtcdKV, weps: int, policies: int) -> None:
    docs = [encode(make_wep(i)) for i in range(weps)] + [encode(make_policy(i)) for i in range(policies)]
    for start in range(0, len(docs), 100):
        kv.txn([TxnOp("put", k, v) for k, v in docs[start : start + 100]])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_raw(host: str, port: int) -> dict[str, float]:
    import pyetcd

    client = pyetcd.Etcd3Client(host=host, port=port, timeout=60, grpc_options=GRPC_OPTS)
    t0 = time.perf_counter()
    items = [item for p in (WEP_PREFIX, POL_PREFIX) for item in client.get_prefix(p)]
    t1 = time.perf_counter()
    decoded = [json.loads(v) for v, _meta in items]
    t2 = time.perf_counter()
    assert decoded
    return {"seconds": t1 - t0, "seconds_with_json": t2 - t0, "keys": len(items), "rss": peak_rss_mib()}


def child_syncer(endpoints: str) -> dict[str, float]:
    events: list[Any] = []
    done = threading.Event()
    kv = EtcdKV(endpoints, timeout=60)
    t0 = time.perf_counter()
    syncer = Syncer(
        kv,
        [WorkloadEndpoint, NetworkPolicy],
        on_updates=events.extend,
        on_status=lambda s: done.set() if s == "in-sync" else None,
    ).start()
    if not done.wait(120):
        raise RuntimeError("syncer did not reach in-sync")
    t1 = time.perf_counter()
    models = [e.obj for e in events]
    t2 = time.perf_counter()
    syncer.stop()
    kv.close()
    assert all(m is not None for m in models)
    return {"seconds": t1 - t0, "seconds_with_models": t2 - t0, "keys": len(events), "rss": peak_rss_mib()}


def run_child(mode: str, endpoints: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--endpoints", endpoints]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def emit(name: str, value: float, unit: str, reference: dict[str, Any]) -> None:
    print(
        json.dumps({"name": name, "value": round(value, 4), "unit": unit, "reference": reference}), flush=True
    )


def bench_initial_sync(endpoints: str, runs: int, weps: int, policies: int) -> None:
    raw = [run_child("raw", endpoints) for _ in range(runs)]
    syn = [run_child("syncer", endpoints) for _ in range(runs)]

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    raw_s, syn_s = med(raw, "seconds"), med(syn, "seconds")
    ref = {
        "raw_pyetcd_get_prefix_s": round(raw_s, 4),
        "raw_plus_json_s": round(med(raw, "seconds_with_json"), 4),
        "keys": int(raw[0]["keys"]),
        "weps": weps,
        "policies": policies,
        "runs": runs,
    }
    emit("datastore.initial_sync.syncer_lazy", syn_s, "s", {**ref, "ratio_vs_raw": round(syn_s / raw_s, 2)})
    full = med(syn, "seconds_with_models")
    emit(
        "datastore.initial_sync.syncer_all_models", full, "s", {**ref, "ratio_vs_raw": round(full / raw_s, 2)}
    )
    emit(
        "datastore.initial_sync.peak_rss.syncer_all_models",
        med(syn, "rss"),
        "MiB",
        {"raw_pyetcd_peak_rss_mib": round(med(raw, "rss"), 1)},
    )


def bench_watch(kv: EtcdKV, host: str, port: int, n_events: int) -> None:
    import pyetcd

    prefix = ROOT + "workloadendpoints/wbench/"
    start = kv.revision()
    body = encode(make_wep(1))[1]
    for base in range(0, n_events, 100):
        kv.txn([TxnOp("put", f"{prefix}w{i}", body) for i in range(base, min(n_events, base + 100))])

    client = pyetcd.Etcd3Client(host=host, port=port, timeout=60, grpc_options=GRPC_OPTS)
    t0 = time.perf_counter()
    it, cancel = client.watch_prefix(prefix, start_revision=start + 1)
    for seen, _ev in enumerate(it, start=1):
        if seen >= n_events:
            break
    raw_s = time.perf_counter() - t0
    cancel()
    client.close()

    class PinnedKV:  # the Syncer lists the empty state at ``start``, then replays the history
        def __getattr__(self, name: str) -> Any:
            return getattr(kv, name)

        def list(self, p: str, *, revision: int | None = None) -> Any:
            return kv.list(p, revision=revision or start)

    got: list[int] = []
    done = threading.Event()

    def on_updates(events: list[Any]) -> None:
        got.append(len(events))
        if sum(got) >= n_events:
            done.set()

    t0 = time.perf_counter()
    syncer = Syncer(PinnedKV(), [WorkloadEndpoint], on_updates=on_updates).start()
    done.wait(120)
    syn_s = time.perf_counter() - t0
    syncer.stop()
    raw_rate, syn_rate = n_events / raw_s, sum(got) / syn_s
    emit(
        "datastore.watch.syncer_events_per_s",
        syn_rate,
        "events/s",
        {
            "raw_pyetcd_watch_events_per_s": round(raw_rate),
            "events": n_events,
            "ratio_vs_raw": round(syn_rate / raw_rate, 2),
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weps", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=1_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=["raw", "syncer"])
    ap.add_argument("--endpoints")
    args = ap.parse_args()
    if args.child:
        host, port = args.endpoints.rsplit("//", 1)[1].rsplit(":", 1)
        res = child_raw(host, int(port)) if args.child == "raw" else child_syncer(args.endpoints)
        print(json.dumps(res))
        return

    from tests.fixtures.etcd import EtcdProcess

    base = Path(tempfile.mkdtemp(prefix="felixpy-bench-etcd-"))
    etcd = EtcdProcess(base)
    try:
        etcd.start()
        kv = EtcdKV(etcd.endpoints, timeout=60)
        populate(kv, args.weps, args.policies)
        bench_initial_sync(etcd.endpoints, args.runs, args.weps, args.policies)
        bench_watch(kv, "127.0.0.1", etcd.client_port, args.events)
        kv.close()
    finally:
        etcd.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"machine": {"nproc": os.cpu_count(), "uname_r": os.uname().release}}), file=sys.stderr)


if __name__ == "__main__":
    main()
