"""The reflector's Python alone (no processes, no root): 10,000 routes from one peer through a
route reflector's engine to 4 clients, stage by stage, then the same peer withdrawing them all.
One JSON line per figure.

Stages, each in process CPU time with cold caches: ``decode`` (the JSON lines ExaBGP's wire patch
writes → ``Update`` events), ``handle`` (import filters + RIB), ``flush`` (reflection, Adj-RIB-Out,
UPDATE encoding, the commands for ExaBGP); and apart from the total, ``routes_view`` (what
``felixctl node routes`` asks the agent for: the view of every peer's routes, serialised; capped
at 5,000 routes per list, the file write left out); ``withdraw_*``: the same three stages for
the UPDATEs withdrawing every route. The engine runs with the agent's interpreter settings
(``felixpy.interpreter``) unless ``--gc-default``. Every client must receive every route, or the
benchmark fails, and every client must then have lost every route. Left out: ExaBGP, the
sockets, kernel route writes (``fib`` is None here), the service loop. See docs/perf-bgp.md §2.

    .venv/bin/python -m bench.bgp_engine [--routes 10000] [--runs 5] [--gc-default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bgp import exabgp_api as api
from bgp import route as route_module
from bgp import wire
from bgp.engine import Engine
from bgp.route import PathAttrs
from bgp.service import build_plan
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec

REFLECTOR, SOURCE = "10.0.0.1", "10.0.0.2"
CLIENTS = ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def reflector() -> tuple[Engine, list[str]]:
    bgp = NodeBGPSpec(ipv4_address=f"{REFLECTOR}/24", routeReflectorClusterID="244.0.0.1")
    nodes = [Node(metadata=ObjectMeta(name="rr"), spec=NodeSpec(bgp=bgp))]
    mesh_off = BGPConfiguration(
        metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False)
    )
    peers = [
        BGPPeer(metadata=ObjectMeta(name=f"b{i}"), spec=BGPPeerSpec(node="rr", peerIP=a, as_number=64512))
        for i, a in enumerate([SOURCE, *CLIENTS])
    ]
    pools = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.64.0.0/10"))]
    plan = build_plan("rr", nodes=nodes, bgp_configs=[mesh_off], peers=peers, pools=pools, local_blocks=[])
    sent: list[str] = []
    engine = Engine(sent.extend, None, now=0.0, wall=lambda: 1000.0, wire=True)
    engine.configure(plan.desired)
    engine.handle(api.BridgeNote(0), 0)
    for peer in [SOURCE, *CLIENTS]:
        engine.handle(api.Open(peer, peer, 64512, 120), 0)
        engine.handle(api.Negotiated(peer, True, False), 0)
        engine.handle(api.StateChange(peer, "up", local=REFLECTOR), 0)
    sent.clear()
    return engine, sent


def exabgp_lines(prefixes: list[str], *, withdraw: bool = False) -> list[str]:
    """What ``bgp.exabgp_wire`` writes for the UPDATEs a peer sends with these prefixes
    (announcing them, or withdrawing them)."""
    address = {"local": REFLECTOR, "peer": SOURCE}
    asn = {"local": 64512, "peer": 64512}
    messages = (
        wire.encode_withdraw(prefixes)
        if withdraw
        else wire.encode_announce(SOURCE, PathAttrs(local_pref=100), prefixes)
    )
    return [
        json.dumps(
            {
                "type": "update",
                "neighbor": {
                    "address": address,
                    "asn": asn,
                    "direction": "receive",
                    "message": {"category": 2, "header": "0x" + m[:19].hex(), "body": "0x" + m[19:].hex()},
                },
            }
        )
        for m in messages
    ]


def cold_caches() -> None:
    wire._prefix_text.cache_clear()
    wire._NLRI.clear()
    wire._V4_SEEN.clear()
    route_module.KEY_CACHE.clear()
    route_module.normalize_prefix.cache_clear()


def received(sent: list[str], client: str, *, withdrawn: bool = False) -> set[str]:
    out: set[str] = set()
    for line in sent:
        head, found, hexes = line.partition(" felixpy-wire ")
        if found and client in head.replace(",", " ").split():
            for word in hexes.split():
                update = wire.decode_update(bytes.fromhex(word)[19:])
                out.update(update.withdraw if withdrawn else update.announce)
    return out


def stages(engine: Engine, lines: list[str]) -> tuple[float, float, float]:
    """Process CPU time of decode, handle and flush for these ExaBGP lines."""
    t0 = time.process_time()
    events = [api.parse_line(line) for line in lines]
    t1 = time.process_time()
    for event in events:
        engine.handle(event, 0)
    t2 = time.process_time()
    engine.flush()
    t3 = time.process_time()
    return t1 - t0, t2 - t1, t3 - t2


def one_run(lines: list[str], gone: list[str], prefixes: set[str]) -> dict[str, float]:
    engine, sent = reflector()
    cold_caches()
    decode, handle, flush = stages(engine, lines)
    t3 = time.process_time()
    view = json.dumps(engine.routes_view())  # felixctl node routes: built and serialised on request
    t4 = time.process_time()
    for client in CLIENTS:
        if received(sent, client) != prefixes:
            raise SystemExit(f"client {client} did not get every route")
    if view.count('"status": "best"') != min(len(prefixes), 5000):  # 5,000 per list at most
        raise SystemExit("the routes view does not list every route as best")
    sent.clear()
    w_decode, w_handle, w_flush = stages(engine, gone)
    for client in CLIENTS:
        if received(sent, client, withdrawn=True) != prefixes:
            raise SystemExit(f"client {client} did not lose every route")
    if len(engine.rib) or any(engine.adv.count(c) for c in CLIENTS):
        raise SystemExit("routes left in the RIB or the Adj-RIB-Out after the withdrawal")
    return {
        "decode": decode,
        "handle": handle,
        "flush": flush,
        "total": decode + handle + flush,
        "routes_view": t4 - t3,
        "withdraw_decode": w_decode,
        "withdraw_handle": w_handle,
        "withdraw_flush": w_flush,
        "withdraw_total": w_decode + w_handle + w_flush,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gc-default", action="store_true", help="CPython's GC and switch interval")
    args = parser.parse_args()
    if not args.gc_default:
        from felixpy import interpreter

        interpreter.tune()
    prefixes = [f"10.{64 + i // 1024}.{(i // 4) % 256}.{(i % 4) * 64}/26" for i in range(args.routes)]
    lines, gone = exabgp_lines(prefixes), exabgp_lines(prefixes, withdraw=True)
    runs = [one_run(lines, gone, set(prefixes)) for _ in range(args.runs)]
    for stage in runs[0]:
        values = sorted(r[stage] * 1000 for r in runs)
        reference = "BIRD 2: the whole reflection, network included, 15-32 ms (bench/bench_bgp.py)"
        if stage.startswith("withdraw"):
            reference = "BIRD 2: the whole withdrawal, network included (bench/bench_bgp.py)"
        if stage == "routes_view":  # not part of the total: only when someone asks
            reference = "only on request (felixctl node routes, CalicoNodeStatus Routes); file write left out"
        doc = {
            "name": f"bgp_engine_{stage}",
            "value": round(statistics.median(values), 1),
            "unit": "ms",
            "reference": reference,
            "min": round(values[0], 1),
            "max": round(values[-1], 1),
            "routes": args.routes,
            "clients": len(CLIENTS),
        }
        print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
