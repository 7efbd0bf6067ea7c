"""pyroute2 implementation of ``fib.RouteOps``: routes of one protocol number, main table.

``IPRoute`` in the current namespace, or ``NetNS(name)`` for tests and the lab. One netlink
request per call; EEXIST on add and ENOENT/ESRCH on delete count as done.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import threading
from typing import Any

from pyroute2 import IPBatch, IPRoute, NetlinkError, NetNS

from bgp.fib import FibRoute, NextHop
from felixpy.dataplane.model import RTPROT_FELIXPY_BGP

RTNH_F_ONLINK = 4
MAIN_TABLE = 254
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000
BATCH = 128  # requests per send: their acks must fit the receive buffer (skb truesize, not bytes)
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
    def __init__(self, *, netns: str | None = None, protocol: int = RTPROT_FELIXPY_BGP) -> None:
        self.protocol = protocol
        self._ipr: Any = NetNS(netns) if netns else IPRoute()
        self._lock = threading.Lock()
        self._ifindex: dict[str, int] = {}
        self._ifname: dict[int, str] = {}
        self._sock = _netlink_socket(netns)
        self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without the echoed request
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind((0, 0))

    def close(self) -> None:
        with self._lock:
            self._ipr.close()
            self._sock.close()

    def apply_many(self, replace: list[FibRoute], delete: list[str]) -> list[tuple[str, int]]:
        """Many changes, batched: ``BATCH`` requests per send. Returns (dst, errno) failures."""
        requests: list[tuple[str, str, dict[str, Any]]] = []
        with self._lock:
            for route in replace:
                try:
                    requests.append(("replace", route.dst, self._route_args(route)))
                except OSError as exc:
                    requests.append(("fail", route.dst, {"errno": exc.errno or errno.EINVAL}))
            requests += [("del", dst, self._base_args(dst)) for dst in delete]
            failures = [(dst, int(args["errno"])) for op, dst, args in requests if op == "fail"]
            todo = [r for r in requests if r[0] != "fail"]
            for start in range(0, len(todo), BATCH):
                failures += self._send_batch(todo[start : start + BATCH])
        return failures

    def _send_batch(self, chunk: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, int]]:
        batch = IPBatch()
        for op, _dst, args in chunk:
            batch.route(op, **args)
        data = batch.batch
        seqs: dict[int, tuple[str, str]] = {}
        offset = 0
        for op, dst, _args in chunk:
            length, _type, _flags, seq, _pid = struct.unpack_from("IHHII", data, offset)
            seqs[seq] = (op, dst)
            offset += length
        self._sock.sendall(data)
        failures = []
        while seqs:
            buf = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(buf):
                length, msg_type, _flags, seq, _pid = struct.unpack_from("IHHII", buf, offset)
                if msg_type == NLMSG_ERROR and seq in seqs:
                    op, dst = seqs.pop(seq)
                    code = -struct.unpack_from("i", buf, offset + 16)[0]
                    if code and not (op == "del" and code in (errno.ENOENT, errno.ESRCH)):
                        failures.append((dst, code))
                offset += max(length, 16)
        return failures

    def _base_args(self, dst: str) -> dict[str, Any]:
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        return {"dst": dst, "family": family, "proto": self.protocol, "table": MAIN_TABLE}

    def _route_args(self, route: FibRoute) -> dict[str, Any]:
        args = self._base_args(route.dst)
        if len(route.hops) == 1:
            args.update(self._hop_args(route.hops[0]))
        else:
            args["multipath"] = [self._hop_args(h) for h in route.hops]
        return args

    def _index(self, dev: str) -> int:
        if dev not in self._ifindex:
            found = self._ipr.link_lookup(ifname=dev)
            if not found:
                raise OSError(errno.ENODEV, f"no device {dev}")
            self._ifindex[dev] = found[0]
            self._ifname[found[0]] = dev
        return self._ifindex[dev]

    def _name(self, index: int | None) -> str | None:
        if index is None:
            return None
        if index not in self._ifname:
            links = self._ipr.get_links(index)
            self._ifname[index] = links[0].get_attr("IFLA_IFNAME") if links else str(index)
        return self._ifname[index]

    def _hop_args(self, hop: NextHop) -> dict[str, Any]:
        args: dict[str, Any] = {"gateway": hop.gateway}
        if hop.dev:
            args["oif"] = self._index(hop.dev)
        if hop.onlink:
            args["flags"] = RTNH_F_ONLINK
        return args

    def replace_route(self, route: FibRoute) -> None:
        family = socket.AF_INET6 if ":" in route.dst else socket.AF_INET
        args: dict[str, Any] = {
            "dst": route.dst,
            "family": family,
            "proto": self.protocol,
            "table": MAIN_TABLE,
        }
        with self._lock:
            try:
                if len(route.hops) == 1:
                    args.update(self._hop_args(route.hops[0]))
                else:
                    args["multipath"] = [self._hop_args(h) for h in route.hops]
                self._ipr.route("replace", **args)
            except NetlinkError as exc:
                raise OSError(exc.code, f"route replace {route.dst}: {exc}") from exc

    def del_route(self, dst: str) -> None:
        with self._lock:
            try:
                self._ipr.route("del", **self._base_args(dst))
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ESRCH):
                    raise OSError(exc.code, f"route del {dst}: {exc}") from exc

    def list_routes(self) -> dict[str, FibRoute]:
        out: dict[str, FibRoute] = {}
        with self._lock:
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in self._ipr.get_routes(family=family, proto=self.protocol, table=MAIN_TABLE):
                    route = self._parse(msg, family)
                    if route is not None:
                        out[route.dst] = route
        return out

    def _parse(self, msg: Any, family: int) -> FibRoute | None:
        if msg.get("proto") != self.protocol:
            return None
        dst = msg.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        prefix = f"{dst}/{msg['dst_len']}"
        multipath = msg.get_attr("RTA_MULTIPATH")
        if multipath:
            hops = tuple(
                sorted(
                    NextHop(
                        h.get_attr("RTA_GATEWAY"),
                        self._dev_if_onlink(h["oif"], h["flags"]),
                        bool(h["flags"] & RTNH_F_ONLINK),
                    )
                    for h in multipath
                )
            )
        else:
            flags = msg.get("flags", 0)
            hops = (
                NextHop(
                    msg.get_attr("RTA_GATEWAY") or "",
                    self._dev_if_onlink(msg.get_attr("RTA_OIF"), flags),
                    bool(flags & RTNH_F_ONLINK),
                ),
            )
        return FibRoute(prefix, hops)

    def _dev_if_onlink(self, index: int | None, flags: int) -> str | None:
        """We only pin a device for onlink (tunnel) routes; direct ones let the kernel pick."""
        return self._name(index) if flags & RTNH_F_ONLINK else None
