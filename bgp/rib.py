"""Adj-RIB-In per peer and the Loc-RIB of best paths (pure).

Routes arrive already import-filtered. Every change of a prefix's best path(s) is reported
through ``on_change(prefix, best)``; ``best`` is empty when the prefix is gone. Graceful
restart: ``mark_stale(peer)`` keeps a lost peer's routes (flagged stale) so forwarding goes
on; fresh announcements replace them; ``sweep_stale(peer)`` (on End-of-RIB or when the
restart timer fires) removes the ones that were not refreshed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from bgp.bestpath import select
from bgp.route import Route

ChangeCallback = Callable[[str, tuple[Route, ...]], None]


class Rib:
    def __init__(self, on_change: ChangeCallback | None = None, *, ecmp: bool = False) -> None:
        self._adj_in: dict[str, dict[str, Route]] = {}
        self._by_prefix: dict[str, dict[str, Route]] = {}
        self._best: dict[str, tuple[Route, ...]] = {}
        self._on_change = on_change
        self.ecmp = ecmp

    # --- queries -------------------------------------------------------------------------
    def best(self, prefix: str) -> tuple[Route, ...]:
        return self._best.get(prefix, ())

    def best_routes(self) -> Iterator[tuple[str, tuple[Route, ...]]]:
        yield from self._best.items()

    def adj_in(self, peer: str) -> dict[str, Route]:
        return dict(self._adj_in.get(peer, {}))

    def peers(self) -> list[str]:
        return list(self._adj_in)

    def __len__(self) -> int:
        return len(self._best)

    # --- updates -------------------------------------------------------------------------
    def update(self, route: Route) -> None:
        peer = route.source.address
        self._adj_in.setdefault(peer, {})[route.prefix] = route
        self._by_prefix.setdefault(route.prefix, {})[peer] = route
        self._recompute(route.prefix)

    def withdraw(self, peer: str, prefix: str) -> None:
        if self._adj_in.get(peer, {}).pop(prefix, None) is None:
            return
        paths = self._by_prefix.get(prefix, {})
        paths.pop(peer, None)
        if not paths:
            self._by_prefix.pop(prefix, None)
        self._recompute(prefix)

    def drop_peer(self, peer: str) -> None:
        for prefix in list(self._adj_in.get(peer, {})):
            self.withdraw(peer, prefix)
        self._adj_in.pop(peer, None)

    def mark_stale(self, peer: str) -> int:
        routes = self._adj_in.get(peer, {})
        for prefix, route in routes.items():
            stale = replace(route, stale=True)
            routes[prefix] = stale
            self._by_prefix[prefix][peer] = stale
        return len(routes)

    def sweep_stale(self, peer: str) -> int:
        stale = [p for p, r in self._adj_in.get(peer, {}).items() if r.stale]
        for prefix in stale:
            self.withdraw(peer, prefix)
        return len(stale)

    def set_ecmp(self, ecmp: bool) -> None:
        if ecmp != self.ecmp:
            self.ecmp = ecmp
            for prefix in list(self._by_prefix):
                self._recompute(prefix)

    def _recompute(self, prefix: str) -> None:
        paths = self._by_prefix.get(prefix, {})
        new = select(list(paths.values()), ecmp=self.ecmp)
        old = self._best.get(prefix, ())
        if new:
            self._best[prefix] = new
        else:
            self._best.pop(prefix, None)
        if not _same_to_the_world(old, new) and self._on_change is not None:
            self._on_change(prefix, new)


def _same_to_the_world(old: tuple[Route, ...], new: tuple[Route, ...]) -> bool:
    """Best paths as the outside world sees them: a route turning stale is not a change."""
    if old == new:
        return True
    if len(old) != len(new):
        return False
    pairs = zip(old, new, strict=True)
    return all(a == b or replace(a, stale=False) == replace(b, stale=False) for a, b in pairs)
