"""``felixctl node status``'s BFD table, from the ``bfd`` rows of ``bgp-status.json`` (pure)."""

from __future__ import annotations

from typing import Any

from bgp.status import format_since, render_table

HEADERS = ["PEER ADDRESS", "BFD STATE", "SINCE", "MODE", "INTERVAL", "DETECT", "FAILURES", "INFO"]


def format_bfd(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No BFD sessions."
    table = []
    for r in rows:
        info = r.get("error") or (f"routes held {r['held']}" if r.get("held") else "")
        if not info and r.get("diag") not in (None, "", "none"):
            info = f"last diag: {r['diag']}"
        table.append(
            [
                str(r["peer"]),
                str(r.get("state", "")),
                format_since(float(r.get("since") or 0.0)),
                str(r.get("mode", "")),
                f"{r.get('interval_ms', 0)}ms",
                f"{r.get('detect_ms', 0)}ms",
                str(r.get("failures", 0)),
                info,
            ]
        )
    return render_table(table, HEADERS)
