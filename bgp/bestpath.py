"""Best-path selection (RFC 4271 9.1.2.2, RFC 4456 9) as a chain of small comparators.

Each comparator returns <0 when ``a`` is better, >0 when ``b`` is better, 0 on a tie. The
chain stops at the first non-zero answer. ECMP (multipath) treats routes as equal when
every comparator up to, but not including, the router-ID tie-breakers says tie.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cmp_to_key

from bgp.route import ORIGIN_RANK, Route, address_key, router_id_key

Comparator = Callable[[Route, Route], int]
DEFAULT_LOCAL_PREF = 100


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def cmp_local_pref(a: Route, b: Route) -> int:
    pa = a.attrs.local_pref if a.attrs.local_pref is not None else DEFAULT_LOCAL_PREF
    pb = b.attrs.local_pref if b.attrs.local_pref is not None else DEFAULT_LOCAL_PREF
    return _sign(pb - pa)


def cmp_as_path_len(a: Route, b: Route) -> int:
    return _sign(len(a.attrs.as_path) - len(b.attrs.as_path))


def cmp_origin(a: Route, b: Route) -> int:
    return _sign(ORIGIN_RANK.get(a.attrs.origin, 2) - ORIGIN_RANK.get(b.attrs.origin, 2))


def _neighbour_as(route: Route) -> int:
    return route.attrs.as_path[0] if route.attrs.as_path else route.source.local_as


def cmp_med(a: Route, b: Route) -> int:
    """Lower MED wins, only between routes from the same neighbouring AS (missing MED = 0)."""
    if _neighbour_as(a) != _neighbour_as(b):
        return 0
    return _sign((a.attrs.med or 0) - (b.attrs.med or 0))


def cmp_ebgp_over_ibgp(a: Route, b: Route) -> int:
    return _sign(int(not a.source.ebgp) - int(not b.source.ebgp))


def _identifier(route: Route) -> int:
    """RFC 4456 9: ORIGINATOR_ID stands in for the BGP identifier when present."""
    return router_id_key(route.attrs.originator_id or route.source.router_id)


def cmp_router_id(a: Route, b: Route) -> int:
    return _sign(_identifier(a) - _identifier(b))


def cmp_cluster_list_len(a: Route, b: Route) -> int:
    return _sign(len(a.attrs.cluster_list) - len(b.attrs.cluster_list))


def cmp_peer_address(a: Route, b: Route) -> int:
    ka, kb = address_key(a.source.address), address_key(b.source.address)
    return (ka > kb) - (ka < kb)


MULTIPATH_CHAIN: tuple[Comparator, ...] = (
    cmp_local_pref,
    cmp_as_path_len,
    cmp_origin,
    cmp_med,
    cmp_ebgp_over_ibgp,
)
FULL_CHAIN: tuple[Comparator, ...] = (*MULTIPATH_CHAIN, cmp_router_id, cmp_cluster_list_len, cmp_peer_address)


def compare(a: Route, b: Route, chain: Sequence[Comparator] = FULL_CHAIN) -> int:
    for comparator in chain:
        result = comparator(a, b)
        if result:
            return result
    return 0


def select(routes: Sequence[Route], *, ecmp: bool = False) -> tuple[Route, ...]:
    """The best route first; with ``ecmp``, every route equal to it on the multipath chain."""
    if len(routes) <= 1:
        return tuple(routes)  # the common case on a reflector: one path per prefix
    ordered = sorted(routes, key=cmp_to_key(compare))
    best = ordered[0]
    if not ecmp:
        return (best,)
    return tuple(r for r in ordered if compare(best, r, MULTIPATH_CHAIN) == 0)
