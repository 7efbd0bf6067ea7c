"""Wire mode for ExaBGP 5.0.15: UPDATE messages pass between the agent and the socket as bytes.

Runs inside the ExaBGP process (``bgp.exabgp_launch`` installs it when ``FELIXPY_BGP_WIRE=1``,
which the agent sets for route-reflector nodes). ExaBGP still owns every session — OPEN and
capabilities, keepalives and hold timer, graceful restart, MD5, collisions, NOTIFICATIONs —
but on a session that negotiated 4-byte AS numbers and no ADD-PATH:

* **in**: an UPDATE is not decoded by ExaBGP; its header and body go to the API process as
  ExaBGP's own ``packets`` JSON (``"message": {"category": 2, "header": .., "body": ..}``) to the
  processes subscribed to received updates (``packets_json``), and the peer loop gets ExaBGP's empty-UPDATE
  sentinel, so the hold timer is refreshed exactly as for a decoded one. The agent decodes
  (``bgp.wire``). Other messages (OPEN, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH) go through
  ExaBGP's own reader unchanged; a ROUTE-REFRESH is also announced to the agent
  (``felixpy-refresh``), which resends the session's whole table.
* **out**: ``neighbor <ip> felixpy-wire <hex> [<hex> ...]`` queues complete UPDATE messages
  (the agent encodes them) on that session (``neighbor <a> , neighbor <b> felixpy-wire ...``:
  on each of those that is established, so a reflector's clients share one copy); the peer
  loop writes them through ExaBGP's own ``send`` from ``new_update`` — the same generator, in
  the same order, that writes ExaBGP's own UPDATEs — before anything from its outgoing RIB.
  Each queued message is tied to the session (``Protocol`` object) it was queued for and
  dropped if that session is gone: after a reconnect the agent replays its whole Adj-RIB-Out
  (ExaBGP keeps none for wire routes). A command for a peer that is not established (for
  several, none of them), or bytes that are not UPDATE messages, is answered ``error`` and
  changes nothing.

Why: ExaBGP's per-route Python (decode, RIB, per-neighbour copies, re-encode) made a reflector
30-50x slower than BIRD; moving bytes costs almost nothing (docs/perf-bgp.md §2,
docs/architecture.md §Departures). Only the version it was read from is patched.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

PATCHED_VERSIONS = ("5.0.15",)
ENV = "FELIXPY_BGP_WIRE"
COMMAND = "felixpy-wire"
_UPDATE_TYPE = 2
_ROUTE_REFRESH_TYPE = 5
_MARKER = b"\xff" * 16
_QUEUE_ATTR = "_felixpy_wire_queue"
_originals: dict[str, Any] = {}


def enabled(environ: dict[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(ENV, "") == "1"


def session_is_wire(negotiated: Any) -> bool:
    """Raw UPDATEs only where the agent's codec reads and writes exactly what is on the wire."""
    if negotiated is None or not getattr(negotiated, "asn4", False):
        return False
    addpath = negotiated.addpath
    return not any(addpath.send(*f[:2]) or addpath.receive(*f[:2]) for f in negotiated.families)


def split_messages(hexes: list[str]) -> list[bytes]:
    """Hex words → UPDATE messages; ValueError if any is not one complete UPDATE."""
    out = []
    for word in hexes:
        raw = bytes.fromhex(word)
        if len(raw) < 23 or raw[:16] != _MARKER or raw[18] != _UPDATE_TYPE:
            raise ValueError("not a BGP UPDATE message")
        if int.from_bytes(raw[16:18], "big") != len(raw):
            raise ValueError("UPDATE length field does not match its size")
        out.append(raw)
    return out


def _queue(outgoing: Any) -> collections.deque[tuple[Any, bytes]]:
    queue = getattr(outgoing, _QUEUE_ATTR, None)
    if queue is None:
        queue = collections.deque()
        setattr(outgoing, _QUEUE_ATTR, queue)
    return queue


def packets_json(neighbor: Any, header: bytes, body: bytes) -> str:
    """ExaBGP's ``packets`` JSON for a received UPDATE, with the fields the agent reads.

    Written here because ExaBGP formats hex one byte at a time (~1 ms per 4 KiB message).
    """
    return json.dumps(
        {
            "exabgp": "wire",
            "type": "update",
            "neighbor": {
                "address": {"local": str(neighbor["local-address"]), "peer": str(neighbor["peer-address"])},
                "asn": {"local": int(neighbor["local-as"]), "peer": int(neighbor["peer-as"])},
                "direction": "receive",
                "message": {
                    "category": _UPDATE_TYPE,
                    "header": "0x" + header.hex(),
                    "body": "0x" + body.hex(),
                },
            },
        }
    )


def refresh_json(neighbor: Any) -> str:
    peer = {"local": str(neighbor["local-address"]), "peer": str(neighbor["peer-address"])}
    return json.dumps({"exabgp": "wire", "type": "felixpy-refresh", "neighbor": {"address": peer}})


def _emit_refresh(protocol: Any) -> None:
    neighbor = protocol.neighbor
    for process in neighbor.api["receive-update"]:
        protocol.peer.reactor.processes.write(process, refresh_json(neighbor), neighbor)


