"""Printing for felixctl: aligned tables, YAML and JSON. Every sub-command prints through here.

API:
  format_table(headers, rows) -> str
      Columns left-aligned and separated like calicoctl's ``-o ps`` output (Go tabwriter with
      minimum width 5 and padding 3, no borders); headers are upper-cased. No trailing newline.
  print_table(headers, rows, *, file=None)
      format_table, printed (with a final newline) to ``file`` (stdout by default).
  print_objects(objs, fmt, *, single=False, all_namespaces=False, kind=None, revision=None,
                context=None, file=None)
      ``fmt`` is one of FORMATS: "table"/"ps", "wide", "yaml", "json". ``objs`` are resources
      (or plain dicts, for yaml/json). One object with ``single=True`` prints as itself; anything
      else prints as a ``<Kind>List`` (``kind`` names it when ``objs`` is empty; ``revision``
      becomes its metadata.resourceVersion), which `felixctl apply -f` reads back. Tables use the
      per-kind columns of `felixpy.ctl.columns`; ``context`` carries extra facts they show
      (e.g. ``{"default_asn": 64512}`` for Node's inherited AS).
  dump_yaml(data) -> str, dump_json(data) -> str
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from felixpy.ctl.columns import columns_for
from felixpy.resources.base import Resource

FORMATS = ("table", "ps", "wide", "yaml", "json")
MIN_WIDTH = 5
PADDING = 3


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [[h.upper() for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    ncols = max(len(line) for line in lines)
    widths = [
        max(MIN_WIDTH, *(len(line[i]) + PADDING for line in lines if i < len(line))) for i in range(ncols - 1)
    ]
    out = []
    for line in lines:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append(("".join(padded) + line[-1]).rstrip())
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, file: TextIO | None = None) -> None:
    print(format_table(headers, rows), file=file or sys.stdout)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2)


def _as_dict(obj: Resource | Mapping[str, Any]) -> dict[str, Any]:
    return obj.to_dict() if isinstance(obj, Resource) else dict(obj)


def as_list(
    objs: Sequence[Resource | Mapping[str, Any]],
    *,
    kind: type[Resource] | None = None,
    revision: str | int | None = None,
) -> dict[str, Any]:
    """Objects wrapped as `<Kind>List` (plain `List` when kinds are mixed, or none and no ``kind``)."""
    items = [_as_dict(o) for o in objs]
    kinds = {(i.get("apiVersion"), i.get("kind")) for i in items}
    if not items and kind is not None:
        kinds = {(kind.API_VERSION, kind.KIND)}
    api, name = next(iter(kinds)) if len(kinds) == 1 else ("v1", "")
    list_kind = f"{name}List" if name else "List"
    out: dict[str, Any] = {"apiVersion": api or "v1", "kind": list_kind, "items": items}
    if revision is not None:
        out["metadata"] = {"resourceVersion": str(revision)}
    return out


def print_objects(
    objs: Sequence[Resource | Mapping[str, Any]],
    fmt: str,
    *,
    single: bool = False,
    all_namespaces: bool = False,
    kind: type[Resource] | None = None,
    revision: str | int | None = None,
    context: Mapping[str, Any] | None = None,
    file: TextIO | None = None,
) -> None:
    out = file or sys.stdout
    if fmt in ("yaml", "json"):
        data = _as_dict(objs[0]) if single and len(objs) == 1 else as_list(objs, kind=kind, revision=revision)
        text = dump_yaml(data) if fmt == "yaml" else dump_json(data) + "\n"
        out.write(text)
        return
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r} (use one of {', '.join(FORMATS)})")
    resources = [o for o in objs if isinstance(o, Resource)]
    if len(resources) != len(objs):
        raise ValueError("tables print resources only; use print_table for other rows")
    groups: dict[type[Resource] | None, list[Resource]] = {}
    for obj in resources:
        groups.setdefault(type(obj), []).append(obj)
    for i, (group_kind, members) in enumerate((groups or {kind: []}).items()):
        if i:
            print(file=out)  # one table per kind, a blank line between them
        _print_kind_table(members, group_kind, wide=fmt == "wide", all_namespaces=all_namespaces,
                          context=context, file=out)  # fmt: skip


def _print_kind_table(
    objs: list[Resource],
    kind: type[Resource] | None,
    *,
    wide: bool,
    all_namespaces: bool,
    context: Mapping[str, Any] | None,
    file: TextIO,
) -> None:
    headers, cells = columns_for(kind, wide=wide)
    with_ns = all_namespaces and kind is not None and kind.NAMESPACED
    ctx = dict(context or {})
    rows = [([o.namespace or ""] if with_ns else []) + cells(o, ctx) for o in objs]
    print_table((["NAMESPACE"] if with_ns else []) + headers, rows, file=file)
