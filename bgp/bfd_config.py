"""Which BGP sessions run BFD, with which timers: resources → ``BfdSpec`` → the daemon's sessions (pure).

Sessions whose other end is a node (node-to-node mesh, route reflectors and their clients,
peerSelector peerings, a peerIP that is a node's address) follow the BGPConfiguration's
``nodePeerFailureDetectionMode`` (unset: ``BFD``) unless their BGPPeer sets
``failureDetectionMode``; other peers run BFD only when their BGPPeer asks. Timers: the BGPPeer's
``bfd``, then the BGPConfiguration's ``nodePeerBFD``, then 300 ms / 300 ms x 3, idle 1 s, hold-down 5 s.

Modes: ``BFD`` — single-hop when the peer is on one of our links, else RFC 5883 multihop;
``BFDIfDirectlyConnected`` (Calico Enterprise) — single-hop only, no session otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from felixpy.resources.bgp import BFDSettings, BGPConfiguration
from felixpy.resources.kubecontrollers import parse_duration

DEFAULT_MODE = "BFD"
DEFAULTS = {
    "minimum_recv_interval": "300ms",
    "minimum_send_interval": "300ms",
    "idle_send_interval": "1s",
    "hold_down_time": "5s",
}
DEFAULT_MULTIPLIER = 3


@dataclass(frozen=True, slots=True)
class BfdSpec:
    mode: str  # "auto" (BFD) | "direct" (BFDIfDirectlyConnected)
    min_rx: int = 300_000  # µs
    min_tx: int = 300_000
    idle_tx: int = 1_000_000
    multiplier: int = DEFAULT_MULTIPLIER
    hold_down: float = 5.0  # s


def _us(text: str) -> int:
    return round(parse_duration(text) * 1e6)


def resolve(
    mode: str | None,
    settings: BFDSettings | None,
    *,
    node: bool,
    config: BGPConfiguration | None,
) -> BfdSpec | None:
    """A session's BFD: ``mode``/``settings`` from its BGPPeer (None for mesh sessions)."""
    spec = config.spec if config is not None else None
    if mode is None and node:
        mode = (spec.node_peer_failure_detection_mode if spec is not None else None) or DEFAULT_MODE
    if mode is None or mode == "None":
        return None
    layers = [s for s in (settings, spec.node_peer_bfd if spec else None) if s is not None]

    def pick(name: str) -> Any:
        return next((getattr(s, name) for s in layers if getattr(s, name) is not None), DEFAULTS.get(name))

    multiplier = next((s.multiplier for s in layers if s.multiplier is not None), DEFAULT_MULTIPLIER)
    return BfdSpec(
        mode="direct" if mode == "BFDIfDirectlyConnected" else "auto",
        min_rx=_us(pick("minimum_recv_interval")),
        min_tx=_us(pick("minimum_send_interval")),
        idle_tx=_us(pick("idle_send_interval")),
        multiplier=multiplier,
        hold_down=parse_duration(pick("hold_down_time")),
    )


def daemon_sessions(peers: Any) -> list[dict[str, Any]]:
    """The daemon's ``configure`` list for the PeerSpecs that run BFD (sorted, stable)."""
    out = []
    for p in sorted(peers, key=lambda p: p.address):
        bfd: BfdSpec | None = p.bfd
        if bfd is None:
            continue
        out.append(
            {
                "peer": p.address,
                "local": p.local_address,
                "mode": bfd.mode,
                "min_tx": bfd.min_tx,
                "min_rx": bfd.min_rx,
                "idle_tx": bfd.idle_tx,
                "multiplier": bfd.multiplier,
            }
        )
    return out
