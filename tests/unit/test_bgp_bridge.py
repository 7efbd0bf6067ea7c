"""The bridge keeps draining ExaBGP while the agent is away, buffers, drops oldest, and reconnects.

Real pipes and a real unix socket; the "agent" is an ApiChannel, as in production.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from bgp import exabgp_api as api
from bgp.bridge import Bridge
from bgp.channel import ApiChannel
from tests.fixtures import waiting


class Out(io.RawIOBase):
    def __init__(self) -> None:
        self.data = b""
        self.lock = threading.Lock()

    def write(self, b: bytes) -> int:  # type: ignore[override]
        with self.lock:
            self.data += bytes(b)
        return len(b)


def wait_for(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    waiting.wait_for(check, "the condition", timeout, every=0.02)


def test_bridge_buffers_while_agent_away_then_relays_both_ways(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "rb")
    out = Out()
    bridge = Bridge(path, buffer_lines=3)
    threading.Thread(target=bridge.read_stdin, args=(stdin,), daemon=True).start()
    threading.Thread(target=bridge.serve, args=(out,), daemon=True).start()

    # no agent yet: ExaBGP's writes never block; only the newest 3 lines are kept
    for i in range(5):
        os.write(
            write_fd,
            b'{"type": "state", "neighbor": {"address": {"peer": "10.0.0.%d"}, "state": "up"}}\n' % i,
        )
    wait_for(lambda: bridge._dropped == 2)  # the reader drained everything with nobody listening
    events: list[api.Event] = []
    channel = ApiChannel(path, events.append)
    channel.start()
    try:
        wait_for(lambda: len(events) == 4)
        assert events[0] == api.BridgeNote(dropped=2)
        assert [e.peer for e in events[1:]] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]  # type: ignore[union-attr]
        channel.send(["neighbor 10.0.0.2 announce eor ipv4 unicast"])
        wait_for(lambda: b"announce eor" in out.data)
        os.write(write_fd, b"done\n")  # the ack opens the window, it is not an event
        wait_for(channel.idle)
        assert len(events) == 4
    finally:
        channel.stop()

    # the agent comes back: a fresh hello, nothing lost since
    os.write(write_fd, b'{"type": "state", "neighbor": {"address": {"peer": "10.0.0.9"}, "state": "down"}}\n')
    again: list[api.Event] = []
    channel = ApiChannel(path, again.append)
    channel.start()
    try:
        wait_for(lambda: len(again) == 2)
        assert again == [api.BridgeNote(0), api.StateChange("10.0.0.9", "down")]
    finally:
        channel.stop()
        os.close(write_fd)


def test_channel_window_bounds_unacknowledged_commands(tmp_path: Path) -> None:
    import socket

    path = str(tmp_path / "w.sock")
    channel = ApiChannel(path, lambda e: None, window=5)
    channel.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        wait_for(lambda: channel.connected)
        channel.send([f"cmd {i}" for i in range(12)])
        received = b""
        client.settimeout(0.5)
        wait_for(lambda: channel.sent == 5)
        time.sleep(0.2)
        received += client.recv(4096)
        assert received.count(b"\n") == 5  # no more until acks arrive
        client.sendall(b"done\ndone\nerror\n")
        wait_for(lambda: channel.sent == 8)
        assert channel.errors == 1
    finally:
        client.close()
        channel.stop()


def test_the_bridge_widens_its_pipes_so_exabgp_does_not_wait_for_it() -> None:
    """ExaBGP blocks on a full stdin pipe of the bridge; the bridge asks for 1 MB (root may; a
    user gets up to /proc/sys/fs/pipe-max-size, 1 MB by default). A socket is not a pipe: 0."""
    import os
    import socket as socket_module

    from bgp.bridge import PIPE_BYTES, widen_pipe

    r, w = os.pipe()
    try:
        assert widen_pipe(r) >= PIPE_BYTES
    finally:
        os.close(r)
        os.close(w)
    a, b = socket_module.socketpair()
    with a, b:
        assert widen_pipe(a.fileno()) == 0