def _emit_update(protocol: Any, header: bytes, body: bytes) -> None:
    processes = protocol.peer.reactor.processes
    neighbor = protocol.neighbor
    subscribed = neighbor.api["receive-update"]
    if subscribed:
        text = packets_json(neighbor, header, body)
        for process in subscribed:
            processes.write(process, text, neighbor)


def _read_message(self: Any) -> Any:
    original = _originals["read_message"]
    if not session_is_wire(self.negotiated):
        yield from original(self)
        return
    from exabgp.reactor.protocol import _NOP, _UPDATE

    connection = self.connection
    for item in connection.reader():
        length, msg_id, header, body, notify = item
        if notify is None and length and msg_id == _UPDATE_TYPE:
            self.peer.stats["receive-update"] += 1
            _emit_update(self, header, body)
            yield _UPDATE
            return
        if notify is None and not length:
            yield _NOP
            continue
        if notify is None and msg_id == _ROUTE_REFRESH_TYPE:
            # ExaBGP answers from its Adj-RIB-Out, which has none of the wire routes: tell the agent
            _emit_refresh(self)
        # anything else: ExaBGP's own code handles this one message, as it would have
        connection.reader = lambda item=item: iter((item,))
        try:
            yield from original(self)
        finally:
            del connection.reader
        return


def _pending(self: Any) -> bool:
    return bool(getattr(self, _QUEUE_ATTR, None)) or _originals["pending"](self)


def _new_update(self: Any, include_withdraw: Any) -> Any:
    from exabgp.reactor.protocol import _NOP

    queue = getattr(self.neighbor.rib.outgoing, _QUEUE_ATTR, None)
    batch = []
    while queue:
        session, raw = queue.popleft()
        if session is not self:
            continue  # queued for a session that has since gone
        batch.append(raw)
    if len(batch) > 1 and not self.neighbor.api.get("send-update", False):
        # one write for all of them: the peer loop runs one step of this generator per turn of
        # ExaBGP's reactor, so one message per write cost one turn per message (a full table is
        # hundreds); the counter still counts messages
        self.peer.stats["send-update"] += len(batch) - 1
        batch = [b"".join(batch)]
    for raw in batch:
        for _ in self.send(raw):
            yield _NOP
    yield from _originals["new_update"](self, include_withdraw)


def _wire_command(self: Any, reactor: Any, service: Any, line: str, use_json: bool) -> bool:
    from exabgp.reactor.api.command.limit import extract_neighbors, match_neighbors

    def callback() -> Any:
        try:
            descriptions, command = extract_neighbors(line)
            words = command.split()
            if not descriptions or not words or words[0] != COMMAND:
                raise ValueError("usage: neighbor <ip> felixpy-wire <hex> ...")
            messages = split_messages(words[1:])
            keys = match_neighbors(list(reactor.established_peers()), descriptions)
            peers = [reactor._peers[key] for key in keys if key in reactor._peers]
            wired = [p for p in peers if p.proto is not None and session_is_wire(p.proto.negotiated)]
            if len(descriptions) == 1 and (not peers or len(wired) != len(peers)):
                raise ValueError("no established wire session for " + " ".join(descriptions[0]))
            if not wired:
                raise ValueError("no established wire session among " + str(len(descriptions)) + " neighbors")
            # several neighbors (one encoding for all clients of a reflector): those whose session
            # went down meanwhile are skipped — a session that comes up gets the whole table again
            peers = wired
        except (ValueError, IndexError) as exc:
            self.log_failure(f"{COMMAND}: {exc}")
            reactor.processes.answer_error(service)
            yield True
            return
        for peer in peers:
            queue = _queue(peer.neighbor.rib.outgoing)
            queue.extend((peer.proto, raw) for raw in messages)
        reactor.processes.answer_done(service)
        yield False

    # scheduled like ExaBGP's own announce commands, so text and wire commands keep their order
    reactor.asynchronous.schedule(service, line, callback())
    return True


API_READ_BYTES = 1 << 20


class _ApiPipeOs:
    """What ``exabgp.reactor.api.processes`` sees as ``os``: the real module, except that a read
    of the API pipe takes up to 1 MB instead of 16 KB. ExaBGP reads that pipe once per turn of
    its reactor, so a reflector's burst of commands (100 KB of UPDATE hex per 10,000 routes)
    took one turn per 16 KB, each with a write to every client, before the last was queued."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def read(self, fd: int, size: int) -> bytes:
        return self._real.read(fd, max(size, API_READ_BYTES))  # type: ignore[no-any-return]


def install() -> bool:
    """Patch the running ExaBGP (its version must be one this was written against)."""
    from exabgp.reactor.api import processes
    from exabgp.reactor.api.command.command import Command
    from exabgp.reactor.protocol import Protocol
    from exabgp.rib.outgoing import OutgoingRIB
    from exabgp.version import version

    if version not in PATCHED_VERSIONS:
        return False
    if not isinstance(processes.os, _ApiPipeOs):
        processes.os = _ApiPipeOs(processes.os)
    if "read_message" not in _originals:
        _originals["read_message"] = Protocol.read_message
        _originals["pending"] = OutgoingRIB.pending
        _originals["new_update"] = Protocol.new_update
    Protocol.read_message = _read_message
    OutgoingRIB.pending = _pending
    Protocol.new_update = _new_update
    Command.register(COMMAND, True)(_wire_command)
    return True
