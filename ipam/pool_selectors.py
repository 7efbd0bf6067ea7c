"""Pool nodeSelector evaluation, in the project's one selector language (policy.selector).

A selector that does not parse matches nothing: the pool is skipped (never used on the wrong node)
and the reason is logged once. felixctl already refuses such a pool when it is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import lru_cache

from policy.selector import parse
from policy.tokens import SelectorError

log = logging.getLogger(__name__)


@lru_cache(maxsize=256)
def _compile(text: str) -> Callable[[Mapping[str, str]], bool]:
    try:
        selector = parse(text)
    except SelectorError as exc:
        log.warning("pool nodeSelector %r is invalid (%s): pool skipped", text, exc)
        return lambda labels: False
    return lambda labels: bool(selector.matches(labels))


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    return _compile((selector or "").strip() or "all()")(labels)


def needs_labels(selector: str) -> bool:
    return (selector or "").strip() not in ("", "all()")
