"""Netlink implementation of ``fib.RouteOps``: routes of one protocol number, main table.

Route requests and dumps go over one raw rtnetlink socket opened in the node's namespace,
packed and parsed by ``bgp.rtnl``: ``BATCH`` requests per send, un-acked (an ack per route
was most of the kernel's time) and closed by an acked no-op; failures come back matched to
their route by sequence number. pyroute2 (``IPRoute``, or ``NetNS(name)`` for
tests and the lab) only looks up device names. ENOENT/ESRCH on delete count as done.

Ownership (issue 12): routes go in with ``rtnl.BGP_METRIC`` and our protocol, so a replace can
never overwrite the dataplane's workload routes (protocol 80, metric 0 / 1024) and a delete
(protocol-scoped) never removes one; ``owned_elsewhere`` tells ``Fib`` which host routes the
dataplane has, so BGP does not even shadow them.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import threading
from typing import Any

from pyroute2 import IPRoute, NetNS

from bgp import rtnl
from bgp.fib import FibRoute
from felixpy.dataplane.model import RTPROT_FELIXPY, RTPROT_FELIXPY_BGP

CLONE_NEWNET = 0x40000000
BATCH = 512  # requests per send (~26 KB): one sendmsg must fit the send buffer, and the answers
# to a batch where every request fails, the receive buffer (skb truesize, not bytes)
SOCKET_TIMEOUT = 10.0
RCVBUF = 8 << 20
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33


def _netlink_socket(netns: str | None) -> socket.socket:
    """A raw rtnetlink socket bound in ``netns``; created in a helper thread (setns is per thread)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    result: list[socket.socket | BaseException] = []

    def create() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/var/run/netns/{netns}") as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
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
        self._ipr: Any = NetNS(netns) if netns else IPRoute()
        self._lock = threading.Lock()
        self._ifindex: dict[str, int] = {}
        self._ifname: dict[int, str] = {}
        self._sock = _netlink_socket(netns)
        self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without the echoed request
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.bind((0, 0))
        self._sock.settimeout(SOCKET_TIMEOUT)
        self._seq = 0
        self._legacy: dict[str, int] = {}  # our routes found at another metric -> that metric

    def close(self) -> None:
        with self._lock:
            self._ipr.close()
            self._sock.close()

    def apply_many(self, replace: list[FibRoute], delete: list[str]) -> list[tuple[str, int]]:
        """Many changes, ``BATCH`` requests per send. Returns (dst, errno) failures.

        Requests go without NLM_F_ACK (the kernel then answers failures only) and each send
        ends with an acked no-op: its ack means every request before it was handled."""
        failures: list[tuple[str, int]] = []
        retired: set[str] = set()
        with self._lock:
            requests: list[tuple[str, bytes]] = []
            for route in replace:
                try:
                    packed = rtnl.pack_replace(
                        route, seq=self._next_seq(), protocol=self.protocol, index_of=self._index, ack=False
                    )
                except (OSError, ValueError) as exc:
                    failures.append((route.dst, getattr(exc, "errno", None) or errno.EINVAL))
                    continue
                requests.append((route.dst, packed))
                legacy = self._legacy.pop(route.dst, None)
                if legacy is not None:  # a previous version's route at another metric: it must not stay
                    legacy_delete = rtnl.pack_delete(
                        route.dst, seq=self._next_seq(), protocol=self.protocol, ack=False, metric=legacy
                    )
                    requests.append((route.dst, legacy_delete))
                    retired.add(route.dst)
            for dst in delete:
                self._legacy.pop(dst, None)
                requests.append(
                    (dst, rtnl.pack_delete(dst, seq=self._next_seq(), protocol=self.protocol, ack=False))
                )
            deleting = set(delete) | retired
            for start in range(0, len(requests), BATCH):
                failures += self._send_batch(requests[start : start + BATCH], deleting=deleting)
        return failures

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _send_batch(self, chunk: list[tuple[str, bytes]], *, deleting: set[str]) -> list[tuple[str, int]]:
        seqs = {struct.unpack_from("=I", packed, 8)[0]: dst for dst, packed in chunk}
        barrier = self._next_seq()
        self._sock.sendall(b"".join(packed for _dst, packed in chunk) + rtnl.pack_barrier(seq=barrier))
        failures = []
        try:
            while barrier:
                for kind, seq, payload in rtnl.messages(self._sock.recv(1 << 20)):
                    if kind != rtnl.NLMSG_ERROR:
                        continue
                    if seq == barrier:
                        barrier = 0
                    elif seq in seqs:
                        dst, code = seqs[seq], rtnl.error_code(payload)
                        if code and not (dst in deleting and code in (errno.ENOENT, errno.ESRCH)):
                            failures.append((dst, code))
        except OSError as exc:  # ENOBUFS (answers lost) or timeout: unknown outcome, the resync repairs
            failures = [(dst, exc.errno or errno.ETIMEDOUT) for dst in seqs.values()]
            self._drain()
        return failures

    def _drain(self) -> None:
        self._sock.setblocking(False)
        try:
            while self._sock.recv(1 << 20):
                pass
        except OSError:
            pass
        finally:
            self._sock.settimeout(SOCKET_TIMEOUT)

    def _index(self, dev: str) -> int:
        if dev not in self._ifindex:
            found = self._ipr.link_lookup(ifname=dev)
            if not found:
                raise OSError(errno.ENODEV, f"no device {dev}")
            self._ifindex[dev] = found[0]
            self._ifname[found[0]] = dev
        return self._ifindex[dev]

    def _name(self, index: int) -> str:
        if index not in self._ifname:
            links = self._ipr.get_links(index)
            self._ifname[index] = links[0].get_attr("IFLA_IFNAME") if links else str(index)
        return self._ifname[index]

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
        out: dict[str, FibRoute] = {}
        legacy: dict[str, int] = {}
        with self._lock:
            for family in (rtnl.AF_INET, rtnl.AF_INET6):
                for payload in self._dump(family):
                    route = rtnl.parse_route(payload, protocol=self.protocol, name_of=self._name)
                    if route is not None:
                        out[route.dst] = route
                        metric = rtnl.route_metric(payload)
                        if metric != rtnl.BGP_METRIC[family]:
                            legacy[route.dst] = metric
            self._legacy = legacy
        return out

    def owned_elsewhere(self, dsts: list[str]) -> set[str]:
        """Those of ``dsts`` (host prefixes) the dataplane has a route for (its protocol)."""
        families = {rtnl.AF_INET6 if ":" in d else rtnl.AF_INET for d in dsts}
        found: set[str] = set()
        with self._lock:
            for family in sorted(families):
                for payload in self._dump(family):
                    dst = rtnl.host_route_dst(payload, protocol=self.dataplane_protocol)
                    if dst is not None:
                        found.add(dst)
        return found.intersection(dsts)

    def _dump(self, family: int) -> list[bytes]:
        seq = self._next_seq()
        self._sock.sendall(rtnl.pack_dump(family, seq=seq))
        payloads: list[bytes] = []
        while True:
            for kind, got, payload in rtnl.messages(self._sock.recv(1 << 20)):
                if got != seq:
                    continue
                if kind == rtnl.NLMSG_DONE:
                    return payloads
                if kind == rtnl.NLMSG_ERROR:
                    code = rtnl.error_code(payload)
                    raise OSError(code, f"route dump: errno {code}")
                payloads.append(payload)
