"""Netlink implementation of ``fib.RouteOps``: routes of one protocol number, main table.

The writes and dumps go through the agent's one batched route writer
(``felixpy.netlinkio.writer.RouteWriter``) on a raw rtnetlink socket opened in the node's
namespace; ``bgp.rtnl`` converts FIB routes to and from the kernel's. ENOENT/ESRCH on delete
count as done; failures come back per route.

Ownership (issue 12): routes go in with ``rtnl.BGP_METRIC`` and our protocol, so a replace can
never overwrite the dataplane's workload routes (protocol 80, metric 0 / 1024) and a delete
(protocol-scoped) never removes one; ``owned_elsewhere`` tells ``Fib`` which host routes the
dataplane has, so BGP does not even shadow them.
"""

from __future__ import annotations

import ctypes
import socket
import threading

from bgp import rtnl
from bgp.fib import FibRoute
from felixpy.dataplane.kernel_objects import RTPROT_FELIXPY, RTPROT_FELIXPY_BGP
from felixpy.netlinkio.messages import Route
from felixpy.netlinkio.writer import RouteWriter, route_socket

CLONE_NEWNET = 0x40000000


def _netlink_socket(netns: str | None) -> socket.socket:
    """A raw rtnetlink socket bound in ``netns``; created in a helper thread (setns is per thread)."""
    if netns is None:
        return route_socket()
    result: list[socket.socket | BaseException] = []

    def create() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/var/run/netns/{netns}") as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            result.append(route_socket())
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=create)  # the thread ends with it: our own namespace is untouched
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


class NetlinkRouteOps:
    def __init__(
        self,
        *,
        netns: str | None = None,
        protocol: int = RTPROT_FELIXPY_BGP,
        dataplane_protocol: int = RTPROT_FELIXPY,
    ) -> None:
        self.protocol = protocol
        self.dataplane_protocol = dataplane_protocol
        self._writer = RouteWriter(_netlink_socket(netns))
        self._legacy: dict[str, int] = {}  # our routes found at another metric -> that metric

    def close(self) -> None:
        self._writer.close()

    def apply_many(self, replace: list[FibRoute], delete: list[str]) -> list[tuple[str, int]]:
        """Many changes in batches. Returns (dst, errno) failures. A route a previous version left at
        another metric is deleted (at that metric) when the route is rewritten."""
        deletes = [Route(dst, protocol=self.protocol) for dst in delete]
        for dst in delete:
            self._legacy.pop(dst, None)
        for route in replace:
            legacy = self._legacy.pop(route.dst, None)
            if legacy is not None:  # a previous version's route at another metric: it must not stay
                deletes.append(Route(route.dst, protocol=self.protocol, metric=legacy))
        failed = self._writer.apply(
            replace=[rtnl.to_kernel(r, protocol=self.protocol) for r in replace],
            delete=deletes,
        )
        return [(route.dst, code) for route, code in failed]

    def replace_route(self, route: FibRoute) -> None:
        failed = self.apply_many([route], [])
        if failed:
            raise OSError(failed[0][1], f"route replace {route.dst}: errno {failed[0][1]}")

    def del_route(self, dst: str) -> None:
        failed = self.apply_many([], [dst])
        if failed:
            raise OSError(failed[0][1], f"route del {dst}: errno {failed[0][1]}")

    def list_routes(self) -> dict[str, FibRoute]:
        """Our protocol's routes in the main table, both families (one dump each). Those at another
        metric than ``rtnl.BGP_METRIC`` (a previous version's, metric 0) are kept in use as they are
        and deleted when the route is next rewritten, so a restart stays hitless."""
        found: dict[str, FibRoute] = {}
        legacy: dict[str, int] = {}
        for route, _kind in self._writer.list_routes(protocol=self.protocol):
            found[route.dst] = rtnl.from_kernel(route)
            metric = route.metric or 0
            if metric != rtnl.bgp_metric(route.dst):
                legacy[route.dst] = metric
        self._legacy = legacy
        return found

    def owned_elsewhere(self, dsts: list[str]) -> set[str]:
        """Those of ``dsts`` (host prefixes) the dataplane has a route for (its protocol)."""
        wanted = set(dsts)
        if not wanted:
            return set()
        return {
            route.dst
            for route, _kind in self._writer.list_routes(protocol=self.dataplane_protocol)
            if route.dst in wanted
        }
