"""Label selectors for BGPPeer nodeSelector/peerSelector, in the project's selector language."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from policy.selector import parse

Matcher = Callable[[Mapping[str, str]], bool]


def compile_selector(text: str | None) -> Matcher:
    """A predicate over labels. Empty/None selects nothing (the field is absent); ``all()`` everything."""
    if text is None or not text.strip():
        return lambda _labels: False
    selector = parse(text)
    return lambda labels: bool(selector.matches(labels))
