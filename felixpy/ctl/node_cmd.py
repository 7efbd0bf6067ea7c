"""``felixctl node status``: is the agent running, and its BGP sessions, in calicoctl's shape
(``--detail``, ``-o json|yaml``: felixpy.ctl.node_routes; ``felixctl node routes`` is there too);
``felixctl node check``: this node's orphaned workload endpoints (felixpy.ctl.node_check).

Reads ``bgp-status.json``, which the agent's BGP service keeps in its run directory
(``--run-dir``, else ``$FELIXPY_RUN_DIR``, else /var/run/felixpy; a ``bgp/`` subdirectory
of it is looked at too).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bgp.bfd_status import format_bfd
from bgp.status import STATUS_FILE, agent_alive, format_peers, read_status
from felixpy.ctl import node_check, node_routes, node_system
from felixpy.ctl.output import dump_json, dump_yaml

DEFAULT_RUN_DIR = "/var/run/felixpy"


def register(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="node commands (status, check)")
    node_sub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    node_sub.required = True
    status = node_sub.add_parser("status", help="show the agent's state and its BGP sessions")
    status.add_argument(
        "--run-dir", default=None, help="the agent's run directory (default $FELIXPY_RUN_DIR)"
    )
    status.add_argument(
        "--detail",
        action="store_true",
        help="per session: hold time, capabilities, graceful restart, counters",
    )
    status.add_argument("-o", "--output", default="table", choices=("table", "json", "yaml"))
    status.set_defaults(func=status_command)
    node_check.register(node_sub)
    node_routes.register(node_sub, find_status_dir)
    node_system.register(node_sub, status_text=status_text)


def find_status_dir(run_dir: str | None) -> Path:
    base = Path(run_dir or os.environ.get("FELIXPY_RUN_DIR") or DEFAULT_RUN_DIR)
    for candidate in (base, base / "bgp"):
        if (candidate / STATUS_FILE).exists():
            return candidate
    return base


def render_status(doc: dict[str, Any] | None) -> tuple[str, int]:
    """The text calicoctl would print, and the exit code."""
    if not agent_alive(doc):
        return "felixpy is not running.", 1
    assert doc is not None
    peers = doc["peers"]
    parts = ["felixpy is running.", "", "IPv4 BGP status", format_peers(peers, 4), ""]
    if any(p.family == 6 for p in peers):
        parts += ["IPv6 BGP status", format_peers(peers, 6), ""]
    if doc.get("bfd"):
        parts += ["BFD status", format_bfd(doc["bfd"]), ""]
    return "\n".join(parts), 0


def status_text(run_dir: str | None) -> str:
    """What ``node status`` prints (``node diags`` records it)."""
    return render_status(read_status(find_status_dir(run_dir)))[0] + "\n"


def status_command(args: argparse.Namespace) -> int:
    doc = read_status(find_status_dir(args.run_dir))
    output = getattr(args, "output", "table")
    if output != "table" and agent_alive(doc):
        assert doc is not None
        data = node_routes.status_document(doc)
        print(dump_json(data) if output == "json" else dump_yaml(data), end="\n" if output == "json" else "")
        return 0
    text, code = render_status(doc)
    if code == 0 and getattr(args, "detail", False):
        assert doc is not None
        text += "\n" + node_routes.render_detail(doc["peers"]) + "\n"
    print(text)
    return code
