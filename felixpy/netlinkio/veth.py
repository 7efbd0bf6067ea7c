"""A workload veth made over raw rtnetlink: a few sends, no pyroute2.

Why: pyroute2's synchronous ``IPRoute`` runs an asyncio loop per call and compiles each request
through its generic message classes (~1 ms a call, several times that on a loaded node); a CNI ADD
made ~10 such calls plus two ``IPRoute`` set-ups. Here each side of the veth is one conversation
over one socket: the requests of a step go out in one ``sendall`` and every one of them is acked
(the kernel handles a socket's messages in order and answers each), so a step costs one round
trip. Pure packing functions (bytes out) plus :func:`converse`, which sends and collects.

Layouts (linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h, linux/veth.h): ifinfomsg ``=BxHiII``
(family, type, index, flags, change); ifaddrmsg ``=BBBBI`` (family, prefixlen, flags, scope,
index); the veth peer is ``IFLA_LINKINFO { IFLA_INFO_KIND "veth", IFLA_INFO_DATA { VETH_INFO_PEER:
ifinfomsg + attributes } }``, its namespace ``IFLA_NET_NS_FD``.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from felixpy.netlinkio import messages as nl

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
NLM_F_EXCL = 0x200
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1
RTPROT_BOOT = 3  # what ``ip route add`` writes when no protocol is given
SOCKET_TIMEOUT = 10.0

_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_U32 = struct.Struct("=I")


class NetlinkFailure(OSError):
    """A request the kernel refused: ``errno`` is its error, ``what`` names the request."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {errno.errorcode.get(code, code)} ({code})")
        self.what = what


@dataclass(frozen=True, slots=True)
class Request:
    """One packed request, what it does (for errors), and the errnos that count as done."""

    packed: bytes
    what: str
    done_on: tuple[int, ...] = ()


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size & 3)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, 0) + body


def pack_new_veth(*, seq: int, name: str, mac: str, mtu: int, peer: str, peer_netns_fd: int) -> bytes:
    """``ip link add NAME address MAC mtu MTU type veth peer name PEER mtu MTU netns FD``
    (create only: EEXIST when NAME is taken)."""
    peer_body = (
        _IFINFOMSG.pack(nl.AF_UNSPEC, 0, 0, 0, 0)
        + _attr(IFLA_IFNAME, _name(peer))
        + _attr(IFLA_MTU, _U32.pack(mtu))
        + _attr(IFLA_NET_NS_FD, _U32.pack(peer_netns_fd))
    )
    linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_body))
    body = (
        _IFINFOMSG.pack(nl.AF_UNSPEC, 0, 0, 0, 0)
        + _attr(IFLA_IFNAME, _name(name))
        + _attr(IFLA_ADDRESS, _mac(mac))
        + _attr(IFLA_MTU, _U32.pack(mtu))
        + _attr(IFLA_LINKINFO, linkinfo)
    )
    return _message(RTM_NEWLINK, nl.NLM_F_CREATE | NLM_F_EXCL, seq, body)


def pack_del_link(*, seq: int, name: str = "", index: int = 0) -> bytes:
    """``ip link del`` by name or index (ENODEV when it is not there)."""
    body = _IFINFOMSG.pack(nl.AF_UNSPEC, 0, index, 0, 0) + (_attr(IFLA_IFNAME, _name(name)) if name else b"")
    return _message(RTM_DELLINK, 0, seq, body)


def pack_get_link(*, seq: int, name: str = "", index: int = 0) -> bytes:
    """RTM_GETLINK of one interface: answered by its RTM_NEWLINK, then the ack."""
    body = _IFINFOMSG.pack(nl.AF_UNSPEC, 0, index, 0, 0) + (_attr(IFLA_IFNAME, _name(name)) if name else b"")
    return _message(RTM_GETLINK, 0, seq, body)


def pack_set_up(*, seq: int, index: int) -> bytes:
    """``ip link set dev INDEX up``."""
    return _message(RTM_NEWLINK, 0, seq, _IFINFOMSG.pack(nl.AF_UNSPEC, 0, index, IFF_UP, IFF_UP))


def pack_new_addr(*, seq: int, index: int, address: str, flags: int = 0) -> bytes:
    """``ip addr add ADDRESS/PLEN dev INDEX`` (``flags``: IFA_F_*, e.g. NODAD; EEXIST when present)."""
    prefix = nl.parse_prefix(address)
    body = _IFADDRMSG.pack(prefix.family, prefix.length, flags, 0, index) + _attr(IFA_LOCAL, prefix.packed)
    if prefix.family == nl.AF_INET:
        body += _attr(IFA_ADDRESS, prefix.packed)
    return _message(RTM_NEWADDR, nl.NLM_F_CREATE | NLM_F_EXCL, seq, body)


