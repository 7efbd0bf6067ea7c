"""Adj-RIB-In per peer and the Loc-RIB of best paths (pure).

Routes arrive already import-filtered. Every change of a prefix's best path(s) is reported
through ``on_change(prefix, best)``; ``best`` is empty when the prefix is gone. Graceful
restart: ``mark_stale(peer)`` keeps a lost peer's routes (flagged stale) so forwarding goes
on; fresh announcements replace them; ``sweep_stale(peer)`` (on End-of-RIB or when the
restart timer fires) removes the ones that were not refreshed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from itertools import repeat

from bgp.bestpath import select
from bgp.route import Route

ChangeCallback = Callable[[str, tuple[Route, ...]], None]
ChangesCallback = Callable[[list[tuple[str, tuple[Route, ...]]]], None]


class Rib:
    def __init__(
        self,
        on_change: ChangeCallback | None = None,
        *,
        ecmp: bool = False,
        on_changes: ChangesCallback | None = None,
    ) -> None:
        """``on_changes``: receives the changes of one ``update_many`` call as one list (falls back
        to ``on_change`` per prefix)."""
        self._adj_in: dict[str, dict[str, Route]] = {}
        self._by_prefix: dict[str, dict[str, Route]] = {}
        self._best: dict[str, tuple[Route, ...]] = {}
        self._on_change = on_change
        self._on_changes = on_changes
        self.ecmp = ecmp

    # --- queries -------------------------------------------------------------------------
    def best(self, prefix: str) -> tuple[Route, ...]:
        return self._best.get(prefix, ())

    def best_map(self) -> Mapping[str, tuple[Route, ...]]:
        """The Loc-RIB itself, for hot loops that only read it (do not keep it across updates)."""
        return self._best

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

    def update_many(self, peer: str, routes: Iterable[Route]) -> None:
        """``update`` for routes all learned from ``peer``, in one pass: a reflector takes a
        whole UPDATE (hundreds of prefixes) at a time, and the common case, a prefix with one
        path, needs no best-path selection at all."""
        adj = self._adj_in.setdefault(peer, {})
        by_prefix, best_of, ecmp = self._by_prefix, self._best, self.ecmp
        if not isinstance(routes, list):
            routes = list(routes)
        prefixes = [route.prefix for route in routes]
        if by_prefix.keys().isdisjoint(prefixes) and len(set(prefixes)) == len(prefixes):
            # the bulk case (a table arriving): every prefix new, so each has this one path and
            # it is best; the dictionaries are filled in C instead of one prefix at a time
            adj.update(zip(prefixes, routes, strict=True))
            by_prefix.update(zip(prefixes, [{peer: route} for route in routes], strict=True))
            bests = list(zip(routes))  # (route,) per prefix, built in C
            best_of.update(zip(prefixes, bests, strict=True))
            self._report(list(zip(prefixes, bests, strict=True)))
            return
        changes: list[tuple[str, tuple[Route, ...]]] = []
        for route in routes:
            prefix = route.prefix
            adj[prefix] = route
            paths = by_prefix.get(prefix)
            if paths is None:
                by_prefix[prefix] = {peer: route}
                new: tuple[Route, ...] = (route,)
            else:
                paths[peer] = route
                new = select(list(paths.values()), ecmp=ecmp) if len(paths) > 1 else (route,)
            old = best_of.get(prefix, ())
            best_of[prefix] = new
            if not old or not _same_to_the_world(old, new):
                changes.append((prefix, new))
        self._report(changes)

    def withdraw_many(self, peer: str, prefixes: Iterable[str]) -> None:
        """``withdraw`` for many prefixes from ``peer`` in one pass, changes reported as for
        ``update_many``: a peer withdrawing a table takes one call, and a prefix left with no
        path (the common case on a reflector) needs no best-path selection."""
        adj = self._adj_in.get(peer)
        if not adj:
            return
        by_prefix, best_of, ecmp = self._by_prefix, self._best, self.ecmp
        if not isinstance(prefixes, list):
            prefixes = list(prefixes)
        held = list(filter(adj.__contains__, prefixes))
        if len(set(held)) == len(held) and set(map(len, map(by_prefix.get, held, repeat({})))) <= {1}:
            # the bulk case (a peer withdrawing its table): each prefix had this peer's path only,
            # so it leaves every table; the dictionaries are emptied in C
            deque(map(adj.pop, held), maxlen=0)
            deque(map(by_prefix.pop, held), maxlen=0)
            olds = list(map(best_of.pop, held, repeat(None)))
            self._report([(prefix, ()) for prefix, old in zip(held, olds, strict=True) if old])
            return
        changes: list[tuple[str, tuple[Route, ...]]] = []
        for prefix in prefixes:
            if adj.pop(prefix, None) is None:
                continue
            paths = by_prefix.get(prefix)
            if paths is not None:
                paths.pop(peer, None)
            if not paths:
                by_prefix.pop(prefix, None)
                if best_of.pop(prefix, None):
                    changes.append((prefix, ()))
                continue
            new = select(list(paths.values()), ecmp=ecmp)
            old = best_of.get(prefix, ())
            best_of[prefix] = new
            if not _same_to_the_world(old, new):
                changes.append((prefix, new))
        self._report(changes)

    def _report(self, changes: list[tuple[str, tuple[Route, ...]]]) -> None:
        """Best-path changes of a bulk call: in one call to ``on_changes``, else one by one."""
        if not changes:
            return
        if self._on_changes is not None:
            self._on_changes(changes)
        elif self._on_change is not None:
            for prefix, new in changes:
                self._on_change(prefix, new)

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
