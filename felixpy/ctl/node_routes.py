"""``felixctl node routes`` and ``felixctl node status --detail``: the BGP view to debug with.

Both read what the agent's BGP service keeps in its run directory (the status channel
``felixctl node status`` already reads): ``bgp-status.json`` (sessions, with hold time,
capabilities, graceful-restart state and counters) and ``bgp-routes.json`` (per peer: every
route it sent — the best path, accepted, or rejected with the reason — and what we advertise
to it; the routes felixpy's BGP installed in the kernel). The agent builds that view only when
asked: ``node routes`` touches ``bgp-routes.request`` and waits (at most 10 s) for a view written
after it (``--cached``: print the last one as it is). At most 5,000 routes per list.

Output: tables by default (``-o wide`` adds communities), ``-o json`` / ``-o yaml`` for the
documents themselves. Exit 1 when the agent is not running.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bgp.status import ROUTES_REQUEST, PeerStatus, agent_alive, read_routes, read_status
from felixpy.ctl.output import dump_json, dump_yaml, format_table

OUTPUTS = ("table", "wide", "json", "yaml")
REFRESH_TIMEOUT = 10.0  # how long node routes waits for the agent's fresh view
NOT_RUNNING = "felixpy is not running."


def register(node_sub: Any, find_dir: Any) -> None:
    routes = node_sub.add_parser(
        "routes",
        help="per BGP peer: routes received (best, accepted, or rejected and why), advertised; kernel routes",
    )
    routes.add_argument(
        "--run-dir", default=None, help="the agent's run directory (default $FELIXPY_RUN_DIR)"
    )
    routes.add_argument("--peer", default=None, help="only this peer (its address)")
    routes.add_argument("--prefix", default=None, help="only this prefix")
    routes.add_argument("-o", "--output", default="table", choices=OUTPUTS, help="output format")
    routes.add_argument(
        "--cached",
        action="store_true",
        help="print the last view written; do not ask the agent for a fresh one",
    )
    routes.set_defaults(func=lambda args: routes_command(args, find_dir))


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"


# --- node status --detail / -o ----------------------------------------------------------------------
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def status_document(doc: dict[str, Any]) -> dict[str, Any]:
    peers = []
    for p in doc["peers"]:
        item = {_camel(k): v for k, v in asdict(p).items()}  # camelCase, as the routes view
        item["capabilities"] = list(p.capabilities)
        item["sinceTime"] = _utc(p.since)
        peers.append(item)
    return {"running": True, "updated": _utc(float(doc.get("updated", 0))), "peers": peers}


def render_detail(peers: list[PeerStatus]) -> str:
    """One block per session: what ``node status`` shows, and what it does not."""
    blocks = []
    for p in peers:
        rejected = sum(p.routes_rejected.values())
        why = ", ".join(f"{k}: {v}" for k, v in sorted(p.routes_rejected.items()))
        rows = [
            ("State", f"{p.info} since {_utc(p.since)}"),
            ("Times Established", str(p.established)),
            ("Peer AS / local AS", f"{p.peer_as or '-'} / {p.local_as or '-'}"),
            ("Peer router ID", p.router_id or "-"),
            ("Hold time", f"{p.hold_time}s" if p.hold_time else "-"),
            ("Capabilities", ", ".join(p.capabilities) or "-"),
            ("Graceful restart", p.graceful_restart or "-"),
            (
                "Routes",
                f"received {p.routes_received}, accepted {p.routes_accepted}, "
                f"rejected {rejected}{f' ({why})' if why else ''}, advertised {p.routes_advertised}",
            ),
        ]
        width = max(len(k) for k, _ in rows) + 2
        title = f"Peer {p.address} ({p.name or '-'}, {p.type})"
        blocks.append("\n".join([title, *(f"  {(k + ':').ljust(width)}{v}" for k, v in rows)]))
    return "\n\n".join(blocks) if blocks else "No BGP peers."


# --- node routes ------------------------------------------------------------------------------------
def _path(route: dict[str, Any]) -> str:
    return " ".join(str(a) for a in route.get("asPath", [])) or "-"


def _communities(route: dict[str, Any]) -> str:
    return " ".join(route.get("communities", [])) or "-"


def render_routes(view: dict[str, Any], *, wide: bool = False) -> str:
    parts: list[str] = []
    for peer in view.get("peers", []):
        name = f" ({peer['name']})" if peer.get("name") else ""
        headers = ["prefix", "next hop", "as path", "status", "reason"]
        if wide:
            headers.insert(3, "communities")
        rows = []
        for r in peer["received"]:
            status = r["status"] + (" (stale)" if r.get("stale") else "")
            why = r["reason"]
            if not why and r["status"] == "accepted" and r.get("bestFrom"):
                why = "best path from " + ", ".join(r["bestFrom"])
            row = [r["prefix"], r["nextHop"], _path(r), status, why or "-"]
            if wide:
                row.insert(3, _communities(r))
            rows.append(row)
        parts.append(f"Routes received from {peer['peer']}{name}")
        parts.append(format_table(headers, rows) if rows else "None.")
        parts.append("")
        parts.append(f"Routes advertised to {peer['peer']}{name}")
        sent = [[a["prefix"], a["nextHop"], _path(a), _communities(a)] for a in peer["advertised"]]
        parts.append(
            format_table(["prefix", "next hop", "as path", "communities"], sent) if sent else "None."
        )
        if peer.get("truncated"):
            parts.append("(only the first routes are listed)")
        parts.append("")
    kernel = [
        [k["prefix"], ", ".join(k["via"]), " ".join(k["from"]) or "-", _metric(k)]
        for k in view.get("kernel", [])
    ]
    parts.append("Kernel routes installed by felixpy's BGP")
    parts.append(format_table(["prefix", "via", "best path from", "metric"], kernel) if kernel else "None.")
    return "\n".join(parts)


def _metric(kernel_route: dict[str, Any]) -> str:
    """The kernel metric: a BGPFilter setPriority's, else the default (32 IPv4, 1056 IPv6)."""
    metric = kernel_route.get("metric")
    if metric is not None:
        return f"{metric} (setPriority)"
    return "1056" if ":" in kernel_route["prefix"] else "32"


