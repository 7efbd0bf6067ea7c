"""Read-only rtnetlink questions the agent asks at start-up, over one raw socket each.

Why not pyroute2: importing it costs ~0.4 s of CPU and ~21 MB of RSS, and every start asked it
only a handful of questions (the MTU of the node's interface, the node's IPv4 addresses, whether
a WireGuard rule or a tunnel device is there to remove). A one-interface RTM_GETLINK, an address
dump and a rule dump are a few ``struct`` reads; pyroute2 is now imported only when something is
there to change (a tunnel device to make or remove, a WireGuard rule to delete, a CNI CHECK).

Layouts (linux/rtnetlink.h, linux/if_addr.h, linux/fib_rules.h): ifaddrmsg ``=BBBBI`` (family,
prefixlen, flags, scope, index); fib_rule_hdr ``=BBBBBBBBI`` (family, dst_len, src_len, tos,
table, res1, res2, action, flags); attributes as in :mod:`felixpy.netlinkio.messages`.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from felixpy.netlinkio import messages as nl
from felixpy.netlinkio.veth import NetlinkFailure

RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWRULE = 32
RTM_GETRULE = 34
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
FRA_PRIORITY = 6
FRA_FWMARK = 10
FRA_TABLE = 15
FRA_FWMASK = 16
SOCKET_TIMEOUT = 10.0
_GONE = (errno.ENODEV, errno.ENOENT)

_IFADDRMSG = struct.Struct("=BBBBI")
_RULEHDR = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
_HDR = struct.Struct("=IHHII")

SocketFactory = Callable[[], socket.socket]


class Address(NamedTuple):
    ifindex: int
    address: str  # IFA_ADDRESS (IFA_LOCAL when absent)
    prefixlen: int
    scope: int


class Rule(NamedTuple):
    priority: int
    table: int
    fwmark: int
    fwmask: int
    flags: int


def _socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)


def _request(kind: int, flags: int, body: bytes, seq: int = 1) -> bytes:
    return _HDR.pack(_HDR.size + len(body), kind, nl.NLM_F_REQUEST | flags, seq, 0) + body


def _answers(
    sock: socket.socket, request: bytes, what: str, *, single: bool = False
) -> list[tuple[int, bytes]]:
    """Send one request (seq 1) and collect (type, payload) of its answers up to NLMSG_DONE, the
    ack, or (``single``: a plain GET, answered by one message) the first answer; an error raises
    :class:`NetlinkFailure`."""
    with sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.sendall(request)
        out: list[tuple[int, bytes]] = []
        while True:
            for kind, seq, payload in nl.messages(sock.recv(1 << 20)):
                if seq != 1:
                    continue
                if kind == nl.NLMSG_DONE:
                    return out
                if kind == nl.NLMSG_ERROR:
                    code = nl.error_code(payload)
                    if code:
                        raise NetlinkFailure(code, what)
                    return out
                out.append((kind, payload))
                if single:
                    return out


def _attrs(payload: bytes, offset: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            break
        out[kind] = payload[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def link(name: str, *, sock: SocketFactory = _socket) -> tuple[int, int] | None:
    """(ifindex, MTU) of interface ``name``, or None when there is none of that name."""
    try:
        answers = _answers(sock(), nl.pack_get_link(seq=1, name=name), f"reading link {name}", single=True)
    except NetlinkFailure as exc:
        if exc.errno in _GONE:
            return None
        raise
    for kind, payload in answers:
        if kind == RTM_NEWLINK:
            index, _name = nl.parse_link(payload)
            mtu = _attrs(payload, 16).get(IFLA_MTU)
            return index, (_U32.unpack(mtu)[0] if mtu else 0)
    return None


def link_index(name: str, *, sock: SocketFactory = _socket) -> int | None:
    found = link(name, sock=sock)
    return found[0] if found else None


def addresses(family: int = socket.AF_INET, *, sock: SocketFactory = _socket) -> list[Address]:
    """Every address of ``family`` in the namespace, in the kernel's order (``ip -4 addr``)."""
    body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    out: list[Address] = []
    for kind, payload in _answers(sock(), _request(RTM_GETADDR, nl.NLM_F_DUMP, body), "dumping addresses"):
        if kind != RTM_NEWADDR:
            continue
        fam, plen, _flags, scope, index = _IFADDRMSG.unpack_from(payload)
        attrs = _attrs(payload, _IFADDRMSG.size)
        raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
        if raw is None or fam != family:
            continue
        text = socket.inet_ntop(socket.AF_INET6 if fam == socket.AF_INET6 else socket.AF_INET, raw)
        out.append(Address(index, text, plen, scope))
    return out


def rules(family: int = socket.AF_INET, *, sock: SocketFactory = _socket) -> list[Rule]:
    """Every policy-routing rule of ``family`` (``ip rule``), with the fields the agent matches on."""
    body = _RULEHDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    out: list[Rule] = []
    for kind, payload in _answers(sock(), _request(RTM_GETRULE, nl.NLM_F_DUMP, body), "dumping rules"):
        if kind != RTM_NEWRULE:
            continue
        header = _RULEHDR.unpack_from(payload)
        attrs = _attrs(payload, _RULEHDR.size)

        def u32(attr: int, default: int, attrs: dict[int, bytes] = attrs) -> int:
            raw = attrs.get(attr)
            return int(_U32.unpack(raw)[0]) if raw and len(raw) >= 4 else default

        out.append(Rule(u32(FRA_PRIORITY, 0), u32(FRA_TABLE, header[4]), u32(FRA_FWMARK, 0),
                        u32(FRA_FWMASK, 0), header[8]))  # fmt: skip
    return out
