"""Bounds on a decoded document's shape, checked before any model is built.

A resource nests a handful of levels (``spec.ingress[0].source.ports[0]``); a document nested
64 deep is an attack or an accident, and so is one whose YAML aliases (``&a`` / ``*a``) expand
it far beyond the text it came from (the "billion laughs"). Both are refused with one line, in
time linear in the decoded objects: shared (aliased) parts are measured once, by identity.
"""

from __future__ import annotations

from typing import Any

from felixpy.resources.base import ResourceError

MAX_DEPTH = 64


def check_shape(doc: Any, *, max_nodes: int, index: int | None = None) -> int:
    """The number of values in ``doc`` with aliases expanded; ResourceError past the bounds."""
    memo: dict[int, tuple[int, int]] = {}
    return _measure(doc, 1, memo, max_nodes, index)[0]


def _measure(obj: Any, depth: int, memo: dict[int, tuple[int, int]], max_nodes: int,
             index: int | None) -> tuple[int, int]:  # fmt: skip
    """(expanded size, height) of ``obj`` found at ``depth``."""
    if isinstance(obj, dict):
        children: Any = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return 1, 1
    if depth > MAX_DEPTH:
        raise ResourceError(f"nested more than {MAX_DEPTH} levels deep", index=index)
    known = memo.get(id(obj))
    if known is not None:
        if depth + known[1] - 1 > MAX_DEPTH:
            raise ResourceError(f"nested more than {MAX_DEPTH} levels deep", index=index)
        return known
    size, height = 1, 1
    for child in children:
        child_size, child_height = _measure(child, depth + 1, memo, max_nodes, index)
        size += child_size
        height = max(height, child_height + 1)
        if size > max_nodes:
            raise ResourceError(
                f"expands to more than {max_nodes:,} values (YAML aliases repeating a part of it?)",
                index=index,
            )
    memo[id(obj)] = (size, height)
    return size, height
