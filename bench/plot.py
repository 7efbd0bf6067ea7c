"""Curves of how cost grows: the JSON lines of several sizes -> one PNG per figure name.

    .venv/bin/python -m bench.plot OUT_DIR FILE.jsonl [FILE.jsonl ...]

Reads every JSON line (lines that are not JSON objects with "name" and "value" are skipped, so a
benchmark's whole output can be given), groups them by "name", and for each name with at least
one record that has an ``endpoints`` count draws p50 (and p99 where present) against endpoints,
one point per record, to ``OUT_DIR/<name>.png``. Prints the files written.

Leaves out: error bars beyond p99, and any figure without a size (nothing to plot against).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_records(lines: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Records with a name, a numeric value and an ``endpoints`` count, by name, sorted by size."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("value"), int | float):
            continue
        if "name" in rec and isinstance(rec.get("endpoints"), int):
            out[rec["name"]].append(rec)
    return {name: sorted(recs, key=lambda r: r["endpoints"]) for name, recs in out.items()}


def series(recs: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """x = endpoints; y = p50 (or value), and p99 if every record has one."""
    xs = [r["endpoints"] for r in recs]
    out = {"p50": (xs, [float(r.get("p50", r["value"])) for r in recs])}
    if all("p99" in r for r in recs) and any(r.get("n", 1) > 1 for r in recs):
        out["p99"] = (xs, [float(r["p99"]) for r in recs])
    return out


def plot(out_dir: Path, records: dict[str, list[dict[str, Any]]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, recs in sorted(records.items()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for label, (xs, ys) in series(recs).items():
            ax.plot(xs, ys, marker="o", label=label)
        policies = ", ".join(str(r.get("policies", "?")) for r in recs)
        loads = ", ".join(str(r.get("load1", "?")) for r in recs)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"local endpoints (policies: {policies})", fontsize=8)
        ax.set_ylabel(recs[0].get("unit", ""))
        ax.annotate(f"load1 at each point: {loads}", (0.01, 0.01), xycoords="figure fraction", fontsize=6)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m bench.plot OUT_DIR FILE.jsonl [FILE.jsonl ...]", file=sys.stderr)
        return 2
    lines: list[str] = []
    for name in argv[1:]:
        try:
            lines += Path(name).read_text().splitlines()
        except OSError as exc:
            print(f"bench.plot: {name}: {exc.strerror}", file=sys.stderr)
            return 2
    for path in plot(Path(argv[0]), read_records(lines)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
