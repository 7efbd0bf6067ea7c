"""The agent's CNI socket is bounded: idle connections time out and hold no request slot, the
listen backlog is large, excess connections and requests get 'try again later' (11).

A real unix socket and server in a temporary directory; the handler behind it is a stub (the
real agent behind the same server: tests/kernel/test_agent_orphans.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felixpy.cni.server import BACKLOG, CNIServer
from tests.fixtures import waiting

REQUEST = {
    "command": "ADD",
    "containerID": "c1",
    "config": {"cniVersion": "1.0.0", "name": "n"},
    "reply": "cni",
}


@contextlib.contextmanager
def serving(tmp_path: Path, handle: Any = None, **bounds: Any) -> Iterator[CNIServer]:
    server = CNIServer(str(tmp_path / "cni.sock"), handle or (lambda req: {"result": {"ok": 1}}), **bounds)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(path: str, request: dict[str, Any] = REQUEST, timeout: float = 10) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        return s.makefile("rb").readline().decode()


def idle(path: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        out.append(s)
    return out


def _wait(pred: Any, timeout: float, what: str) -> None:
    waiting.wait_for(pred, what, timeout, every=0.05)


def test_300_idle_connections_do_not_stop_a_request(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        conns = idle(server.path, 300)
        try:
            _wait(lambda: server.open_connections == 300, 20, "300 connections accepted")
            start = time.monotonic()
            assert ask(server.path) == '0 {"ok": 1}\n'
            print(f"answered in {1000 * (time.monotonic() - start):.1f} ms with 300 idle connections open")
        finally:
            for s in conns:
                s.close()


def test_an_idle_connection_is_closed_after_the_read_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, read_timeout=0.5) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(server.path)
            s.settimeout(10)
            start = time.monotonic()
            assert s.recv(100) == b""  # closed by the server
            waited = time.monotonic() - start
        assert 0.4 <= waited < 5, waited
        _wait(lambda: server.open_connections == 0, 5, "the connection to be forgotten")
        # a half-sent request line times out the same way, and the server still answers others
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(server.path)
            s.sendall(b'{"command": "AD')
            s.settimeout(10)
            assert s.recv(100) == b""
        assert ask(server.path).startswith("0 ")


def test_listen_backlog_is_large(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, timeout=10).stdout
        line = next(line for line in out.splitlines() if server.path in line)
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert int(line.split()[3]) == min(BACKLOG, somaxconn) and BACKLOG >= 1024, line


def test_connections_over_the_cap_get_try_again(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=5) as server:
        conns = idle(server.path, 5)
        try:
            _wait(lambda: server.open_connections == 5, 10, "5 connections accepted")
            answer = ask(server.path)
            code, _, body = answer.partition(" ")
            assert code == "1" and json.loads(body)["code"] == 11
            assert "5 CNI connections open" in json.loads(body)["msg"]
        finally:
            for s in conns:
                s.close()
        _wait(lambda: server.open_connections == 0, 10, "the idle ones to be closed")
        assert ask(server.path).startswith("0 ")


def test_requests_over_the_cap_wait_bounded_then_get_try_again(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(request: dict[str, Any]) -> dict[str, Any]:
        entered.release()
        release.wait(20)
        return {"result": None}

    with serving(tmp_path, handle=slow, max_requests=2, queue_seconds=0.5) as server:
        answers: list[str] = []
        threads = [threading.Thread(target=lambda: answers.append(ask(server.path))) for _ in range(2)]
        for t in threads:
            t.start()
        assert entered.acquire(timeout=10) and entered.acquire(timeout=10)  # both slots taken
        start = time.monotonic()
        code, _, body = ask(server.path).partition(" ")
        waited = time.monotonic() - start
        assert code == "1" and json.loads(body)["code"] == 11, body
        assert "2 CNI requests in progress" in json.loads(body)["msg"]
        assert 0.4 <= waited < 5, waited
        # a queued request is served as soon as a slot frees
        queued: list[str] = []
        t3 = threading.Thread(target=lambda: queued.append(ask(server.path)))
        t3.start()
        time.sleep(0.1)
        release.set()
        for t in (*threads, t3):
            t.join(10)
        assert answers == ["0\n", "0\n"] and queued == ["0\n"]


@pytest.mark.parametrize("garbage", [b"\n", b"not json\n", b"[1, 2]\n"])
def test_empty_and_bad_lines(tmp_path: Path, garbage: bytes) -> None:
    with serving(tmp_path) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(server.path)
            s.sendall(garbage)
            reply = s.makefile("rb").readline()
        if garbage.strip():
            assert json.loads(reply)["error"]["code"] == 6
        else:
            assert reply == b""  # an empty line: closed without an answer
