"""RouteWriter: batched route writes and dumps over one raw rtnetlink socket.

The one route writer of the agent: the dataplane's RouteTable (protocol 80, through
``felixpy.dataplane.netlink_ops``) and BGP's FIB (protocol 81, through ``bgp.fib_netlink``) both send
their changes here. ``apply`` packs every request with ``felixpy.netlinkio.messages``, sends
``BATCH`` of them per ``sendmsg`` without asking for acks (an ack per route was most of the
kernel's time) and closes each send with an acked no-op: its ack means every request before it
was handled, and the failures came back matched to their route by sequence number. EEXIST on a
replace and ENOENT/ESRCH on a delete count as done.

Device names are resolved to indexes once per ``apply`` (one RTM_GETLINK per distinct name, all
in one send), never cached across calls: a pod's veth is recreated under the same name with a new
index. A name that does not exist fails its routes with ENODEV without sending them.

The socket is opened by the caller (in whatever network namespace it wants) and owned from then
on. One lock serialises callers: the socket carries one conversation at a time.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from felixpy.netlinkio import messages as nl
from felixpy.netlinkio.messages import Route

BATCH = 512  # requests per send (~26 KB): one sendmsg must fit the send buffer, and the answers
# to a batch where every request fails, the receive buffer (skb truesize, not bytes)
SOCKET_TIMEOUT = 10.0
RCVBUF = 8 << 20
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33
LINK_DUMP_AT = 64  # names wanted from which one link dump costs less than a request per index
DONE_ON_DELETE = (errno.ENOENT, errno.ESRCH)
DONE_ON_REPLACE = (errno.EEXIST,)

K = TypeVar("K")
Failure = tuple[Route, int]  # a route and the errno the kernel (or the name lookup) gave it


def route_socket() -> socket.socket:
    """A raw rtnetlink socket in the calling thread's network namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)


