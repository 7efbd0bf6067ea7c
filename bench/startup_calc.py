"""The agent's start-up calc in-process: the etcd snapshot of bench.e2e_startup's x10 as the syncer
delivers it (stored JSON bytes, lazy events) -> the calc graph with its policy stage (one compiler
per IP family, as the agent builds them with IPv6 on) -> the first complete ``flush()``.

    .venv/bin/python -m bench.startup_calc [--local 1000] [--remote 10000] [--policies 500]
                                           [--families 2] [--repeat 3] [--profile out.txt]

Prints CPU seconds (process time; min and median of ``--repeat`` fresh runs) for the whole path and
for its two parts: ``feed`` (decoding each event's model and ``CalcGraph.on_resource``) and ``flush``
(the compilers' first ``dirty()`` and the routing/BGP stages' output). The whole path's line also
has ``first``, the first run: the one the agent always pays, as it touches ~100 MB the process never
had (~25,000 page faults; 0.2-0.5 s more than the later runs, loaded). Plus the number of updates and
of rules emitted (so a change that loses output shows). ``--profile FILE`` writes a cProfile of one
extra run, sorted by cumulative time.

Pure: no etcd (the values are made by ``felixpy.datastore.resources.encode``, exactly what etcd
holds), no kernel, no imports timed (they are done before the first run). Leaves out: the etcd
list itself (gRPC), the writer thread's queue, the dataplane writes (iptables/ipset restores,
routes), BGP.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import pstats
import statistics
import time
from typing import Any

from bench.e2e_node import endpoint_ip, endpoint_labels, policy_spec
from felixpy import interpreter
from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import ChainsUpdate, Update
from felixpy.datastore.resources import LazyResourceEvent, encode, parse_key
from felixpy.resources import BGPPeer, GlobalNetworkPolicy, IPPool, Node, Tier, WorkloadEndpoint
from felixpy.resources.base import Resource
from felixpy.runtime.sync import SYNCED_KINDS
from felixpy.runtime.writer import InSyncMsg, Msg, NullDataplane, ResourceMsg, Writer
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler

NODE = "e2e-node"


def _wep(name: str, iface: str, ip: str, labels: dict[str, str], node: str) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "bench", "labels": labels},
            "spec": {
                "node": node, "pod": name, "endpoint": "eth0", "interfaceName": iface,
                "ipNetworks": [f"{ip}/32"], "profiles": ["kns.bench"],
            },
        }
    )  # fmt: skip


def snapshot(local: int, remote: int, policies: int) -> list[tuple[str, bytes]]:
    """(key, stored value) of everything bench.e2e_startup --size x10 --bgp holds in etcd."""
    objs: list[Resource] = [
        IPPool.model_validate({"metadata": {"name": "default-ipv4-ippool"},
                               "spec": {"cidr": "10.240.0.0/14", "ipipMode": "Never", "natOutgoing": True}}),
        IPPool.model_validate({"metadata": {"name": "bench-remote"},
                               "spec": {"cidr": "10.64.0.0/12", "blockSize": 26, "ipipMode": "Never",
                                        "vxlanMode": "Never"}}),
        Node.model_validate({"metadata": {"name": NODE}, "spec": {"bgp": {"ipv4Address": "10.77.0.2/24"}}}),
        BGPPeer.model_validate({"metadata": {"name": "bench-bird"},
                                "spec": {"peerIP": "10.78.0.2", "asNumber": 64512}}),
        Tier.model_validate({"metadata": {"name": "default"}, "spec": {"order": 1000000}}),
    ]  # fmt: skip
    objs += [_wep(f"ep{i}", f"calie{i:05d}", endpoint_ip(i), endpoint_labels(i), NODE) for i in range(local)]
    objs += [
        _wep(
            f"rm{i}",
            f"calirm{i:05d}",
            f"10.243.{i // 250}.{i % 250 + 1}",
            endpoint_labels(i),
            f"remote-{i % 50}",
        )
        for i in range(remote)
    ]
    objs += [
        GlobalNetworkPolicy.model_validate({"metadata": {"name": f"pol{j}"}, "spec": policy_spec(j)})
        for j in range(policies)
    ]
    return [encode(o) for o in objs]


def events(stored: list[tuple[str, bytes]]) -> list[LazyResourceEvent]:
    """The syncer's snapshot: lazy put events, kind by kind in SYNCED_KINDS order."""
    by_kind: dict[Any, list[LazyResourceEvent]] = {}
    for rev, (key, value) in enumerate(stored, start=10):
        parsed = parse_key(key)
        assert parsed is not None
        kind, ns, name = parsed
        by_kind.setdefault(kind, []).append(LazyResourceEvent("put", kind, name, ns, value, rev))
    return [ev for kind in SYNCED_KINDS for ev in by_kind.get(kind, [])]