def select(view: dict[str, Any], *, peer: str | None, prefix: str | None) -> dict[str, Any]:
    peers = [p for p in view.get("peers", []) if peer is None or p["peer"] == peer]
    if prefix is not None:
        peers = [
            {
                **p,
                "received": [r for r in p["received"] if r["prefix"] == prefix],
                "advertised": [a for a in p["advertised"] if a["prefix"] == prefix],
            }
            for p in peers
        ]
    kernel = [k for k in view.get("kernel", []) if prefix is None or k["prefix"] == prefix]
    if peer is not None:
        kernel = [k for k in kernel if peer in k["from"]]
    return {"updated": _utc(float(view.get("updated", 0))), "peers": peers, "kernel": kernel}


def fresh_view(where: Path, timeout: float = REFRESH_TIMEOUT) -> dict[str, Any] | None:
    """Ask the agent for a view now (touch the request file) and wait, bounded, for one written
    after the request; the last one (with a note on stderr) when none comes in time."""
    asked = time.time()
    request = where / ROUTES_REQUEST
    try:
        request.touch()
        os.utime(request, (asked, asked))
    except OSError as exc:
        print(
            f"warning: cannot ask the agent for a fresh view ({exc}); showing the last one", file=sys.stderr
        )
        return read_routes(where)
    deadline = time.monotonic() + timeout
    view = read_routes(where)
    while time.monotonic() < deadline:
        if view is not None and float(view.get("updated", 0)) >= asked:
            return view
        time.sleep(0.1)
        view = read_routes(where)
    if view is not None:
        print(
            f"warning: the agent did not refresh its routes view within {timeout:g}s; "
            f"showing the one from {_utc(float(view.get('updated', 0)))}",
            file=sys.stderr,
        )
    return view


def routes_command(args: argparse.Namespace, find_dir: Any) -> int:
    where = find_dir(args.run_dir)
    if not agent_alive(read_status(where)):
        print(NOT_RUNNING)
        return 1
    view = read_routes(where) if args.cached else fresh_view(where)
    if view is None:
        print("felixpy's BGP has not written its routes view yet (bgp-routes.json); try again in a moment.")
        return 1
    if args.prefix is not None:
        try:
            args.prefix = str(ipaddress.ip_network(args.prefix, strict=False))
        except ValueError:
            print(f"error: --prefix: {args.prefix!r} is not a CIDR (e.g. 10.65.1.0/26)")
            return 1
    known = [p["peer"] for p in view.get("peers", [])]
    if args.peer is not None and args.peer not in known:
        print(
            f"error: --peer: {args.peer} is not a BGP peer of this node (peers: {', '.join(known) or 'none'})"
        )
        return 1
    chosen = select(view, peer=args.peer, prefix=args.prefix)
    if args.output == "json":
        print(dump_json(chosen))
    elif args.output == "yaml":
        print(dump_yaml(chosen), end="")
    else:
        print(render_routes(chosen, wide=args.output == "wide"))
    return 0
