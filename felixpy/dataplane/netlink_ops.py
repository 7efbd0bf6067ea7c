"""A small netlink surface for the dataplane drivers: routes and links.

Drivers depend on the :class:`Netlink` protocol; kernel code uses :class:`IPRouteNetlink`, unit tests
the in-memory :class:`tests.fixtures.netlink_fake.FakeNetlink`. Routes go through the agent's one
batched route writer (``felixpy.netlinkio.route_writer.RouteWriter``, shared with BGP's FIB): a whole
``RouteTable.apply`` is a few sends, not a pyroute2 call per route. Links are read with pyroute2
``IPRoute`` (never NDB: we keep our own desired/actual state). EEXIST on add and ENOENT/ESRCH on
delete mean "already done"; ENODEV on a route becomes :class:`LinkNotFound` (retry later).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from felixpy.dataplane.errors import DataplaneError, LinkNotFound
from felixpy.dataplane.kernel_objects import MAIN_TABLE, RouteTarget
from felixpy.dataplane.sysctl import run_in_netns
from felixpy.netlinkio.messages import RTN_BLACKHOLE, RTN_UNICAST, Hop, Route
from felixpy.netlinkio.route_writer import RouteWriter, route_socket

if TYPE_CHECKING:  # pyroute2 is imported when a link is first read: ~0.4 s and ~21 MB at start
    from pyroute2 import IPRoute

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)
NETLINK_BUFFER = 1 << 20  # pyroute2's own default for SO_SNDBUF / SO_RCVBUF


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route as the kernel holds it (or as we ask for it). ``dst`` is a normalised CIDR."""

    dst: str
    target: RouteTarget
    proto: int
    table: int = MAIN_TABLE
    metric: int | None = None


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    up: bool


class Netlink(Protocol):
    def list_routes(self, *, proto: int | None = None, table: int = MAIN_TABLE) -> list[KernelRoute]: ...

    def replace_route(self, route: KernelRoute) -> None: ...

    def del_route(self, route: KernelRoute) -> None: ...

    def apply_routes(
        self, *, delete: Sequence[KernelRoute] = (), replace: Sequence[KernelRoute] = ()
    ) -> list[tuple[KernelRoute, DataplaneError]]: ...

    def list_links(self) -> list[Link]: ...

    def link_by_name(self, name: str) -> Link | None: ...


def normalise_cidr(cidr: str) -> str:
    """'10.0.0.5' -> '10.0.0.5/32'; '10.0.0.5/24' -> '10.0.0.0/24'; v6 compressed."""
    return str(ipaddress.ip_network(cidr, strict=False))


def family_of(cidr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_network(cidr, strict=False).version == 6 else socket.AF_INET


def netns_socket(netns: str, proto: int = socket.NETLINK_ROUTE) -> socket.socket:
    """A netlink socket that lives in ``netns`` (a name or a path), made without forking.

    A socket stays in the namespace it was created in, so a helper thread that enters the
    namespace (:func:`run_in_netns`) opens it and ends. pyroute2's ``IPRoute(netns=...)`` forks a
    helper process for the same thing: ~8 ms against ~0.3 ms here.
    """
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NETLINK_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NETLINK_BUFFER)
    return sock


def open_iproute(netns: str | None = None) -> IPRoute:
    """IPRoute in the current netns, or in ``netns`` (a name under /var/run/netns or a path).

    Another namespace is entered by :func:`netns_socket` (no child process); it is never created
    by accident: a missing one raises NetnsNotFound.
    """
    from pyroute2 import IPRoute  # here, not at the top: most starts never need it (~0.4 s, ~21 MB)

    if not netns:
        return IPRoute()
    return IPRoute(use_socket=netns_socket(netns))


class IPRouteNetlink:
    """:class:`Netlink` for one network namespace: routes through a :class:`RouteWriter`, links
    through pyroute2 ``IPRoute``."""

    def __init__(self, netns: str | None = None, *, ipr: IPRoute | None = None) -> None:
        self.netns = netns
        self._ipr = ipr  # opened on the first link read: route work never needs it
        sock = run_in_netns(netns, route_socket) if netns else route_socket()
        self.routes = RouteWriter(sock)

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = open_iproute(self.netns)
        return self._ipr

    def close(self) -> None:
        self.routes.close()
        if self._ipr is not None:
            self._ipr.close()

    def __enter__(self) -> IPRouteNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- routes ---------------------------------------------------------------------------
    def list_routes(self, *, proto: int | None = None, table: int = MAIN_TABLE) -> list[KernelRoute]:
        found = self.routes.list_routes(protocol=proto, table=table)
        return [r for route, kind in found if (r := _from_kernel(route, kind)) is not None]

    def apply_routes(
        self, *, delete: Sequence[KernelRoute] = (), replace: Sequence[KernelRoute] = ()
    ) -> list[tuple[KernelRoute, DataplaneError]]:
        """Deletes, then replaces, batched; the routes that failed, each with its error."""
        deletes, replaces = _requests(delete, True), _requests(replace, False)
        asked = {id(k): (r, deleting) for r, deleting, k in deletes + replaces}
        failed = self.routes.apply(delete=[k for *_, k in deletes], replace=[k for *_, k in replaces])
        return [(asked[id(k)][0], _error(*asked[id(k)], code)) for k, code in failed]

    def replace_route(self, route: KernelRoute) -> None:
        for _route, error in self.apply_routes(replace=[route]):
            raise error

    def del_route(self, route: KernelRoute) -> None:
        for _route, error in self.apply_routes(delete=[route]):
            raise error

    # --- links ----------------------------------------------------------------------------
    def list_links(self) -> list[Link]:
        return [_parse_link(msg) for msg in self.ipr.get_links()]

    def link_by_name(self, name: str) -> Link | None:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            msgs = self.ipr.get_links(ifname=name)
        except NetlinkError as exc:
            if exc.code in _GONE:
                return None
            raise
        return _parse_link(msgs[0]) if msgs else None


def _parse_link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=str(kind or ""),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        up=bool(msg["flags"] & 1),
    )


def _to_kernel(route: KernelRoute) -> Route:
    target = route.target
    hops: tuple[Hop, ...] = ()
    if target.type != "blackhole":
        hops = (Hop(target.gateway, target.dev or None, target.onlink),)
    return Route(
        route.dst, hops, route.proto, route.table, route.metric, blackhole=target.type == "blackhole"
    )


def _from_kernel(route: Route, kind: int) -> KernelRoute | None:
    """KernelRoute from a dumped route; None for kinds we never own (local, multipath...)."""
    if kind == RTN_BLACKHOLE:
        target = RouteTarget.blackhole()
    elif kind == RTN_UNICAST and len(route.hops) == 1:
        hop = route.hops[0]
        dev = hop.dev or ""
        target = (
            RouteTarget.via(hop.gateway, dev, onlink=hop.onlink) if hop.gateway else RouteTarget.device(dev)
        )
    else:
        return None
    return KernelRoute(route.dst, target, route.protocol, route.table, route.metric)


def _requests(routes: Sequence[KernelRoute], deleting: bool) -> list[tuple[KernelRoute, bool, Route]]:
    return [(r, deleting, _to_kernel(r)) for r in routes]


def _error(route: KernelRoute, deleting: bool, code: int) -> DataplaneError:
    if code == errno.ENODEV and route.target.dev and not deleting:
        return LinkNotFound(route.target.dev)
    action = f"delete {route.dst}" if deleting else f"replace {route.dst} {route.target}"
    return DataplaneError(f"{action}: {os.strerror(code)} (errno {code})")