def pack_route(*, seq: int, route: nl.Route, index: int) -> bytes:
    """``ip route replace`` of a route whose next hops are all on interface ``index``."""
    return nl.pack_replace(route, seq=seq, index_of=lambda _name: index, ack=True)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    name: str
    mac: str
    peer_index: int  # IFLA_LINK: a veth's peer's index (in the peer's namespace); 0 if none


def parse_link(payload: bytes) -> LinkInfo:
    """An RTM_NEWLINK payload's index, name, MAC and IFLA_LINK."""
    index, name = nl.parse_link(payload)
    offset, mac, peer = _IFINFOMSG.size, "", 0
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            break
        if kind == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in payload[offset + 4 : offset + length])
        elif kind == IFLA_LINK:
            peer = int(struct.unpack_from("=i", payload, offset + 4)[0])
        offset += (length + 3) & ~3
    return LinkInfo(index, name, mac, peer)


def pack_dump_links(*, seq: int) -> bytes:
    """RTM_GETLINK dump of every interface of the namespace."""
    body = _IFINFOMSG.pack(nl.AF_UNSPEC, 0, 0, 0, 0)
    return struct.pack("=IHHII", 16 + len(body), RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq, 0) + body


def link_name_kind(payload: bytes) -> tuple[str, str]:
    """(name, IFLA_INFO_KIND or "") of an RTM_NEWLINK payload; reads nothing else."""
    name = kind = ""
    offset = _IFINFOMSG.size
    while offset + 4 <= len(payload):
        length, attr = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            break
        if attr == IFLA_IFNAME:
            name = payload[offset + 4 : offset + length].split(b"\0", 1)[0].decode(errors="replace")
        elif attr == IFLA_LINKINFO:
            inner, end = offset + 4, offset + length
            while inner + 4 <= end:
                ilen, ikind = struct.unpack_from("=HH", payload, inner)
                if ilen < 4:
                    break
                if ikind == IFLA_INFO_KIND:
                    kind = payload[inner + 4 : inner + ilen].split(b"\0", 1)[0].decode(errors="replace")
                    break
                inner += (ilen + 3) & ~3
            if name:  # IFLA_IFNAME comes before IFLA_LINKINFO: nothing further is read
                break
        offset += (length + 3) & ~3
    return name, kind


class Conversation:
    """Requests over one raw rtnetlink socket (opened by the caller, in the namespace it wants;
    owned from then on). Not thread-safe: one per step of one caller."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = 0
        self.last_codes: dict[int, int] = {}  # {seq: errno} of the last run
        sock.settimeout(SOCKET_TIMEOUT)
        sock.bind((0, 0))

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    def run(self, requests: Sequence[Request]) -> tuple[dict[int, int], dict[int, bytes]]:
        """Send every request in one ``sendall`` and wait for every ack. Returns ({seq: errno}
        for each request, 0 = done) and ({seq: RTM_NEWLINK payload} for link reads)."""
        pending = {struct.unpack_from("=I", r.packed, 8)[0] for r in requests}
        self.sock.sendall(b"".join(r.packed for r in requests))
        codes: dict[int, int] = {}
        links: dict[int, bytes] = {}
        while pending:
            for kind, seq, payload in nl.messages(self.sock.recv(1 << 16)):
                if kind == nl.NLMSG_ERROR and seq in pending:
                    codes[seq] = nl.error_code(payload)
                    pending.discard(seq)
                elif kind == RTM_NEWLINK and seq in pending:
                    links[seq] = payload
        self.last_codes = codes
        return codes, links

    def link_kinds(self) -> list[tuple[str, str]]:
        """(name, kind) of every interface in the socket's namespace: one RTM_GETLINK dump, parsed
        for those two attributes only (pyroute2 decodes every attribute of every link)."""
        seq = self.seq()
        self.sock.sendall(pack_dump_links(seq=seq))
        out: list[tuple[str, str]] = []
        while True:
            for kind, got, payload in nl.messages(self.sock.recv(1 << 20)):
                if got != seq:
                    continue
                if kind == nl.NLMSG_DONE:
                    return out
                if kind == nl.NLMSG_ERROR:
                    code = nl.error_code(payload)
                    raise NetlinkFailure(code, "dumping links")
                if kind == RTM_NEWLINK:
                    out.append(link_name_kind(payload))

    def check(self, requests: Sequence[Request]) -> dict[int, bytes]:
        """:meth:`run`, raising :class:`NetlinkFailure` for the first request that failed (in
        order) with an errno it does not count as done. Returns the link payloads."""
        codes, links = self.run(requests)
        for r in requests:
            code = codes.get(struct.unpack_from("=I", r.packed, 8)[0], 0)
            if code and code not in r.done_on:
                raise NetlinkFailure(code, r.what)
        return links


def route_socket() -> socket.socket:
    """A raw rtnetlink socket in the calling thread's network namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
