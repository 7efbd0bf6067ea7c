"""etcd failover benchmark: how long reads, writes and watches take to ride out a lost leader.

    .venv/bin/python -m bench.etcd_failover [--trials 20] [--timeout 2] [--failover 10] [--faults kill,pause]

Starts a real three-member etcd cluster on loopback (TLS, client certificates, password auth,
tests/fixtures/etcd_cluster.py; temp dir removed at the end). Each trial: three clients
(`EtcdKV`, all three endpoints, the leader listed first so they are connected to it), one
reading, one writing, one watching; then the leader is killed (SIGKILL) or stopped (SIGSTOP,
a partition: connections hang); at once the reader issues a get, the writer a put, and a
fourth client on a surviving member writes a key the watcher waits for. Timed from the fault:

* read: the get returns;  write: the put returns (applied once: its revision is read back);
* watch: the watcher receives the event written after the fault (a new leader had to be
  elected for it to exist, and the watch had to resume on another member).

Then the member is restarted/resumed and the cluster waited healthy. Prints one JSON line
per figure: {"name", "value", "unit", "reference": {...}} with p50 and p99 over the trials.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

from tests.fixtures.etcd_cluster import EtcdCluster, running_cluster


def _trial(
    cluster: EtcdCluster, fault: str, opts: argparse.Namespace, n: int, errors: list[str]
) -> dict[str, float]:
    leader = cluster.leader()
    order = [leader] + [i for i in range(3) if i != leader]
    first = ",".join(cluster.members[i].client_url for i in order)
    survivor = ",".join(cluster.members[i].client_url for i in order[1:])
    kw = {"timeout": opts.timeout, "failover_timeout": opts.failover}
    reader, writer, watcher = (cluster.kv(first, **kw) for _ in range(3))
    other = cluster.kv(survivor, **kw)
    out: dict[str, float] = {}
    try:
        reader.put(f"/bench/r{n}", b"x")
        watch = watcher.watch("/bench/w/", watcher.revision() + 1)
        key = f"/bench/w/{n}"
        t0 = 0.0

        def read() -> None:
            reader.get(f"/bench/r{n}")
            out["read"] = time.monotonic() - t0

        def write() -> None:
            rev = writer.put(f"/bench/p{n}", b"y")
            out["write"] = time.monotonic() - t0
            got = other.get(f"/bench/p{n}")
            assert got is not None and got.mod_revision == rev, "the write is not what was read back"

        def watched() -> None:
            for batch in watch:
                if any(e.key == key for e in batch):
                    out["watch"] = time.monotonic() - t0
                    return

        def guarded(f: Any, op: str) -> Any:
            def run() -> None:
                try:
                    f()
                except Exception as exc:  # a failed operation is a figure too: counted, printed
                    errors.append(f"{op}: {type(exc).__name__}: {exc}")

            return run

        threads = [
            threading.Thread(target=guarded(f, op), daemon=True)
            for f, op in ((read, "read"), (write, "write"), (watched, "watch"))
        ]
        (cluster.kill if fault == "kill" else cluster.pause)(leader)
        t0 = time.monotonic()
        for t in threads:
            t.start()
        guarded(lambda: other.put(key, b"z"), "put for the watch")()
        for t in threads:
            t.join(60)
        watch.close()
    finally:
        for kv in (reader, writer, watcher, other):
            kv.close()
        cluster.heal()
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def emit(name: str, value: float, unit: str, reference: dict[str, Any]) -> None:
    print(
        json.dumps({"name": name, "value": round(value, 4), "unit": unit, "reference": reference}), flush=True
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=2.0, help="EtcdKV per-request deadline (s)")
    ap.add_argument("--failover", type=float, default=10.0, help="EtcdKV failover_timeout (s)")
    ap.add_argument("--faults", default="kill,pause")
    args = ap.parse_args()
    print(json.dumps({"machine": {"nproc": os.cpu_count(), "load": os.getloadavg()}}), file=sys.stderr)
    with running_cluster() as cluster:
        for fault in args.faults.split(","):
            samples: dict[str, list[float]] = {"read": [], "write": [], "watch": []}
            errors: list[str] = []
            for n in range(args.trials):
                got = _trial(cluster, fault, args, n, errors)
                for op in samples:
                    if op in got:
                        samples[op].append(got[op])
            for op, values in samples.items():
                ref = {
                    "fault": f"leader {'SIGKILL' if fault == 'kill' else 'SIGSTOP'}",
                    "trials": args.trials,
                    "answered": len(values),
                    "errors": [e for e in errors if e.startswith(op)][:3],
                    "timeout_s": args.timeout,
                    "failover_timeout_s": args.failover,
                    "p99_s": round(_pct(values, 0.99), 4) if values else None,
                    "max_s": round(max(values), 4) if values else None,
                }
                emit(
                    f"etcd failover {op}, leader {fault}, p50",
                    statistics.median(values) if values else -1,
                    "s",
                    ref,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
