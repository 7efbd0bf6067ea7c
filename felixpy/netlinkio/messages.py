"""rtnetlink route and link messages, packed and parsed by hand (pure: bytes in, bytes out).

Why not pyroute2's encoder: compiling a route request through its generic message classes costs
~0.25 ms, and its synchronous ``IPRoute`` runs an asyncio loop per call (~1 ms a route). A route
request is a fixed header plus a few attributes, so ``struct`` does it in a few microseconds.
``felixpy.netlinkio.route_writer`` sends what this module packs and hands back what it receives.

Layouts (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h): nlmsghdr ``=IHHII`` (len, type,
flags, seq, pid); rtmsg ``=BBBBBBBBI`` (family, dst_len, src_len, tos, table, protocol, scope,
type, flags); ifinfomsg ``=BxHiII`` (family, type, index, flags, change); rtattr ``=HH`` (len,
type) + payload padded to 4; rtnexthop ``=HBBi`` (len, flags, hops, ifindex) + attributes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
IFLA_IFNAME = 3
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTNH_F_ONLINK = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RTN_THROW = 9
MAIN_TABLE = 254

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_RTNH = struct.Struct("=HBBi")
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")

IndexOf = Callable[[str], int]  # device name → ifindex (raises when missing)
NameOf = Callable[[int], str]  # ifindex → device name


class Hop(NamedTuple):  # tuples, not frozen dataclasses: thousands are built per write or read
    """One next hop: a gateway, a device, or both (``onlink``: the gateway needs no subnet route)."""

    gateway: str = ""
    dev: str | None = None
    onlink: bool = False


class Route(NamedTuple):
    """A kernel route. ``dst`` is a CIDR; ``hops`` is empty for a blackhole and a throw (the lookup
    goes on in the next rule's table, as the WireGuard table does for nodes that are not peers);
    ``metric`` None lets the kernel choose (0 for IPv4, 1024 for IPv6)."""

    dst: str
    hops: tuple[Hop, ...] = ()
    protocol: int = 0
    table: int = MAIN_TABLE
    metric: int | None = None
    blackhole: bool = False
    throw: bool = False


class Prefix(NamedTuple):  # a tuple: one is built per route packed (10,000 at a BGP start)
    family: int
    packed: bytes
    length: int


def pack_address(address: str) -> bytes:
    if ":" in address:
        return ipaddress.IPv6Address(address).packed
    try:
        return socket.inet_pton(socket.AF_INET, address)  # strict dotted quad: ~10x the loop below
    except OSError:
        pass  # anything else keeps the loop's answer (or its ValueError)
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


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def _hop_attrs(hop: Hop, index_of: IndexOf) -> tuple[bytes, int, int]:
    """(attributes, ifindex, flags) for one next hop."""
    ifindex = index_of(hop.dev) if hop.dev else 0
    attrs = _attr(RTA_GATEWAY, pack_address(hop.gateway)) if hop.gateway else b""
    return attrs, ifindex, RTNH_F_ONLINK if hop.onlink else 0


def _table_fields(table: int) -> tuple[int, bytes]:
    """rtm_table and, for tables past 255, the RTA_TABLE attribute that carries it."""
    return (table, b"") if table < 256 else (0, _attr(RTA_TABLE, _U32.pack(table)))


_MAIN = (MAIN_TABLE, b"")


def pack_replace(route: Route, *, seq: int, index_of: IndexOf, ack: bool = True) -> bytes:
    """RTM_NEWROUTE with NLM_F_REPLACE|NLM_F_CREATE: ``ip route replace`` for one route.

    Without ``ack`` the kernel answers only a failure (an NLMSG_ERROR with that errno)."""
    dst = parse_prefix(route.dst)
    rtm_table, attrs = _MAIN if route.table == MAIN_TABLE else _table_fields(route.table)
    attrs += _attr(RTA_DST, dst.packed)
    if route.metric is not None:
        attrs += _attr(RTA_PRIORITY, _U32.pack(route.metric))
    rtm_flags, scope, kind = 0, RT_SCOPE_UNIVERSE, RTN_UNICAST
    if route.blackhole or route.throw:
        if route.hops or (route.blackhole and route.throw):
            raise ValueError(f"route {route.dst}: a blackhole or throw route has no next hop")
        kind = RTN_BLACKHOLE if route.blackhole else RTN_THROW
    elif len(route.hops) == 1:
        hop = route.hops[0]
        payload, ifindex, rtm_flags = _hop_attrs(hop, index_of)
        attrs += payload + (_attr(RTA_OIF, _I32.pack(ifindex)) if ifindex else b"")
        if not hop.gateway and dst.family == AF_INET:
            scope = RT_SCOPE_LINK  # ``dev X``: the destination is on the link
    elif route.hops:
        nexthops = b""
        for hop in route.hops:
            payload, ifindex, hop_flags = _hop_attrs(hop, index_of)
            nexthops += _RTNH.pack(_RTNH.size + len(payload), hop_flags, 0, ifindex) + payload
        attrs += _attr(RTA_MULTIPATH, nexthops)
    else:
        raise ValueError(f"route {route.dst}: a unicast route needs a next hop")
    header = _RTMSG.pack(dst.family, dst.length, 0, 0, rtm_table, route.protocol, scope, kind, rtm_flags)
    flags = NLM_F_REQUEST | NLM_F_REPLACE | NLM_F_CREATE | (NLM_F_ACK if ack else 0)
    return _message(RTM_NEWROUTE, flags, seq, header + attrs)


def pack_delete(route: Route, *, seq: int, ack: bool = True) -> bytes:
    """RTM_DELROUTE for ``route.dst`` of ``route.protocol`` in ``route.table`` (and ``route.metric``
    when set), whatever its type, scope and next hops."""
    dst = parse_prefix(route.dst)
    rtm_table, attrs = _MAIN if route.table == MAIN_TABLE else _table_fields(route.table)
    attrs += _attr(RTA_DST, dst.packed)
    if route.metric is not None:
        attrs += _attr(RTA_PRIORITY, _U32.pack(route.metric))
    header = _RTMSG.pack(dst.family, dst.length, 0, 0, rtm_table, route.protocol, RT_SCOPE_NOWHERE, 0, 0)
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    return _message(RTM_DELROUTE, flags, seq, header + attrs)


def pack_barrier(*, seq: int) -> bytes:
    """NLMSG_NOOP asking for an ack: the kernel handles a socket's requests in order, so when
    this ack arrives every failure of the un-acked requests before it has been reported."""
    return _message(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, seq, b"")


def pack_dump(family: int, *, seq: int, protocol: int = 0, table: int = 0) -> bytes:
    """RTM_GETROUTE dump of ``family``. ``protocol``/``table`` (0: any) are a filter the kernel
    applies (since 4.20) when the socket has NETLINK_GET_STRICT_CHK set, and ignores otherwise: the
    reader still checks each route (:func:`scan_route`)."""
    rtm_table, attrs = _table_fields(table) if table else (0, b"")
    header = _RTMSG.pack(family, 0, 0, 0, rtm_table, protocol, 0, 0, 0)
    return _message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, header + attrs)


def pack_get_link(*, seq: int, name: str = "", index: int = 0) -> bytes:
    """RTM_GETLINK for one interface, by name or by index; answered by RTM_NEWLINK or an error."""
    body = _IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0)
    if name:
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
    return _message(RTM_GETLINK, NLM_F_REQUEST, seq, body)


def pack_link_dump(*, seq: int) -> bytes:
    """RTM_GETLINK dump of every interface, without their statistics (IFLA_EXT_MASK
    RTEXT_FILTER_SKIP_STATS: a kernel that does not know the bit sends them anyway)."""
    body = _IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS))
    return _message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


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
    return -int(_I32.unpack_from(payload)[0])


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return out


def link_index(payload: bytes) -> int:
    """The ifindex of an RTM_NEWLINK payload."""
    return int(_IFINFOMSG.unpack_from(payload)[2])


def parse_link(payload: bytes) -> tuple[int, str]:
    """(ifindex, name) of an RTM_NEWLINK payload. Reads the attributes only up to IFLA_IFNAME (the
    kernel puts it first): a reply carries ~40 of them, with statistics, and slicing them all cost
    ~0.1 ms a link, ~0.1 s for the 1,000 name lookups of a first route write at x10."""
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
    offset, end = _IFINFOMSG.size, len(payload)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            break
        if kind == IFLA_IFNAME:
            name = payload[offset + _RTATTR.size : offset + length].split(b"\0", 1)[0]
            return int(index), name.decode(errors="replace")
        offset += (length + 3) & ~3
    return int(index), ""


def _address(family: int, raw: bytes) -> str:
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)  # the same dotted quad, ~5x faster
    return ".".join(str(b) for b in raw)


def route_matches(payload: bytes, *, protocol: int | None, table: int) -> bool:
    """Whether a dumped route is of ``protocol`` (None: any) in ``table``, read from its header
    and RTA_TABLE only: most of a dump is skipped without parsing further."""
    _family, _dst, _src, _tos, rtm_table, proto, _scope, _type, _flags = _RTMSG.unpack_from(payload)
    if protocol is not None and proto != protocol:
        return False
    if rtm_table == table and table < 256:
        return True
    found = _attrs(payload, _RTMSG.size).get(RTA_TABLE)
    return found is not None and int(_U32.unpack(found)[0]) == table


def route_ifindexes(payload: bytes) -> set[int]:
    """The interface indexes a dumped route refers to (RTA_OIF and each multipath hop's)."""
    found: set[int] = set()
    offset = _RTMSG.size
    while offset + _RTATTR.size <= len(payload):  # a scan, not a parse: this runs for every route read
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size:
            break
        if kind == RTA_OIF:
            found.add(_I32.unpack_from(payload, offset + _RTATTR.size)[0])
        elif kind == RTA_MULTIPATH:
            hop, end = offset + _RTATTR.size, offset + length
            while hop + _RTNH.size <= end:
                size, _flags, _hops, ifindex = _RTNH.unpack_from(payload, hop)
                if size < _RTNH.size:
                    break
                found.add(ifindex)
                hop += (size + 3) & ~3
        offset += (length + 3) & ~3
    found.discard(0)
    return found


def _nexthops(family: int, data: bytes, name_of: NameOf) -> tuple[Hop, ...]:
    hops: list[Hop] = []
    offset = 0
    while offset + _RTNH.size <= len(data):
        length, flags, _hops, ifindex = _RTNH.unpack_from(data, offset)
        if length < _RTNH.size:
            break
        attrs = _attrs(data[offset + _RTNH.size : offset + length])
        hops.append(_hop(family, attrs.get(RTA_GATEWAY, b""), ifindex, flags, name_of))
        offset += (length + 3) & ~3
    return tuple(sorted(hops))


def _hop(family: int, gateway: bytes, ifindex: int, flags: int, name_of: NameOf) -> Hop:
    # interned: a dump of 10,000 learned routes names a handful of gateways
    return Hop(
        sys.intern(_address(family, gateway)) if gateway else "",
        name_of(ifindex) if ifindex else None,
        bool(flags & RTNH_F_ONLINK),
    )


class RouteFields(NamedTuple):
    """What the agent reads of a dumped route, raw (:func:`scan_route`), before names and text."""

    family: int
    dst_len: int
    table: int  # RTA_TABLE, else rtm_table
    protocol: int
    kind: int  # rtm_type
    flags: int  # rtm_flags
    dst: bytes  # RTA_DST (b"": the default route)
    metric: int | None  # RTA_PRIORITY
    oif: int  # RTA_OIF (0: none)
    gateway: bytes  # RTA_GATEWAY (b"": none)
    multipath: bytes | None  # RTA_MULTIPATH's payload


def scan_route(
    payload: bytes, *, protocol: int | None = None, table: int | None = None
) -> RouteFields | None:
    """One pass over a dumped route's attributes, keeping only the fields the agent uses; None when
    it is not of ``protocol`` or not in ``table`` (None: any). A restart reads ~21,000 routes at
    x10 with BGP: one walk without a dict per route costs about half of the three it replaces
    (:func:`route_matches`, :func:`route_ifindexes`, and the attribute dict of the old parse)."""
    family, dst_len, _src, _tos, rtm_table, proto, _scope, kind, flags = _RTMSG.unpack_from(payload)
    if protocol is not None and proto != protocol:
        return None
    dst = gateway = b""
    metric: int | None = None
    multipath: bytes | None = None
    oif, rt_table = 0, rtm_table
    offset, end = _RTMSG.size, len(payload)
    while offset + 4 <= end:
        length, attr = _RTATTR.unpack_from(payload, offset)
        if length < 4:
            break
        if attr == RTA_DST:
            dst = payload[offset + 4 : offset + length]
        elif attr == RTA_OIF:
            oif = _I32.unpack_from(payload, offset + 4)[0]
        elif attr == RTA_GATEWAY:
            gateway = payload[offset + 4 : offset + length]
        elif attr == RTA_PRIORITY:
            metric = _U32.unpack_from(payload, offset + 4)[0]
        elif attr == RTA_TABLE:
            rt_table = _U32.unpack_from(payload, offset + 4)[0]
        elif attr == RTA_MULTIPATH:
            multipath = payload[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    if table is not None and rt_table != table:
        return None
    return RouteFields(family, dst_len, rt_table, proto, kind, flags, dst, metric, oif, gateway, multipath)


def fields_ifindexes(fields: RouteFields) -> set[int]:
    """The interface indexes a scanned route refers to (RTA_OIF and each multipath hop's)."""
    found = {fields.oif} if fields.oif else set()
    data = fields.multipath
    if data is not None:
        hop = 0
        while hop + _RTNH.size <= len(data):
            size, _flags, _hops, ifindex = _RTNH.unpack_from(data, hop)
            if size < _RTNH.size:
                break
            if ifindex:
                found.add(ifindex)
            hop += (size + 3) & ~3
    return found


def route_of(
    fields: RouteFields, *, name_of: NameOf, hops_seen: dict[tuple[bytes, int, int], Hop] | None = None
) -> tuple[Route, int]:
    """(Route, route type) of a scanned route: :func:`parse_route` after :func:`scan_route`.
    ``hops_seen``: single next hops already made, shared across the routes of one dump (10,000
    learned routes have a handful of distinct next hops)."""
    family, kind = fields.family, fields.kind
    dst = _address(family, fields.dst) if fields.dst else ("::" if family == AF_INET6 else "0.0.0.0")
    prefix = f"{dst}/{fields.dst_len}"  # the kernel keeps destinations masked: already a network address
    hops: tuple[Hop, ...] = ()
    if fields.multipath is not None:
        hops = _nexthops(family, fields.multipath, name_of)
    elif kind not in (RTN_BLACKHOLE, RTN_THROW):  # (IPv6 gives both ``dev lo``: not a next hop)
        if hops_seen is None:
            hops = (_hop(family, fields.gateway, fields.oif, fields.flags, name_of),)
        else:
            key = (fields.gateway, fields.oif, fields.flags & RTNH_F_ONLINK)
            hop = hops_seen.get(key)
            if hop is None:
                hop = hops_seen[key] = _hop(family, fields.gateway, fields.oif, fields.flags, name_of)
            hops = (hop,)
    blackhole, throw = kind == RTN_BLACKHOLE, kind == RTN_THROW
    route = Route(
        prefix, hops, fields.protocol, fields.table, fields.metric, blackhole=blackhole, throw=throw
    )
    return route, kind


def parse_route(payload: bytes, *, name_of: NameOf) -> tuple[Route, int]:
    """One RTM_NEWROUTE payload → (Route, route type: RTN_UNICAST, RTN_BLACKHOLE, RTN_THROW, …)."""
    fields = scan_route(payload)
    assert fields is not None  # no filter: every route scans
    return route_of(fields, name_of=name_of)
