"""What a BFD state change means for a BGP peer's routes (pure; the engine acts on it).

- A session that was Up and goes Down for any reason but the peer's AdminDown (RFC 5882 §3.2:
  AdminDown is not a failure) is a *failure*: the engine removes the peer's routes at once and
  closes the BGP session. From then on the peer's routes are *held*: received and kept, not
  used, until BFD is Up again and a hold-down has passed.
- Flap damping: the hold-down is the session's ``holdDownTime`` for the first failure and doubles
  with each further failure within ``WINDOW`` seconds, at most ``MAX_FACTOR`` times it.
- A daemon's snapshot (the agent restarted and adopted it) sets states without acting: a
  session Up in the snapshot was never lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
WINDOW = 600.0
MAX_FACTOR = 64


@dataclass
class PeerBfd:
    hold_down: float = 5.0
    state: str = ""
    since: float = 0.0  # unix time of the last change
    diag: str = ""
    remote_cpi: bool = False
    failed: bool = False  # routes held
    hold_until: float | None = None  # monotonic; None while BFD is not Up again
    failures: list[float] = field(default_factory=list)  # monotonic times within WINDOW
    total_failures: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    peer: str
    remote_cpi: bool
    reason: str


class BfdGate:
    def __init__(self) -> None:
        self.peers: dict[str, PeerBfd] = {}
        self.daemon: dict[str, dict[str, Any]] = {}  # the daemon's last status rows, by peer
        self.drops: dict[str, int] = {}
        self.changed = False

    def configure(self, hold_downs: dict[str, float]) -> list[str]:
        """Peers that run BFD now (address → hold-down); returns held peers whose BFD was removed."""
        released = []
        for peer in list(self.peers):
            if peer not in hold_downs and self.peers.pop(peer).failed:
                released.append(peer)
        for peer, hold in hold_downs.items():
            self.peers.setdefault(peer, PeerBfd()).hold_down = hold
        self.changed = True
        return released

    def holds(self, peer: str) -> bool:
        p = self.peers.get(peer)
        return p is not None and p.failed

    def handle(self, doc: dict[str, Any], now: float) -> list[Failure]:
        """One message from the daemon; the failures the engine must act on."""
        if "status" in doc:
            self.daemon = {row["peer"]: row for row in doc["status"]}
            self.drops = dict(doc.get("drops", self.drops))
            if "hello" in doc:
                for row in doc["status"]:
                    p = self.peers.get(row["peer"])
                    if p is not None:
                        self._set(
                            p, row["state"], row.get("since", 0.0), row.get("diag", ""), now, row["peer"]
                        )
                        p.remote_cpi = bool(row.get("remote_cpi"))
            self.changed = True
            return []
        if doc.get("event") != "state":
            return []
        peer = doc["peer"]
        p = self.peers.get(peer)
        if p is None:
            return []
        p.remote_cpi = bool(doc.get("remote_cpi"))
        old, new = doc.get("old", ""), doc["state"]
        self.changed = True
        if old == "Up" and new == "Down" and doc.get("remote_state") != "AdminDown":
            self._set(p, new, doc.get("time", 0.0), doc.get("diag_text", ""), now, peer)
            p.failed, p.hold_until = True, None
            p.failures = [t for t in p.failures if now - t < WINDOW] + [now]
            p.total_failures += 1
            return [Failure(peer, p.remote_cpi, f"BFD down: {p.diag}")]
        self._set(p, new, doc.get("time", 0.0), doc.get("diag_text", ""), now, peer)
        return []

    def _set(self, p: PeerBfd, state: str, since: float, diag: str, now: float, peer: str = "") -> None:
        p.state, p.since, p.diag = state, since, diag
        if state == "Up" and p.failed and p.hold_until is None:
            hold = self.hold_for(p, now)
            p.hold_until = now + hold
            log.info(
                "bfd %s Up again: its routes held %.1fs more (flap damping: %d failures in %.0f min)",
                peer or "peer",
                hold,
                sum(1 for t in p.failures if now - t < WINDOW),
                WINDOW / 60,
            )

    def hold_for(self, p: PeerBfd, now: float) -> float:
        recent = sum(1 for t in p.failures if now - t < WINDOW)
        return p.hold_down * min(2 ** max(recent - 1, 0), MAX_FACTOR)

    def hold_ends(self) -> list[float]:
        """When each held peer's hold-down passes (``due`` releases it then)."""
        return [p.hold_until for p in self.peers.values() if p.failed and p.hold_until is not None]

    def due(self, now: float) -> list[str]:
        """Held peers whose hold-down has passed (their routes may come back)."""
        out = []
        for peer, p in self.peers.items():
            if p.failed and p.hold_until is not None and now >= p.hold_until:
                p.failed, p.hold_until = False, None
                out.append(peer)
                self.changed = True
        return out

    def rows(self, now: float) -> list[dict[str, Any]]:
        """One row per BFD peer for ``bgp-status.json`` (``felixctl node status``)."""
        out = []
        for peer, p in sorted(self.peers.items()):
            d = self.daemon.get(peer, {})
            held = ""
            if p.failed:
                held = "until BFD is Up" if p.hold_until is None else f"{max(p.hold_until - now, 0):.1f}s"
            out.append(
                {
                    "peer": peer,
                    "state": p.state or d.get("state", "Down"),
                    "since": p.since,
                    "mode": "multihop" if d.get("multihop") else "single-hop",
                    "interval_ms": round(d.get("tx_interval", 0.0) * 1000),
                    "detect_ms": round(d.get("detect_time", 0.0) * 1000),
                    "diag": p.diag,
                    "failures": p.total_failures,
                    "held": held,
                    "error": d.get("error", ""),
                }
            )
        return out
