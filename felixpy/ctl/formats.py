"""felixctl get's scripting outputs: ``-o name``, ``-o custom-columns=...``, ``-o go-template=...``.

``name``: one resource name a line (``namespace/name`` with ``-A``).

``custom-columns=HEADER:PATH,...``: a table of the given columns; PATH is a field path from the
resource's root as calicoctl and kubectl write it, ``.metadata.name``, ``.spec.cidr``,
``.spec.ingress[0].action`` (a missing field prints ``<none>``, a list or mapping as JSON).

``go-template=TEMPLATE`` (or ``go-template-file=FILE``): a subset of Go's text/template, run on
the same data ``-o yaml`` prints (one resource fetched by name: the resource; otherwise the
``<Kind>List`` with ``.items``). Supported: literal text, ``{{.path.to.field}}`` (``{{.}}`` the
current value), ``{{range .path}}...{{end}}`` (inside, ``.`` is each element), string literals
``{{"\\n"}}``, and ``{{- ...}}``/``{{... -}}`` trimming. Anything else (if, with, functions,
pipelines, variables) is refused with one line naming it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from felixpy.ctl.output import format_table

PREFIXES = ("custom-columns=", "go-template=", "go-template-file=")
_MISSING = object()


class FormatError(ValueError):
    """A bad -o value or template: one line for the user."""


def check_format(value: str) -> str:
    """argparse ``type=`` for ``-o``: the plain formats and the prefixed ones."""
    if value in ("ps", "table", "wide", "yaml", "json", "name") or value.startswith(PREFIXES):
        return value
    raise argparse.ArgumentTypeError(
        f"unknown output format {value!r}: use ps, wide, yaml, json, name, custom-columns=..., "
        "go-template=..."
    )


def lookup(data: Any, path: str) -> Any:
    """``.spec.ingress[0].action`` in ``data``; _MISSING when a step is absent."""
    path = path.strip()
    if path in (".", ""):
        return data
    if not path.startswith("."):
        raise FormatError(f"field path {path!r} must start with '.' (e.g. .metadata.name)")
    current = data
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        key, index = part
        if key:
            current = current.get(key, _MISSING) if isinstance(current, dict) else _MISSING
        else:
            i = int(index)
            current = current[i] if isinstance(current, list) and i < len(current) else _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def _text(value: Any, missing: str) -> str:
    if value is _MISSING or value is None:
        return missing
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def custom_columns(spec: str, objs: Sequence[dict[str, Any]]) -> str:
    columns = []
    for part in spec.split(","):
        header, sep, path = part.partition(":")
        if not sep or not header or not path:
            raise FormatError(f"custom-columns: {part!r} is not HEADER:.field.path")
        columns.append((header, path))
    rows = [[_text(lookup(o, path), "<none>") for _, path in columns] for o in objs]
    return format_table([h for h, _ in columns], rows)


# --- go-template subset ------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1) == "-":
            text = text.rstrip()
        if out and out[-1][0] == "trim":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        if m.group(3) == "-":
            out.append(("trim", ""))
        pos = m.end()
    tail = template[pos:]
    if out and out[-1][0] == "trim":
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    return out


def _parse(tokens: list[tuple[str, str]], pos: int, inside: bool) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while pos < len(tokens):
        kind, value = tokens[pos]
        pos += 1
        if kind == "text":
            nodes.append(("text", value))
        elif value == "end":
            if not inside:
                raise FormatError("go-template: {{end}} without {{range}}")
            return nodes, pos
        elif value.startswith("range "):
            body, pos = _parse(tokens, pos, True)
            nodes.append(("range", value[6:].strip(), body))
        elif value.startswith('"') and value.endswith('"') and len(value) >= 2:
            nodes.append(("text", json.loads(value)))
        elif value.startswith("."):
            if " " in value or "|" in value:
                raise FormatError(f"go-template: {{{{{value}}}}} is not supported (pipelines, functions)")
            nodes.append(("field", value))
        else:
            word = value.split()[0] if value.split() else value
            raise FormatError(
                f"go-template: '{word}' is not supported (supported: .field, range ... end, \"text\")"
            )
    if inside:
        raise FormatError("go-template: {{range}} without {{end}}")
    return nodes, pos


def _render(nodes: list[Any], data: Any, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(_text(lookup(data, node[1]), "<no value>"))
        else:
            seq = lookup(data, node[1])
            if isinstance(seq, dict):
                seq = [seq[k] for k in sorted(seq)]
            for item in seq if isinstance(seq, list) else []:
                _render(node[2], item, out)


def go_template(template: str, data: Any) -> str:
    nodes, _ = _parse(_tokens(template), 0, False)
    out: list[str] = []
    _render(nodes, data, out)
    return "".join(out)
