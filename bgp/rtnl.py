"""FIB routes ↔ the kernel's route messages (pure: bytes in, bytes out).

``FibRoute`` is what best path resolves to; ``felixpy.netlinkio.messages`` packs and parses the
rtnetlink messages of every route the agent writes. This module converts between the two for
BGP's protocol: a FIB route is a unicast route in the main table, and only onlink (tunnel) hops
pin a device — direct ones let the kernel pick, as they are installed.
"""

from __future__ import annotations

from bgp.fib import FibRoute, NextHop
from felixpy.netlinkio import messages as _nl
from felixpy.netlinkio.messages import (
    AF_INET,
    AF_INET6,
    MAIN_TABLE,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    RTM_DELROUTE,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTNH_F_ONLINK,
    IndexOf,
    NameOf,
    error_code,
    messages,
    pack_barrier,
    pack_dump,
)

__all__ = [
    "AF_INET",
    "AF_INET6",
    "BGP_METRIC",
    "MAIN_TABLE",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLMSG_NOOP",
    "RTM_DELROUTE",
    "RTM_GETROUTE",
    "RTM_NEWROUTE",
    "RTNH_F_ONLINK",
    "bgp_metric",
    "error_code",
    "fib_metric",
    "from_kernel",
    "messages",
    "pack_barrier",
    "pack_delete",
    "pack_dump",
    "pack_replace",
    "parse_route",
    "to_kernel",
]


# The metric (priority) of routes learned over BGP: 32 for IPv4, as BIRD 2's kernel protocol (what
# a Calico node has); above the kernel's 1024 for IPv6. A replace only ever matches a route of the
# same destination AND metric, and the dataplane's workload routes have 0 (IPv4) or 1024 (IPv6):
# whatever BGP writes can neither overwrite them nor win a lookup against them (issue 12).
BGP_METRIC = {AF_INET: 32, AF_INET6: 1056}


def bgp_metric(dst: str) -> int:
    return BGP_METRIC[AF_INET6 if ":" in dst else AF_INET]


def fib_metric(route: FibRoute) -> int:
    """The kernel metric a FIB route goes in at: its own (BGPFilter setPriority), else the default."""
    return bgp_metric(route.dst) if route.metric is None else route.metric


def to_kernel(route: FibRoute, *, protocol: int, metric: int | None = None) -> _nl.Route:
    """The kernel route for a FIB route, at ``metric`` (None: the route's own, else ``BGP_METRIC``)."""
    hops = tuple([_nl.Hop(h.gateway, h.dev, h.onlink) for h in route.hops])
    return _nl.Route(route.dst, hops, protocol, metric=fib_metric(route) if metric is None else metric)


def from_kernel(route: _nl.Route) -> FibRoute:
    """A kernel route of ours as a FIB route. At the default metric, or at 0 (a previous version's,
    kept as it is until rewritten), ``metric`` is None; any other is a setPriority's."""
    hops = tuple(sorted(NextHop(h.gateway, h.dev if h.onlink else None, h.onlink) for h in route.hops))
    metric = route.metric or 0
    return FibRoute(route.dst, hops, None if metric in (0, bgp_metric(route.dst)) else metric)


def pack_replace(
    route: FibRoute,
    *,
    seq: int,
    protocol: int,
    index_of: IndexOf,
    ack: bool = True,
    metric: int | None = None,
) -> bytes:
    """``ip route replace ... metric M`` for one FIB route (``metric`` None: ``BGP_METRIC``; without
    ``ack`` only a failure is answered)."""
    kernel = to_kernel(route, protocol=protocol, metric=metric)
    return _nl.pack_replace(kernel, seq=seq, index_of=index_of, ack=ack)


def pack_delete(dst: str, *, seq: int, protocol: int, ack: bool = True, metric: int | None = None) -> bytes:
    """RTM_DELROUTE matching any next hop, but only routes of ``protocol`` in the main table
    (``metric``: only the one with that metric; None: the first of any)."""
    return _nl.pack_delete(_nl.Route(dst, protocol=protocol, metric=metric), seq=seq, ack=ack)


def parse_route(payload: bytes, *, protocol: int, name_of: NameOf) -> FibRoute | None:
    """One RTM_NEWROUTE payload → FibRoute, or None when not ours (protocol, table)."""
    if not _nl.route_matches(payload, protocol=protocol, table=MAIN_TABLE):
        return None
    return from_kernel(_nl.parse_route(payload, name_of=name_of)[0])
