"""Idle CPU (issue 15): loops that sleep until there is work still react at once.

ExaBGP's loop (``bgp.exabgp_launch``) sleeps long only when nothing is in flight and is still
woken at once by what it does not poll itself (its listening sockets, signals); the agent's
socketservers (``felixpy.servers``) poll rarely but shut down at once.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("exabgp")

from exabgp.bgp.fsm import FSM
from exabgp.reactor.loop import Reactor

from bgp import exabgp_launch
from felixpy import servers


class _Queue:
    def ready(self) -> bool:
        return True


class _Signal:
    received = 0


class _Delay:
    def __init__(self, at: float) -> None:
        self._time = at


class _Peer:
    def __init__(self, state: int, *, generator: Any = True, restart: bool = True, passive: bool = False,
                 proto: Any = True, retry_at: float = 0.0) -> None:
        self.fsm, self.generator, self._restart, self.proto = state, generator, restart, proto
        self.neighbor = {"passive": passive}
        self._delay, self._teardown = _Delay(retry_at), 0

    def stopping(self) -> bool:
        return False


class _Listener:
    def __init__(self, socks: list[socket.socket]) -> None:
        self._sockets = {s: None for s in socks}


@pytest.fixture
def reactor() -> Iterator[Any]:
    original = Reactor._wait_for_io
    asked: list[int] = []

    def fake_wait(self: Any, sleeptime: int) -> Iterator[int]:
        asked.append(sleeptime)
        for fd, _ in self._poller.poll(sleeptime):
            yield fd

    Reactor._wait_for_io = fake_wait
    assert exabgp_launch.patch_reactor() is True
    r = Reactor.__new__(Reactor)
    r.asynchronous, r.signal, r._poller, r._peers = _Queue(), _Signal(), select.poll(), {}
    r.listener = _Listener([])
    r.asked = asked
    try:
        yield r
    finally:
        Reactor._wait_for_io = original
        wake = getattr(r, "_felixpy_wakeups", None)
        if wake is not None:
            signal.set_wakeup_fd(-1)
            wake.epoll.close()
            os.close(wake.pipe_r)
            os.close(wake.pipe_w)


def test_idle_sleep_only_when_every_running_peer_is_established(reactor: Any) -> None:
    reactor._peers = {"a": _Peer(FSM.ESTABLISHED), "b": _Peer(FSM.ESTABLISHED)}
    assert exabgp_launch._idle_wait_ms(reactor) == exabgp_launch.IDLE_WAIT_MS
    reactor._peers["c"] = _Peer(FSM.CONNECT)  # connecting: ExaBGP polls the connect by its timer
    assert exabgp_launch._idle_wait_ms(reactor) is None
    reactor._peers["c"] = _Peer(FSM.IDLE, passive=True, proto=None)  # waits for the listener
    assert exabgp_launch._idle_wait_ms(reactor) == exabgp_launch.IDLE_WAIT_MS
    reactor._peers["c"] = _Peer(FSM.IDLE, passive=True, proto=None, generator=None)  # a peer node down
    assert exabgp_launch._idle_wait_ms(reactor) == exabgp_launch.IDLE_WAIT_MS
    reactor._peers["c"] = _Peer(FSM.IDLE, generator=None, retry_at=time.time() + 0.3)  # back-off
    assert 250 <= (exabgp_launch._idle_wait_ms(reactor) or 0) <= 301
    reactor._peers["a"]._teardown = 6
    assert exabgp_launch._idle_wait_ms(reactor) is None


def test_busy_turns_keep_exabgps_own_timing(reactor: Any) -> None:
    reactor._peers = {"a": _Peer(FSM.ESTABLISHED)}
    list(reactor._wait_for_io(0))  # a peer asked for another turn
    reactor._peers["b"] = _Peer(FSM.OPENSENT)
    list(reactor._wait_for_io(50))
    assert reactor.asked == [0, 50]


def test_a_connecting_peer_wakes_the_idle_loop_at_once(reactor: Any) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    reactor.listener = _Listener([server])
    reactor._peers = {"a": _Peer(FSM.ESTABLISHED)}
    timer = threading.Timer(0.2, lambda: socket.create_connection(server.getsockname(), timeout=2).close())
    try:
        timer.start()
        started = time.monotonic()
        assert list(reactor._wait_for_io(50)) == []  # its own fd is not handed to ExaBGP's loop
        took = time.monotonic() - started
    finally:
        timer.join()
        server.close()
    assert reactor.asked == [exabgp_launch.IDLE_WAIT_MS]
    assert took < 0.9, f"woken after {took:.2f} s, not by the connection"


def test_a_signal_wakes_the_idle_loop_at_once(reactor: Any) -> None:
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # ExaBGP's handlers are Python ones too
    reactor._peers = {"a": _Peer(FSM.ESTABLISHED)}
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        started = time.monotonic()
        assert list(reactor._wait_for_io(50)) == []
        took = time.monotonic() - started
    finally:
        timer.join()
        signal.signal(signal.SIGUSR1, previous)
    assert reactor.asked == [exabgp_launch.IDLE_WAIT_MS]
    assert took < 0.9, f"woken after {took:.2f} s, not by the signal"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.request.recv(64))


def test_a_long_polling_server_serves_and_stops_at_once() -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=servers.serve, args=(server,), daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"ping")
            assert client.recv(64) == b"ping"
        started = time.monotonic()
        assert servers.shutdown(server, timeout=10) is True
        took = time.monotonic() - started
        thread.join(5)
        assert not thread.is_alive()
    finally:
        server.server_close()
    assert took < servers.IDLE_POLL_SECONDS / 10, f"shutdown took {took:.2f} s"
