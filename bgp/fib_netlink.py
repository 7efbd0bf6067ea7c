"""Netlink implementation of ``fib.RouteOps``: routes of one protocol number, main table.

The writes and dumps go through the agent's one batched route writer
(``felixpy.netlinkio.route_writer.RouteWriter``) on a raw rtnetlink socket opened in the node's
namespace; ``bgp.rtnl`` converts FIB routes to and from the kernel's. ENOENT/ESRCH on delete
count as done; failures come back per route.

Ownership (issue 12): routes go in with ``rtnl.BGP_METRIC`` (or a BGPFilter setPriority's metric)
and our protocol, so a replace can
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
from felixpy.netlinkio.route_writer import RouteWriter, route_socket

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
        self._metric: dict[str, int] = {}  # the metric each of our routes has in the kernel

    def close(self) -> None:
        self._writer.close()

    def apply_many(self, replace: list[FibRoute], delete: list[str]) -> list[tuple[str, int]]:
        """Many changes in batches. Returns (dst, errno) failures. A route whose metric changes (a
        setPriority, or a previous version's metric 0) is written at the new metric first, then the
        old one is deleted at its metric: the destination always has a route."""
        failed = self._writer.apply(
            replace=[rtnl.to_kernel(r, protocol=self.protocol) for r in replace],
            delete=[Route(dst, protocol=self.protocol) for dst in delete],
        )
        failures = [(route.dst, code) for route, code in failed]
        bad = {dst for dst, _code in failures}
        for dst in delete:
            if dst not in bad:
                self._metric.pop(dst, None)
        retire: list[Route] = []
        for route in replace:
            if route.dst in bad:
                continue
            new, old = rtnl.fib_metric(route), self._metric.get(route.dst)
            if old is not None and old != new:
                retire.append(Route(route.dst, protocol=self.protocol, metric=old))
            self._metric[route.dst] = new
        if retire:
            failures += [(r.dst, code) for r, code in self._writer.apply(delete=retire)]
        return failures

    def replace_route(self, route: FibRoute) -> None:
        failed = self.apply_many([route], [])
        if failed:
            raise OSError(failed[0][1], f"route replace {route.dst}: errno {failed[0][1]}")

    def del_route(self, dst: str) -> None:
        failed = self.apply_many([], [dst])
        if failed:
            raise OSError(failed[0][1], f"route del {dst}: errno {failed[0][1]}")

    def list_routes(self) -> dict[str, FibRoute]:
        """Our protocol's routes in the main table, both families (one dump each). Those at metric 0
        (a previous version's) are kept in use as they are and deleted when the route is next
        rewritten, so a restart stays hitless; any other metric is a setPriority's."""
        found: dict[str, FibRoute] = {}
        metrics: dict[str, int] = {}
        for route, _kind in self._writer.list_routes(protocol=self.protocol):
            found[route.dst] = rtnl.from_kernel(route)
            metrics[route.dst] = route.metric or 0
        self._metric = metrics
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
