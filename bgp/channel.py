"""The agent's end of the bridge: a unix-socket server, a reader and a flow-controlled writer.

The bridge (``bgp.bridge``, run by ExaBGP) connects here. Lines from ExaBGP are parsed into
events and handed to ``on_event`` (from the reader thread); ``done``/``error`` acks open the
writer's window: at most ``window`` commands are un-acknowledged at any time, which keeps
ExaBGP's internal queue short and its pipes from filling. ExaBGP answers commands in order, so
each ack is paired with the oldest command in flight; an ``error`` reaches ``on_event`` as
``CommandFailed(command)`` (the engine re-sends what that command was for).

With ``defer_parse`` the reader parses only the acks and hands every other line on as
``Unparsed`` (in order, with the ``CommandFailed`` events): the receiver parses it in its own
thread (``bgp.service``), so decoding a burst of UPDATEs does not compete for the GIL with the
engine that handles them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable

from bgp.exabgp_api import Ack, CommandFailed, Event, Unparsed, parse_line

log = logging.getLogger(__name__)
DEFAULT_WINDOW = 256
# The accept and writer threads are woken by what they wait for (a connection; a command, an ack,
# a connection change, stop()); this is only the bound on each wait, not a poll (idle CPU).
IDLE_WAIT_SECONDS = 30.0


class ApiChannel:
    def __init__(
        self,
        path: str,
        on_event: Callable[[Event], None],
        *,
        window: int = DEFAULT_WINDOW,
        defer_parse: bool = False,
    ) -> None:
        self.path = path
        self._defer_parse = defer_parse
        self._on_event = on_event
        self._window = window
        self._cond = threading.Condition()
        self._pending: collections.deque[str] = collections.deque()
        self._outstanding = 0
        self._inflight: collections.deque[str] = collections.deque()  # sent, not yet acknowledged
        self._conn: socket.socket | None = None
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self.errors = 0
        self.sent = 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        os.chmod(self.path, 0o600)  # before listen(): nobody else can connect, at any moment
        server.listen(2)
        server.settimeout(IDLE_WAIT_SECONDS)
        self._server = server
        threading.Thread(target=self._accept_loop, name="bgp-api-accept", daemon=True).start()
        threading.Thread(target=self._write_loop, name="bgp-api-writer", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        # Stop listening before dropping the connection: the bridge reconnects as soon as it sees
        # the connection go, and must not land in this listener's backlog (lines sent there are lost).
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept thread now
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with self._cond:
            self._cond.notify_all()
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.shutdown(socket.SHUT_RDWR)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def send(self, lines: Iterable[str]) -> None:
        with self._cond:
            self._pending.extend(lines)
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget queued commands (the caller is about to re-send the full state)."""
        with self._cond:
            self._pending.clear()

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and self._outstanding == 0

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._cond:
                old, self._conn, self._outstanding = self._conn, conn, 0
                self._inflight.clear()  # their acks went with the old connection
                self._cond.notify_all()
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
            threading.Thread(target=self._read_loop, args=(conn,), name="bgp-api-reader", daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("r", encoding="utf-8", errors="replace") as reader:
                for line in reader:
                    self._dispatch(line)
        except (OSError, ValueError):
            pass
        with self._cond:
            if self._conn is conn:
                self._conn = None
                self._outstanding = 0
                self._inflight.clear()
            self._cond.notify_all()
        log.info("bgp bridge disconnected")

    def _dispatch(self, line: str) -> None:
        # ExaBGP's JSON starts with "{" (acks are "done" / "error")
        event: Event = Unparsed(line) if self._defer_parse and line[:1] == "{" else parse_line(line)
        if isinstance(event, Ack):
            with self._cond:
                self._outstanding = max(0, self._outstanding - 1)
                command = self._inflight.popleft() if self._inflight else None
                if not event.ok:
                    self.errors += 1
                self._cond.notify_all()
            if event.ok:
                return
            log.warning("exabgp answered error to a command (%d so far): %.160s", self.errors, command or "?")
            if command is None:
                return
            event = CommandFailed(command)
        try:
            self._on_event(event)
        except Exception:  # a handler bug must not kill the reader (and with it ExaBGP's pipe)
            log.exception("bgp event handler failed on %r", line[:200])

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and (
                    self._conn is None or not self._pending or self._outstanding >= self._window
                ):
                    self._cond.wait(IDLE_WAIT_SECONDS)
                if self._stop.is_set():
                    return
                conn = self._conn
                room = self._window - self._outstanding
                batch = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
                self._outstanding += len(batch)
                self._inflight.extend(batch)  # before they are written: an ack can come at once
            try:
                assert conn is not None
                conn.sendall("".join(line + "\n" for line in batch).encode())
                self.sent += len(batch)
            except OSError:
                with self._cond:
                    self._pending.extendleft(reversed(batch))
