"""A CalicoNodeStatus ``status`` from the BGP service's state (pure), in Calico's shape.

Calico's calico-node fills ``status`` for each CalicoNodeStatus whose ``spec.node`` is its node,
with the classes ``spec.classes`` asks for, every ``spec.updatePeriodSeconds`` (0: written once,
never refreshed); ``status.lastUpdated`` says when. felixpy's BGP speaker is ExaBGP driven by the
agent rather than BIRD, and reports under Calico's names so that clients reading the resource
work unchanged:

* ``agent.birdV4`` / ``agent.birdV6`` — the BGP service per IP version: ``state`` Ready when it is
  running (NotReady otherwise), ``version`` "felixpy <version> (ExaBGP)", ``routerID``,
  ``lastBootTime`` (the service started), ``lastReconfigurationTime`` (its last configuration);
  a family only when the node has an address of it;
* ``bgp`` — Established / not Established counts per family, and each peer's ``peerIP``, ``type``
  (NodeMesh, NodePeer, GlobalPeer), ``state`` (BGP state) and ``since``;
* ``routes`` — per family: ``FIB`` entries (what felixpy's BGP installed in the kernel, with the
  gateway, interface and the peer whose path won) and ``RIB`` entries (every best path: learned
  from a peer, ``learnedFrom.sourceType`` NodeMesh or BGPPeer; and this node's own exports,
  sourceType Static as BIRD's static blackhole routes are in Calico).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bgp.status import PeerStatus

CLASSES = ("Agent", "BGP", "Routes")
PEER_TYPES = {"node-to-node mesh": "NodeMesh", "global": "GlobalPeer", "node specific": "NodePeer"}
BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")


def timestamp(ts: float) -> str:
    """RFC 3339, UTC, whole seconds (metav1.Time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _family(address: str) -> int:
    return 6 if ":" in address else 4


def _peer(p: PeerStatus) -> dict[str, Any]:
    state = p.info.split(" ", 1)[0] if p.info else "Idle"
    kind = PEER_TYPES.get(p.type.removesuffix(" (RR client)"), "NodePeer")
    return {
        "peerIP": p.address,
        "type": kind,
        "state": state if state in BGP_STATES else "Idle",
        "since": timestamp(p.since) if p.since else "",
    }


def _source(peer: str, peer_types: Mapping[str, str]) -> dict[str, Any]:
    kind = "NodeMesh" if peer_types.get(peer) == "NodeMesh" else "BGPPeer"
    return {"sourceType": kind, "peerIP": peer}


def build_status(
    classes: Sequence[str],
    *,
    now: float,
    running: bool,
    version: str,
    router_id: str,
    families: Iterable[int],
    started: float,
    configured: float,
    peers: Sequence[PeerStatus],
    view: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``status`` for the ``classes`` asked (the others are left out). ``view``: the routes view
    (``Engine.routes_view``, with ``exports``), None when not written yet (no routes)."""
    out: dict[str, Any] = {"lastUpdated": timestamp(now)}
    wanted = set(classes)
    if "Agent" in wanted:
        agent: dict[str, Any] = {}
        for family in sorted(set(families)):
            agent[f"birdV{family}"] = {
                "state": "Ready" if running else "NotReady",
                "version": version,
                "routerID": router_id,
                "lastBootTime": timestamp(started) if started else "",
                "lastReconfigurationTime": timestamp(configured) if configured else "",
            }
        out["agent"] = agent
    if "BGP" in wanted:
        bgp: dict[str, Any] = {}
        for family in (4, 6):
            mine = [_peer(p) for p in peers if _family(p.address) == family]
            up = sum(1 for p in mine if p["state"] == "Established")
            bgp[f"numberEstablishedV{family}"] = up
            bgp[f"numberNotEstablishedV{family}"] = len(mine) - up
            if mine:
                bgp[f"peersV{family}"] = mine
        out["bgp"] = bgp
    if "Routes" in wanted:
        out["routes"] = _routes(view or {}, {p.address: _peer(p)["type"] for p in peers})
    return out


def _routes(view: Mapping[str, Any], peer_types: Mapping[str, str]) -> dict[str, Any]:
    by_family: dict[int, list[dict[str, Any]]] = {4: [], 6: []}
    for k in view.get("kernel", []):
        first = (k.get("via") or [""])[0]
        gateway, _, dev = first.partition(" dev ")
        entry: dict[str, Any] = {
            "type": "FIB",
            "destination": k["prefix"],
            "gateway": gateway,
            "interface": dev,
        }
        if k.get("from"):
            entry["learnedFrom"] = _source(k["from"][0], peer_types)
        by_family[_family(k["prefix"])].append(entry)
    for peer in view.get("peers", []):
        for r in peer.get("received", []):
            if r.get("status") != "best":
                continue
            by_family[_family(r["prefix"])].append(
                {
                    "type": "RIB",
                    "destination": r["prefix"],
                    "gateway": r.get("nextHop", ""),
                    "interface": "",
                    "learnedFrom": _source(peer["peer"], peer_types),
                }
            )
    for prefix in view.get("exports", []):
        by_family[_family(prefix)].append(
            {
                "type": "RIB",
                "destination": prefix,
                "gateway": "",
                "interface": "",
                "learnedFrom": {"sourceType": "Static"},
            }
        )
    return {f"routesV{f}": entries for f, entries in by_family.items() if entries}
