"""Session status: the table the service keeps and ``felixctl node status`` prints.

The service writes ``<run_dir>/bgp-status.json`` (atomically, on every change):
``{"pid": <agent pid>, "running": true, "updated": <unix time>, "peers": [PeerStatus...]}``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from felixpy.private_files import PRIVATE, write_file

STATUS_FILE = "bgp-status.json"
BGP_STATE_INFO = {"up": "Established", "connected": "OpenSent", "down": "Active", "": "Active"}


@dataclass(frozen=True, slots=True)
class PeerStatus:
    address: str
    type: str  # "node-to-node mesh" | "global" | "node specific" (+ " (RR client)")
    state: str  # Calico/BIRD protocol state: "up" | "start"
    since: float  # unix time of the last state change
    info: str  # BGP state: Established | Active | OpenSent ... (+ reason)
    name: str = ""
    routes_received: int = 0
    # the detail (felixctl node status --detail, node routes, metrics, CalicoNodeStatus)
    routes_accepted: int = 0
    routes_rejected: dict[str, int] = field(default_factory=dict)  # by kind of reason
    routes_advertised: int = 0
    established: int = 0  # times the session reached Established since the agent started
    hold_time: int = 0  # the peer's offer (the session uses the smaller of it and ours)
    capabilities: tuple[str, ...] = ()  # the peer's OPEN
    graceful_restart: str = ""
    peer_as: int = 0
    local_as: int = 0
    router_id: str = ""

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


def peer_status(
    address: str, *, kind: str, name: str, exa_state: str, since: float, reason: str = "", routes: int = 0
) -> PeerStatus:
    info = BGP_STATE_INFO.get(exa_state, exa_state.capitalize())
    if reason and exa_state == "down":
        info = f"{info} {reason}"
    return PeerStatus(address, kind, "up" if exa_state == "up" else "start", since, info, name, routes)


def write_status(
    run_dir: Path, peers: list[PeerStatus], *, running: bool = True, bfd: list[dict[str, Any]] | None = None
) -> None:
    doc: dict[str, Any] = {
        "pid": os.getpid(),
        "running": running,
        "updated": time.time(),
        "peers": [asdict(p) for p in peers],
    }
    if bfd:  # per-peer BFD rows (bgp.bfd_gate), printed by felixctl node status (issue 19)
        doc["bfd"] = bfd
    path = Path(run_dir) / STATUS_FILE
    write_file(path, json.dumps(doc, indent=1), PRIVATE)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    known = set(PeerStatus.__dataclass_fields__)
    peers: list[PeerStatus] = []
    for p in doc.get("peers", []):
        fields: dict[str, Any] = {k: v for k, v in p.items() if k in known}
        fields["capabilities"] = tuple(fields.get("capabilities", ()))
        peers.append(PeerStatus(**fields))
    doc["peers"] = peers
    return doc


ROUTES_FILE = "bgp-routes.json"
ROUTES_REQUEST = "bgp-routes.request"  # felixctl node routes touches it to ask for a fresh view


def write_routes(run_dir: Path, view: dict[str, Any], *, updated: float | None = None) -> None:
    """The routes view (``Engine.routes_view``) for ``felixctl node routes``."""
    doc = {"pid": os.getpid(), "updated": time.time() if updated is None else updated, **view}
    write_file(Path(run_dir) / ROUTES_FILE, json.dumps(doc, indent=1), PRIVATE)


def read_routes(run_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(run_dir) / ROUTES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def agent_alive(doc: dict[str, Any] | None) -> bool:
    if not doc or not doc.get("running"):
        return False
    pid = int(doc.get("pid", 0))
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return pid > 0


def format_since(ts: float) -> str:
    """BIRD style: HH:MM:SS today, else the date."""
    if not ts:
        return ""
    local = time.localtime(ts)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d", local)


def render_table(rows: list[list[str]], headers: list[str]) -> str:
    """A go-pretty default-style box table, as calicoctl prints."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c.ljust(w)} " for c, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def format_peers(peers: list[PeerStatus], family: int = 4) -> str:
    selected = [p for p in peers if p.family == family]
    if not selected:
        return f"No IPv{family} peers found."
    rows = [[p.address, p.type, p.state, format_since(p.since), p.info] for p in selected]
    return render_table(rows, ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"])
