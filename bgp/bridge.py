"""The helper ExaBGP runs (``run <python> -m bgp.bridge <socket>``): stdin/stdout ⇄ agent socket.

Crash-proof by construction: a dedicated thread always drains ExaBGP's stdin (ExaBGP's write
to that pipe blocks; a full pipe hangs the whole daemon), whether the agent is there or not.
Lines wait in a bounded buffer while the agent is away; when it overflows the oldest are
dropped and counted, and the agent is told (``{"type": "felixpy-bridge", "dropped": N}``,
also sent as a hello on every connection) so it can ask for a route refresh. Commands from
the agent go to stdout. The bridge exits only when ExaBGP closes stdin. Stdlib only.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time

BUFFER_LINES = 200_000
RETRY_SECONDS = 0.2
IDLE_WAIT_SECONDS = 30.0
# ExaBGP writes each received UPDATE to our stdin as one line (~8 KB of hex per 4 KB message) and
# blocks while the pipe is full: at Linux's default 64 KB, eight lines fill it, and a reflector's
# ExaBGP stopped reading the source's socket until this process was next scheduled (12-16 ms
# stalls in 2 of 3 traced bursts at load 5, docs/performance.md "Reflection (session 9)").
PIPE_BYTES = 1 << 20
# Fault injection for tests: "TEXT:N" - the first N commands containing TEXT reach ExaBGP as a
# command for a neighbour it does not have, which it really answers with ``error`` (in order,
# as it answers any command). Unset in production; the agent cannot tell it from a real refusal.
REFUSE_ENV = "FELIXPY_BRIDGE_REFUSE"
UNKNOWN_NEIGHBOR_COMMAND = b"neighbor 192.0.2.254 withdraw route 192.0.2.0/24\n"


class Refusals:
    def __init__(self, text: bytes = b"", count: int = 0) -> None:
        self.text, self.left = text, count

    @classmethod
    def from_env(cls, value: str) -> Refusals:
        text, _, count = value.rpartition(":")
        return cls(text.encode(), int(count)) if text and count.isdigit() else cls()

    def rewrite(self, line: bytes) -> bytes:
        if self.left > 0 and self.text in line:
            self.left -= 1
            return UNKNOWN_NEIGHBOR_COMMAND
        return line


class Bridge:
    def __init__(self, path: str, *, buffer_lines: int = BUFFER_LINES) -> None:
        self.path = path
        self._lines: collections.deque[bytes] = collections.deque()
        self._limit = buffer_lines
        self._dropped = 0
        self._cond = threading.Condition()
        self._eof = False
        self.refuse = Refusals.from_env(os.environ.get(REFUSE_ENV, ""))

    def read_stdin(self, stream: object) -> None:
        """Always drain ExaBGP's output into the buffer; never blocks on the agent."""
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                if len(self._lines) >= self._limit:
                    self._lines.popleft()
                    self._dropped += 1
                self._lines.append(line if isinstance(line, bytes) else line.encode())
                self._cond.notify()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        return sock

    def _hello(self, sock: socket.socket) -> None:
        with self._cond:
            dropped, self._dropped = self._dropped, 0
        note = json.dumps({"type": "felixpy-bridge", "dropped": dropped}) + "\n"
        sock.sendall(note.encode())

    def _pump_to_agent(self, sock: socket.socket, closed: threading.Event) -> None:
        """Send buffered lines until the socket fails (lines put back) or stdin ends."""
        while True:
            with self._cond:
                while not self._lines and not self._eof:
                    if closed.is_set():
                        raise OSError("agent went away")
                    # woken by a line, by stdin's end, or by the relay when the agent goes away
                    # (_relay_safely): the timeout is only a bound, not a poll (idle CPU)
                    self._cond.wait(IDLE_WAIT_SECONDS)
                if not self._lines and self._eof:
                    return
                batch = list(self._lines)
                self._lines.clear()
            try:
                sock.sendall(b"".join(batch))
            except OSError:
                with self._cond:
                    self._lines.extendleft(reversed(batch))
                raise

    def relay_commands(self, sock: socket.socket, out: object) -> None:
        """Agent → ExaBGP: copy lines to stdout until the agent goes away."""
        with sock.makefile("rb") as reader:
            for line in reader:
                out.write(self.refuse.rewrite(line))  # type: ignore[attr-defined]
                out.flush()  # type: ignore[attr-defined]

    def serve(self, out: object) -> None:
        while not self._eof:
            sock = self._connect()
            if sock is None:
                time.sleep(RETRY_SECONDS)
                continue
            closed = threading.Event()
            relay = threading.Thread(target=self._relay_safely, args=(sock, out, closed), daemon=True)
            try:
                self._hello(sock)
                relay.start()
                self._pump_to_agent(sock, closed)
            except OSError:
                pass
            finally:
                sock.close()

    def _relay_safely(self, sock: socket.socket, out: object, closed: threading.Event) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.relay_commands(sock, out)
        closed.set()
        with self._cond:
            self._cond.notify_all()  # the pump waits on the buffer: tell it the agent went away
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def widen_pipe(fd: int, size: int = PIPE_BYTES) -> int:
    """Ask for a ``size`` pipe buffer on ``fd`` (Linux); returns the size it has (0: not a pipe).
    Not fatal: a smaller pipe only means ExaBGP waits for us more often."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except (OSError, AttributeError):
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bgp.bridge <agent-socket>", file=sys.stderr)
        return 2
    bridge = Bridge(args[0])
    for stream in (sys.stdin, sys.stdout):  # ExaBGP -> us (its UPDATEs), us -> ExaBGP (commands)
        with contextlib.suppress(OSError, ValueError):
            widen_pipe(stream.fileno())
    reader = threading.Thread(target=bridge.read_stdin, args=(sys.stdin.buffer,), daemon=True)
    reader.start()
    bridge.serve(sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
