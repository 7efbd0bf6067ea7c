"""rtnetlink route messages, packed and parsed by hand (pure: bytes in, bytes out).

Why not pyroute2's encoder: compiling a route request through its generic message classes
costs ~0.25 ms, which capped the FIB at ~3,700 routes/s before the kernel did any work. A
route request is a fixed header plus three or four attributes, so ``struct`` does it in a
few microseconds. ``netlink`` sends what this module packs and hands back what it receives;
``parse_routes`` reads a dump (RTM_NEWROUTE messages) into ``FibRoute`` values.

Layouts (linux/netlink.h, linux/rtnetlink.h): nlmsghdr ``=IHHII`` (len, type, flags, seq,
pid); rtmsg ``=BBBBBBBBI`` (family, dst_len, src_len, tos, table, protocol, scope, type,
flags); rtattr ``=HH`` (len, type) + payload padded to 4; rtnexthop ``=HBBi`` (len, flags,
hops, ifindex) + attributes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bgp.fib import FibRoute, NextHop

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
AF_INET = 2
AF_INET6 = 10
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTNH_F_ONLINK = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1
MAIN_TABLE = 254

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_RTNH = struct.Struct("=HBBi")
_ERRNO = struct.Struct("=i")

IndexOf = Callable[[str], int]  # device name → ifindex (raises OSError when missing)
NameOf = Callable[[int], str]


@dataclass(frozen=True, slots=True)
class Prefix:
    family: int
    packed: bytes
    length: int


def pack_address(address: str) -> bytes:
    if ":" in address:
        return ipaddress.IPv6Address(address).packed
    octets = address.split(".")
    if len(octets) != 4:
        raise ValueError(f"not an IPv4 address: {address!r}")
    return bytes(int(o) for o in octets)


def parse_prefix(text: str) -> Prefix:
    address, _, length = text.partition("/")
    family = AF_INET6 if ":" in address else AF_INET
    return Prefix(family, pack_address(address), int(length or (128 if family == AF_INET6 else 32)))


def _attr(kind: int, payload: bytes) -> bytes:
    size = _RTATTR.size + len(payload)
    return _RTATTR.pack(size, kind) + payload + b"\0" * (-size & 3)


def _gateway(address: str) -> bytes:
    return _attr(RTA_GATEWAY, pack_address(address))


def _hop_attrs(hop: NextHop, index_of: IndexOf) -> tuple[bytes, int, int]:
    """(attributes, ifindex, flags) for one next hop."""
    ifindex = index_of(hop.dev) if hop.dev else 0
    return _gateway(hop.gateway), ifindex, RTNH_F_ONLINK if hop.onlink else 0


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


# The metric (priority) of routes learned over BGP: 32 for IPv4, as BIRD 2's kernel protocol (what
# a Calico node has); above the kernel's 1024 for IPv6. A replace only ever matches a route of the
# same destination AND metric, and the dataplane's workload routes have 0 (IPv4) or 1024 (IPv6):
# whatever BGP writes can neither overwrite them nor win a lookup against them.
BGP_METRIC = {AF_INET: 32, AF_INET6: 1056}


def pack_replace(
    route: FibRoute,
    *,
    seq: int,
    protocol: int,
    index_of: IndexOf,
    ack: bool = True,
    metric: int | None = None,
) -> bytes:
    """RTM_NEWROUTE with NLM_F_REPLACE|NLM_F_CREATE: ``ip route replace ... metric M`` for one route
    (``metric``: None = ``BGP_METRIC`` of its family).

    Without ``ack`` the kernel answers only a failure (an NLMSG_ERROR with that errno)."""
    dst = parse_prefix(route.dst)
    priority = BGP_METRIC[dst.family] if metric is None else metric
    attrs = _attr(RTA_DST, dst.packed) + _attr(RTA_PRIORITY, struct.pack("=I", priority))
    rtm_flags = 0
    if len(route.hops) == 1:
        payload, ifindex, rtm_flags = _hop_attrs(route.hops[0], index_of)
        attrs += payload + (_attr(RTA_OIF, struct.pack("=i", ifindex)) if ifindex else b"")
    else:
        nexthops = b""
        for hop in route.hops:
            payload, ifindex, hop_flags = _hop_attrs(hop, index_of)
            nexthops += _RTNH.pack(_RTNH.size + len(payload), hop_flags, 0, ifindex) + payload
        attrs += _attr(RTA_MULTIPATH, nexthops)
    header = _RTMSG.pack(
        dst.family, dst.length, 0, 0, MAIN_TABLE, protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, rtm_flags
    )
    flags = NLM_F_REQUEST | NLM_F_REPLACE | NLM_F_CREATE | (NLM_F_ACK if ack else 0)
    return _message(RTM_NEWROUTE, flags, seq, header + attrs)


def pack_delete(
    dst_text: str, *, seq: int, protocol: int, ack: bool = True, metric: int | None = None
) -> bytes:
    """RTM_DELROUTE matching any next hop, but only routes of ``protocol`` in the main table
    (``metric``: only the one with that metric; None: the first of any)."""
    dst = parse_prefix(dst_text)
    header = _RTMSG.pack(dst.family, dst.length, 0, 0, MAIN_TABLE, protocol, RT_SCOPE_NOWHERE, 0, 0)
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    attrs = _attr(RTA_DST, dst.packed)
    if metric is not None:
        attrs += _attr(RTA_PRIORITY, struct.pack("=I", metric))
    return _message(RTM_DELROUTE, flags, seq, header + attrs)


def route_metric(payload: bytes) -> int:
    """The metric (priority) of a route message (0 when it carries none)."""
    attrs = _attrs(payload, _RTMSG.size)
    return struct.unpack("=I", attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0


def pack_barrier(*, seq: int) -> bytes:
    """NLMSG_NOOP asking for an ack: the kernel handles a socket's requests in order, so when
    this ack arrives every failure of the un-acked requests before it has been reported."""
    return _message(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, b"")


def pack_dump(family: int, *, seq: int) -> bytes:
    header = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return _message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, header)


def messages(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) for each netlink message in ``buf``."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(buf):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, seq, buf[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def error_code(payload: bytes) -> int:
    """The positive errno of an NLMSG_ERROR payload (0 = an ack)."""
    return -_ERRNO.unpack_from(payload)[0]


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return out


def _address(family: int, raw: bytes) -> str:
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    return ".".join(str(b) for b in raw)


def _nexthops(family: int, data: bytes, name_of: NameOf) -> tuple[NextHop, ...]:
    hops: list[NextHop] = []
    offset = 0
    while offset + _RTNH.size <= len(data):
        length, flags, _hops, ifindex = _RTNH.unpack_from(data, offset)
        if length < _RTNH.size:
            break
        attrs = _attrs(data[offset + _RTNH.size : offset + length])
        hops.append(_hop(family, attrs.get(RTA_GATEWAY, b""), ifindex, flags, name_of))
        offset += (length + 3) & ~3
    return tuple(sorted(hops))


def _hop(family: int, gateway: bytes, ifindex: int, flags: int, name_of: NameOf) -> NextHop:
    onlink = bool(flags & RTNH_F_ONLINK)
    # only onlink (tunnel) hops pin a device: direct ones let the kernel pick, as we install them
    dev = name_of(ifindex) if onlink and ifindex else None
    return NextHop(_address(family, gateway) if gateway else "", dev, onlink)


def host_route_dst(payload: bytes, *, protocol: int) -> str | None:
    """The destination of a host route (/32, /128) of ``protocol`` in the main table, else None."""
    family, dst_len, _src, _tos, table, proto, _scope, _type, _flags = _RTMSG.unpack_from(payload)
    if proto != protocol or dst_len != (128 if family == AF_INET6 else 32):
        return None
    attrs = _attrs(payload, _RTMSG.size)
    table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
    raw = attrs.get(RTA_DST)
    if table != MAIN_TABLE or not raw:
        return None
    return f"{_address(family, raw)}/{dst_len}"


def parse_route(payload: bytes, *, protocol: int, name_of: NameOf) -> FibRoute | None:
    """One RTM_NEWROUTE payload → FibRoute, or None when not ours (protocol, table)."""
    family, dst_len, _src, _tos, table, proto, _scope, _type, flags = _RTMSG.unpack_from(payload)
    if proto != protocol:
        return None
    attrs = _attrs(payload, _RTMSG.size)
    table = struct.unpack("=I", attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
    if table != MAIN_TABLE:
        return None
    raw = attrs.get(RTA_DST)
    dst = _address(family, raw) if raw else ("::" if family == AF_INET6 else "0.0.0.0")
    prefix = str(ipaddress.ip_network(f"{dst}/{dst_len}", strict=False))
    if RTA_MULTIPATH in attrs:
        hops = _nexthops(family, attrs[RTA_MULTIPATH], name_of)
    else:
        oif = struct.unpack("=i", attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
        hops = (_hop(family, attrs.get(RTA_GATEWAY, b""), oif, flags, name_of),)
    return FibRoute(prefix, hops)
