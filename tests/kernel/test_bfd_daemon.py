"""Two real ``felixpy-bfd`` daemons in namespaces joined by a veth (and a routed multihop pair).

What a user relies on: sessions come Up; a dead link is seen within the detection time; the
daemon outlives its client (the agent) and the next client adopts it; SIGTERM tells the peer
AdminDown (not a failure); kill -9 is a failure; packets with the wrong TTL are dropped and counted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd_client import BfdClient

pytestmark = pytest.mark.kernel
FAST = {"min_tx": 100_000, "min_rx": 100_000, "multiplier": 3}
CALM = {"min_tx": 300_000, "min_rx": 300_000, "multiplier": 5}  # 1.5 s: holds on a loaded machine


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, doc: dict[str, Any]) -> None:
        with self._cond:
            self.messages.append(doc)
            self._cond.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, start: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for doc in self.messages[start:]:
                    if pred(doc):
                        return doc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message in {timeout}s: {self.messages[-5:]}")
                self._cond.wait(left)

    def state(self, peer: str, state: str, timeout: float, start: int = 0) -> dict[str, Any]:
        return self.wait(
            lambda d: d.get("event") == "state" and d["peer"] == peer and d["state"] == state, timeout, start
        )

    def status(self, timeout: float, start: int = 0) -> list[dict[str, Any]]:
        return self.wait(lambda d: "status" in d and "drops" in d, timeout, start)["status"]


@pytest.fixture
def pair(netns: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    a, b = netns("bfda"), netns("bfdb")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns, addr in ((a, "10.77.0.1/30"), (b, "10.77.0.2/30")):
        ns.run("ip", "addr", "add", addr, "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    clients: list[BfdClient] = []

    def client(ns: Any, name: str, inbox: Inbox) -> BfdClient:
        run = tmp_path / name
        run.mkdir(exist_ok=True, mode=0o700)
        c = BfdClient(run, inbox, netns=ns.name)
        clients.append(c)
        c.start()
        return c

    yield {"a": a, "b": b, "client": client, "tmp": tmp_path}
    for c in clients:
        c.stop()
        c.stop_daemon()


def test_up_link_failure_detected_and_recovery(pair: dict[str, Any]) -> None:
    ia, ib = Inbox(), Inbox()
    ca, cb = pair["client"](pair["a"], "a", ia), pair["client"](pair["b"], "b", ib)
    ca.configure([{"peer": "10.77.0.2", "local": "10.77.0.1", **FAST}])
    cb.configure([{"peer": "10.77.0.1", "local": "10.77.0.2", **FAST}])
    up = ia.state("10.77.0.2", "Up", 15)
    ib.state("10.77.0.1", "Up", 15)
    assert up["remote_cpi"] is True  # our daemon is control-plane independent
    # Up first runs at the slow rate (RFC 5880 6.8.3: 1 s while not Up); the Poll sequence then
    # brings in 100 ms x 3. Cut only once it has: before, detection is 3 x 1 s, and rightly so.
    deadline = time.monotonic() + 15
    while not (rows := ia.status(10, len(ia.messages))) or rows[0]["detect_time"] > 0.35:
        assert time.monotonic() < deadline, f"fast intervals never negotiated: {rows}"
    mark = len(ia.messages)
    cut = time.monotonic()
    pair["b"].run("ip", "link", "set", "eth0", "down")
    down = ia.state("10.77.0.2", "Down", 5, mark)
    took = time.monotonic() - cut
    print(f"\nBFD 100ms x 3: link cut -> Down after {took * 1000:.0f} ms")
    assert down["diag_text"] == "control detection time expired" and down["old"] == "Up"
    assert took <= 2.0  # detection time 0.3 s; generous for a loaded machine
    mark = len(ia.messages)
    pair["b"].run("ip", "link", "set", "eth0", "up")
    ia.state("10.77.0.2", "Up", 15, mark)
    [row] = ia.status(10, mark)
    assert row["state"] == "Up" and not row["multihop"] and row["packets_in"] > 0


def test_daemon_outlives_its_client_and_sigterm_is_admin_down(pair: dict[str, Any]) -> None:
    ia, ib = Inbox(), Inbox()
    ca, cb = pair["client"](pair["a"], "a", ia), pair["client"](pair["b"], "b", ib)
    ca.configure([{"peer": "10.77.0.2", **CALM}])
    cb.configure([{"peer": "10.77.0.1", **CALM}])
    ia.state("10.77.0.2", "Up", 15)
    # b goes Up one control packet after a does (a sends Up when it hears b's Init): wait for both,
    # or b's daemon may rightly report the session still Init to the next client
    ib.state("10.77.0.1", "Up", 15)
    pid_b = cb.daemon_pid()
    cb.stop()  # the agent goes away (restart)
    mark = len(ia.messages)
    ib2 = Inbox()
    cb2 = pair["client"](pair["b"], "b", ib2)
    hello = ib2.wait(lambda d: "hello" in d, 10)
    time.sleep(0.5)  # connected, not configured yet: the daemon keeps its sessions
    assert hello["hello"]["pid"] == pid_b and cb2.spawned == 0  # adopted, not restarted
    assert [r["state"] for r in hello["status"]] == ["Up"]
    cb2.configure([{"peer": "10.77.0.1", **CALM}])
    time.sleep(1.0)  # a quiet second: nothing went Down on a's side
    assert not [m for m in ia.messages[mark:] if m.get("event") == "state"]
    mark = len(ia.messages)
    cb2.stop()
    cb2.stop_daemon()  # SIGTERM: the peer hears AdminDown
    down = ia.state("10.77.0.2", "Down", 5, mark)
    assert down["remote_state"] == "AdminDown" and down["diag_text"] == "neighbor signaled session down"


def test_kill_9_is_a_failure_and_bad_ttl_is_counted(pair: dict[str, Any]) -> None:
    ia, ib = Inbox(), Inbox()
    ca, cb = pair["client"](pair["a"], "a", ia), pair["client"](pair["b"], "b", ib)
    ca.configure([{"peer": "10.77.0.2", **FAST}])
    cb.configure([{"peer": "10.77.0.1", **FAST}])
    ia.state("10.77.0.2", "Up", 15)
    # a control packet sent with TTL 64 (a spoofer off-link would look like this): dropped, counted
    send = (
        "import socket,struct\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IP,socket.IP_TTL,64)\n"
        "s.sendto(struct.pack('!BBBBIIIII',0x20,0x40,3,24,99,0,1000000,1000000,0),('10.77.0.1',3784))\n"
    )
    pair["b"].run("python3", "-c", send)
    mark = len(ia.messages)
    drops = ia.wait(lambda d: d.get("drops", {}).get("ttl", 0) >= 1, 10, mark)["drops"]
    assert drops["ttl"] >= 1
    pid_b = cb.daemon_pid()
    assert pid_b is not None
    mark = len(ia.messages)
    os.kill(pid_b, signal.SIGKILL)
    down = ia.state("10.77.0.2", "Down", 5, mark)
    assert down["diag_text"] == "control detection time expired"


def test_multihop_through_a_router_and_direct_only_mode(netns: Callable[..., Any], tmp_path: Path) -> None:
    a, r, c = netns("bmha"), netns("bmhr"), netns("bmhc")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "ra", "netns", r.name)
    c.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "rc", "netns", r.name)
    a.run("ip", "addr", "add", "10.78.1.2/24", "dev", "eth0")
    c.run("ip", "addr", "add", "10.78.2.2/24", "dev", "eth0")
    r.run("ip", "addr", "add", "10.78.1.1/24", "dev", "ra")
    r.run("ip", "addr", "add", "10.78.2.1/24", "dev", "rc")
    for ns, dev in ((a, "eth0"), (c, "eth0"), (r, "ra"), (r, "rc")):
        ns.run("ip", "link", "set", dev, "up")
    r.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    a.run("ip", "route", "add", "default", "via", "10.78.1.1")
    c.run("ip", "route", "add", "default", "via", "10.78.2.1")
    ia, ic = Inbox(), Inbox()
    clients = []
    try:
        for ns, name, inbox in ((a, "a", ia), (c, "c", ic)):
            (tmp_path / name).mkdir(mode=0o700)
            cl = BfdClient(tmp_path / name, inbox, netns=ns.name)
            cl.start()
            clients.append(cl)
        clients[0].configure(
            [
                {"peer": "10.78.2.2", "local": "10.78.1.2", **FAST},
                {"peer": "10.78.2.9", "mode": "direct", **FAST},
            ]
        )
        clients[1].configure([{"peer": "10.78.1.2", "local": "10.78.2.2", **FAST}])
        ia.state("10.78.2.2", "Up", 15)
        rows = {row["peer"]: row for row in ia.status(10, len(ia.messages))}
        assert rows["10.78.2.2"]["multihop"] is True
        assert rows["10.78.2.9"]["error"] == "not directly connected"
        mark = len(ia.messages)
        r.run("ip", "link", "set", "rc", "down")
        ia.state("10.78.2.2", "Down", 5, mark)
    finally:
        for cl in clients:
            cl.stop()
            cl.stop_daemon()


def test_ipv6_single_hop(netns: Callable[..., Any], tmp_path: Path) -> None:
    a, b = netns("bf6a"), netns("bf6b")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns, addr in ((a, "fd77::1/64"), (b, "fd77::2/64")):
        ns.run("ip", "addr", "add", addr, "dev", "eth0", "nodad")
        ns.run("ip", "link", "set", "eth0", "up")
    ia, ib = Inbox(), Inbox()
    clients = []
    try:
        for ns, name, inbox, peer, local in (
            (a, "a", ia, "fd77::2", "fd77::1"),
            (b, "b", ib, "fd77::1", "fd77::2"),
        ):
            (tmp_path / name).mkdir(mode=0o700)
            cl = BfdClient(tmp_path / name, inbox, netns=ns.name)
            cl.start()
            cl.configure([{"peer": peer, "local": local, **FAST}])
            clients.append(cl)
        ia.state("fd77::2", "Up", 20)
        mark = len(ia.messages)
        b.run("ip", "link", "set", "eth0", "down")
        assert ia.state("fd77::2", "Down", 5, mark)["diag_text"] == "control detection time expired"
    finally:
        for cl in clients:
            cl.stop()
            cl.stop_daemon()


def test_a_second_daemon_never_takes_over_a_live_ones_socket(pair: dict[str, Any]) -> None:
    ia = Inbox()
    ca = pair["client"](pair["a"], "a", ia)
    ca.configure([{"peer": "10.77.0.2", **FAST}])
    hello = ia.wait(lambda d: "hello" in d, 15)
    sock = pair["tmp"] / "a" / "bfd.sock"
    out = pair["a"].run(
        "sh",
        "-c",
        f"cd {Path(__file__).resolve().parents[2]} && "
        f"{sys.executable} -m bgp.bfd_daemon --socket {sock} 2>&1; echo rc=$?",
        check=False,
    )
    assert "another daemon already serves" in out and "rc=1" in out
    assert ca.daemon_pid() == hello["hello"]["pid"]  # the first one still runs and still owns the socket
    mark = len(ia.messages)
    assert ia.status(10, mark)[0]["peer"] == "10.77.0.2"
