"""The agent's BFD client with ``FELIXPY_BFD_EXTERNAL`` (the Helm chart's bfd sidecar container).

The daemon is started here as the sidecar container starts it (``felixpy-bfd --socket ...
--orphan-timeout 0``, its own process, in the node's namespace), not by the client. What a user
relies on: the agent adopts that daemon and never starts a second one; an agent restart leaves the
daemon (same pid) and its session Up, with no state change on the peer; the agent's ``stop_daemon``
does not end a daemon it does not own; with no daemon at all the client waits a bounded time, says
so in one error naming the socket, starts nothing, and adopts the daemon as soon as it appears.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd_client import BfdClient
from tests.fixtures import waiting
from tests.kernel.test_bfd_daemon import CALM, Inbox

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]


def _wait(what: str, pred: Callable[[], bool], timeout: float) -> None:
    waiting.wait_for(pred, what, timeout, every=0.05)


@pytest.fixture
def lab(netns: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    a, b = netns("bfxa"), netns("bfxb")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns, addr in ((a, "10.78.0.1/30"), (b, "10.78.0.2/30")):
        ns.run("ip", "addr", "add", addr, "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    clients: list[BfdClient] = []
    sidecars: list[subprocess.Popen[bytes]] = []

    def client(name: str, inbox: Inbox, **kw: Any) -> BfdClient:
        run = tmp_path / name
        run.mkdir(exist_ok=True, mode=0o700)
        c = BfdClient(run, inbox, **kw)
        clients.append(c)
        c.start()
        return c

    def sidecar(ns: Any, name: str) -> subprocess.Popen[bytes]:
        """The sidecar container's command, in the node's network namespace."""
        run = tmp_path / name
        run.mkdir(exist_ok=True, mode=0o700)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "bgp.bfd_daemon", "--socket", str(run / "bfd.sock")]
        argv += ["--orphan-timeout", "0"]
        with (tmp_path / f"{name}-sidecar.log").open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        sidecars.append(proc)
        return proc

    try:
        yield {"a": a, "b": b, "client": client, "sidecar": sidecar, "tmp": tmp_path}
    finally:
        for c in clients:
            c.stop()
            if not c.external:
                c.stop_daemon()
        for proc in sidecars:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def test_external_daemon_is_adopted_never_spawned_and_outlives_agent_restarts(lab: dict[str, Any]) -> None:
    ia, ib = Inbox(), Inbox()
    ca = lab["client"]("a", ia, netns=lab["a"].name)  # the peer: an ordinary agent with its own daemon
    side = lab["sidecar"](lab["b"], "b")
    cb = lab["client"]("b", ib, netns=lab["b"].name, external=True)
    ca.configure([{"peer": "10.78.0.2", **CALM}])
    cb.configure([{"peer": "10.78.0.1", **CALM}])
    ia.state("10.78.0.2", "Up", 20)
    hello = ib.wait(lambda d: "hello" in d, 10)
    assert hello["hello"]["pid"] == side.pid and cb.spawned == 0  # the sidecar's daemon, adopted
    # a is Up as soon as it hears b's Init; b goes Up one packet later: wait for b's side too, or
    # the first restart's status can still read Init (seen once under load)
    ib.state("10.78.0.1", "Up", 20)
    mark = len(ia.messages)
    for restart in range(2):  # the agent's container restarted (twice): a new client each time
        cb.stop()
        cb.stop_daemon()  # external: not ours to end
        assert side.poll() is None, "stop_daemon ended the sidecar's daemon"
        ib = Inbox()
        cb = lab["client"]("b", ib, netns=lab["b"].name, external=True)
        hello = ib.wait(lambda d: "hello" in d, 10)
        assert hello["hello"]["pid"] == side.pid and cb.spawned == 0, f"restart {restart}: not adopted"
        assert [r["state"] for r in hello["status"]] == ["Up"]
        cb.configure([{"peer": "10.78.0.1", **CALM}])
    time.sleep(1.0)  # a quiet second on the peer: nothing went Down across the restarts
    assert not [m for m in ia.messages[mark:] if m.get("event") == "state"]
    assert side.poll() is None


def test_no_external_daemon_is_a_bounded_wait_one_clear_error_then_adoption(
    lab: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgp.bfd_client")
    ib = Inbox()
    cb = lab["client"]("b", ib, netns=lab["b"].name, external=True, external_wait=1.0)
    cb.configure([{"peer": "10.78.0.1", **CALM}])
    _wait("the external-missing error", lambda: cb.external_missing, 15)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    sock = str(lab["tmp"] / "b" / "bfd.sock")
    assert len(errors) == 1 and sock in errors[0] and "FELIXPY_BFD_EXTERNAL" in errors[0], errors
    assert cb.spawned == 0 and not (lab["tmp"] / "b" / "bfd.sock").exists(), "the client started a daemon"
    time.sleep(2.5)  # still retrying, still one error (not one per attempt)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    side = lab["sidecar"](lab["b"], "b")  # the sidecar container comes up late
    hello = ib.wait(lambda d: "hello" in d, 15)
    assert hello["hello"]["pid"] == side.pid and cb.spawned == 0
    [row] = ib.wait(lambda d: "drops" in d and bool(d["status"]), 10)["status"]  # configured on adoption
    assert row["peer"] == "10.78.0.1"
    assert not cb.external_missing
    assert any("waiting for it on" in r.getMessage() for r in caplog.records)
