"""Label selectors for BGPPeer nodeSelector/peerSelector.

Uses the project's selector language (``policy.selector.parse``) when it is available; until
then a tiny fallback understands ``all()``, ``has(k)``, ``k == 'v'``, ``k != 'v'`` joined by ``&&``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Matcher = Callable[[Mapping[str, str]], bool]

_TERM = re.compile(r"""^\s*([\w./-]+)\s*(==|!=)\s*['"]([^'"]*)['"]\s*$""")
_HAS = re.compile(r"^\s*has\(\s*([\w./-]+)\s*\)\s*$")


def compile_selector(text: str | None) -> Matcher:
    """A predicate over labels. Empty/None selects nothing; ``all()`` everything."""
    if text is None or not text.strip():
        return lambda _labels: False
    try:
        from policy.selector import parse  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _fallback(text)
    ast = parse(text)
    return lambda labels: bool(ast.matches(dict(labels)))


def _fallback(text: str) -> Matcher:
    terms = [t for t in text.split("&&")]
    checks: list[Matcher] = [_term(t) for t in terms]
    return lambda labels: all(check(labels) for check in checks)


def _term(term: str) -> Matcher:
    if term.strip() == "all()":
        return lambda _labels: True
    has = _HAS.match(term)
    if has:
        key = has.group(1)
        return lambda labels: key in labels
    m = _TERM.match(term)
    if not m:
        raise ValueError(f"unsupported selector term: {term.strip()!r}")
    key, op, value = m.groups()
    if op == "==":
        return lambda labels: labels.get(key) == value
    return lambda labels: labels.get(key) != value