def graph(families: int) -> CalcGraph:
    compilers = [PolicyCompiler(NODE, config=ChainConfig(version=v)) for v in (4, 6)[:families]]
    return CalcGraph(NODE, wireguard=True, policy=PolicyCalc(compilers), bgp=True)


class _Kept(NullDataplane):
    """A dataplane that keeps what the writer applies (no kernel)."""

    def __init__(self) -> None:
        self.updates: list[Update] = []

    def apply(self, updates: list[Update]) -> None:
        self.updates += updates


def digest(updates: list[Update]) -> str:
    """A hash of the output, independent of set and dict order (compare trees with the same output)."""
    return hashlib.sha256("\n".join(sorted(_canon(u) for u in updates)).encode()).hexdigest()[:16]


def _canon(x: Any) -> str:
    if isinstance(x, frozenset | set):
        return "{" + ",".join(sorted(_canon(v) for v in x)) + "}"
    if isinstance(x, dict):
        return "{" + ",".join(sorted(f"{_canon(k)}:{_canon(v)}" for k, v in x.items())) + "}"
    if isinstance(x, list | tuple):
        return "[" + ",".join(_canon(v) for v in x) + "]"
    if hasattr(x, "__dataclass_fields__"):
        return type(x).__name__ + _canon({f: getattr(x, f) for f in x.__dataclass_fields__})
    return repr(x)


def run(stored: list[tuple[str, bytes]], families: int) -> tuple[float, float, int, int]:
    """One start-up through the agent's writer loop (its batches, its first commit at in-sync)."""
    evs = events(stored)
    kept = _Kept()
    writer = Writer(graph(families), kept, hold_gc=True)  # as the agent's
    msgs: list[Msg] = []
    for ev in evs:
        kind: Any = ev.kind
        msgs.append(ResourceMsg(kind.KIND, (ev.namespace or "", ev.name), None, ev.revision, event=ev))
    t0 = time.process_time()
    for i in range(0, len(msgs), writer.max_batch):
        writer._process(msgs[i : i + writer.max_batch])
    t1 = time.process_time()
    writer._process([InSyncMsg()])
    t2 = time.process_time()
    assert writer.ready
    rules = sum(len(c.rules) for u in kept.updates if isinstance(u, ChainsUpdate) for c in u.chains)
    run.digest = digest(kept.updates)  # type: ignore[attr-defined]
    return t1 - t0, t2 - t1, len(kept.updates), rules


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=1000)
    ap.add_argument("--remote", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--families", type=int, default=2, choices=(1, 2))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile")
    args = ap.parse_args()
    stored = snapshot(args.local, args.remote, args.policies)
    samples = []
    for _ in range(args.repeat):
        gc.collect()
        gc.freeze()  # as the agent does before it syncs (felixpy.interpreter.tune)
        gc.set_threshold(interpreter.YOUNG_GENERATION, 50, 100)
        samples.append(run(stored, args.families))
    ref = f"local={args.local} remote={args.remote} policies={args.policies} families={args.families}"
    for name, idx in (("startup_calc_feed", 0), ("startup_calc_flush", 1)):
        vals = [s[idx] for s in samples]
        print(json.dumps({"name": name, "value": round(min(vals), 3), "unit": "s cpu",
                          "median": round(statistics.median(vals), 3), "reference": ref}))  # fmt: skip
    totals = [s[0] + s[1] for s in samples]
    print(json.dumps({"name": "startup_calc_total", "value": round(min(totals), 3), "unit": "s cpu",
                      "median": round(statistics.median(totals), 3), "first": round(totals[0], 3),
                      "updates": samples[0][2],
                      "rules": samples[0][3], "digest": run.digest,  # type: ignore[attr-defined]
                      "reference": ref}))  # fmt: skip
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(stored, args.families)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(60)
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(40)
        with open(args.profile, "w") as f:
            f.write(buf.getvalue())


if __name__ == "__main__":
    main()