class RouteWriter:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._seq = 0
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without the echoed request
        try:  # dumps filtered by the kernel (``_dump``); GET requests' headers checked strictly
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            self._strict = True
        except OSError:  # before 4.20: every dump is whole, filtered here
            self._strict = False
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, 0))
        sock.settimeout(SOCKET_TIMEOUT)

    def close(self) -> None:
        with self._lock:
            self._sock.close()

    # --- writes ---------------------------------------------------------------------------
    def apply(self, *, delete: Sequence[Route] = (), replace: Sequence[Route] = ()) -> list[Failure]:
        """Delete, then replace, in batches. Returns the routes that failed, with their errno."""
        with self._lock:
            failures: list[Failure] = []
            try:
                indexes = self._indexes({h.dev for r in replace for h in r.hops if h.dev})
            except OSError as exc:  # the lookup's answers lost or late: fail the replaces, retried later
                self._drain()
                failures = [(route, exc.errno or errno.ETIMEDOUT) for route in replace]
                indexes, replace = {}, ()
            requests: list[tuple[Route, bool, bytes]] = []
            for route in delete:
                requests.append((route, True, nl.pack_delete(route, seq=self._next_seq(), ack=False)))
            for route in replace:
                try:
                    packed = nl.pack_replace(
                        route, seq=self._next_seq(), index_of=indexes.__getitem__, ack=False
                    )
                except KeyError:
                    failures.append((route, errno.ENODEV))
                    continue
                except ValueError:
                    failures.append((route, errno.EINVAL))
                    continue
                requests.append((route, False, packed))
            for start in range(0, len(requests), BATCH):
                failures += self._send_batch(requests[start : start + BATCH])
        return failures

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _send_batch(self, chunk: list[tuple[Route, bool, bytes]]) -> list[Failure]:
        by_seq = {
            struct.unpack_from("=I", packed, 8)[0]: (route, deleting) for route, deleting, packed in chunk
        }
        barrier = self._next_seq()
        self._sock.sendall(b"".join(packed for _r, _d, packed in chunk) + nl.pack_barrier(seq=barrier))
        failures: list[Failure] = []
        try:
            while barrier:
                for kind, seq, payload in nl.messages(self._sock.recv(1 << 20)):
                    if kind != nl.NLMSG_ERROR:
                        continue
                    if seq == barrier:
                        barrier = 0
                    elif seq in by_seq:
                        route, deleting = by_seq[seq]
                        code = nl.error_code(payload)
                        if code and code not in (DONE_ON_DELETE if deleting else DONE_ON_REPLACE):
                            failures.append((route, code))
        except OSError as exc:  # ENOBUFS (answers lost) or timeout: unknown outcome, the resync repairs
            failures = [(route, exc.errno or errno.ETIMEDOUT) for route, _deleting in by_seq.values()]
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

    # --- reads ----------------------------------------------------------------------------
    def list_routes(self, *, protocol: int | None, table: int = nl.MAIN_TABLE) -> list[tuple[Route, int]]:
        """(route, route type) for every route of ``protocol`` (None: all) in ``table``, both
        families; a device that vanished meanwhile reads as ``""``. The kernel filters the dump by
        protocol and table when it can (strict checking, kernel >= 4.20): at a restart with 10,000
        learned routes, the dataplane's dump of its ~1,000 then carries ~1,000 routes, not 11,000."""
        with self._lock:
            scanned = [
                fields
                for family in (nl.AF_INET, nl.AF_INET6)
                for payload in self._dump(family, protocol=protocol or 0, table=table)
                if (fields := nl.scan_route(payload, protocol=protocol, table=table)) is not None
            ]
            wanted: set[int] = set()
            for fields in scanned:
                if fields.oif and fields.multipath is None:
                    wanted.add(fields.oif)
                else:
                    wanted |= nl.fields_ifindexes(fields)
            names = self._names(wanted)
        name_of = names.get
        hops_seen: dict[tuple[bytes, int, int], nl.Hop] = {}
        return [
            nl.route_of(fields, name_of=lambda i: name_of(i, ""), hops_seen=hops_seen) for fields in scanned
        ]

    def _dump(self, family: int, *, protocol: int = 0, table: int = 0) -> list[bytes]:
        """Every route message of one dump. A filtered dump that fails (a kernel refusing the
        filter) is asked again unfiltered, and from then on; one of a table that does not exist
        (ENOENT, strict checking only) is empty."""
        filtered = self._strict and bool(protocol or table)
        seq = self._next_seq()
        if filtered:
            self._sock.sendall(nl.pack_dump(family, seq=seq, protocol=protocol, table=table))
        else:
            self._sock.sendall(nl.pack_dump(family, seq=seq))
        payloads: list[bytes] = []
        code = 0
        while True:
            for kind, got, payload in nl.messages(self._sock.recv(1 << 20)):
                if got != seq:
                    continue
                if kind == nl.NLMSG_DONE or kind == nl.NLMSG_ERROR:
                    code = nl.error_code(payload) if len(payload) >= 4 else 0
                    break
                payloads.append(payload)
            else:
                continue
            break
        if not code:
            return payloads
        if filtered and code == errno.ENOENT:
            return []  # no such table (the kernel says so only to a filtered dump)
        if filtered:
            self._strict = False
            return self._dump(family)
        raise OSError(code, f"route dump: errno {code}")

    # --- interface names ------------------------------------------------------------------
    def _indexes(self, names: Iterable[str]) -> dict[str, int]:
        """name → ifindex for the names that exist (one RTM_GETLINK each, in batches)."""
        found = self._links(sorted(names), lambda name, seq: nl.pack_get_link(seq=seq, name=name))
        return {name: index for name, (index, _name) in found.items()}

    def _names(self, indexes: Iterable[int]) -> dict[int, str]:
        """ifindex → name for the indexes that exist: one RTM_GETLINK each, or from ``LINK_DUMP_AT``
        of them one link dump (a restart at x10 names ~1,000 workload devices: ~3x less CPU)."""
        wanted = set(indexes)
        if len(wanted) >= LINK_DUMP_AT:
            return self._names_dumped(wanted)
        found = self._links(sorted(wanted), lambda index, seq: nl.pack_get_link(seq=seq, index=index))
        return {index: name for index, (_index, name) in found.items()}

    def _names_dumped(self, wanted: set[int]) -> dict[int, str]:
        seq = self._next_seq()
        self._sock.sendall(nl.pack_link_dump(seq=seq))
        out: dict[int, str] = {}
        while True:
            for kind, got, payload in nl.messages(self._sock.recv(1 << 20)):
                if got != seq:
                    continue
                if kind == nl.NLMSG_DONE or kind == nl.NLMSG_ERROR:
                    code = nl.error_code(payload) if len(payload) >= 4 else 0
                    if code:
                        raise OSError(code, f"link dump: errno {code}")
                    return out
                if kind == nl.RTM_NEWLINK and nl.link_index(payload) in wanted:
                    index, name = nl.parse_link(payload)
                    out[index] = name

    def _links(self, keys: list[K], pack: Callable[[K, int], bytes]) -> dict[K, tuple[int, str]]:
        """(ifindex, name) of each key's interface, for those that exist."""
        out: dict[K, tuple[int, str]] = {}
        for start in range(0, len(keys), BATCH):
            by_seq: dict[int, K] = {}
            packed = []
            for key in keys[start : start + BATCH]:
                seq = self._next_seq()
                by_seq[seq] = key
                packed.append(pack(key, seq))
            barrier = self._next_seq()
            self._sock.sendall(b"".join(packed) + nl.pack_barrier(seq=barrier))
            while barrier:
                for kind, seq, payload in nl.messages(self._sock.recv(1 << 20)):
                    if kind == nl.NLMSG_ERROR and seq == barrier:
                        barrier = 0
                    elif kind == nl.RTM_NEWLINK and seq in by_seq:
                        out[by_seq[seq]] = nl.parse_link(payload)
        return out
