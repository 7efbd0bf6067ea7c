"""Pool nodeSelector evaluation.

Uses ``policy.selector.parse`` (the project's full selector language) when it is present;
otherwise a small fallback that understands ``all()``, ``has(k)``, ``!has(k)``, ``k == 'v'``,
``k != 'v'`` joined by ``&&``. A selector the fallback cannot read matches nothing (the
pool is skipped, never used on the wrong node) and is logged once.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping
from functools import lru_cache

log = logging.getLogger(__name__)

_TERM = re.compile(
    r"""^\s*(?:(?P<neg>!)?has\(\s*(?P<has>[\w./-]+)\s*\)|(?P<key>[\w./-]+)\s*(?P<op>==|!=)\s*
                        (?P<q>['"])(?P<val>[^'"]*)(?P=q))\s*$""",
    re.X,
)


@lru_cache(maxsize=256)
def _compile(text: str) -> Callable[[Mapping[str, str]], bool]:
    text = text.strip()
    if text in ("", "all()"):
        return lambda labels: True
    try:
        mod = importlib.import_module("policy.selector")
        ast = mod.parse(text)
        return lambda labels: bool(ast.matches(labels))
    except ImportError:
        pass
    except Exception as exc:  # a selector the real parser refuses matches nothing
        log.warning("pool nodeSelector %r is invalid (%s): pool skipped", text, exc)
        return lambda labels: False
    return _fallback(text)


def _fallback(text: str) -> Callable[[Mapping[str, str]], bool]:
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for part in text.split("&&"):
        m = _TERM.match(part)
        if not m:
            log.warning("pool nodeSelector %r not understood without policy.selector: pool skipped", text)
            return lambda labels: False
        checks.append(_term(m))
    return lambda labels: all(c(labels) for c in checks)


def _term(m: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    if m["has"]:
        key, neg = m["has"], bool(m["neg"])
        return lambda labels: (key in labels) != neg
    key, val, op = m["key"], m["val"], m["op"]
    if op == "==":
        return lambda labels: labels.get(key) == val
    return lambda labels: labels.get(key) != val


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    return _compile(selector or "")(labels)


def needs_labels(selector: str) -> bool:
    return (selector or "").strip() not in ("", "all()")
