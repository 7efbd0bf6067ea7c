"""The BGP service thread of an idle agent sleeps until its next deadline (docs/performance.md,
"Idle (session 9)"): a felixctl routes request, a stop and the engine's timers still reach it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bgp import exabgp_api as api
from bgp.engine import ADOPT_POLL
from bgp.route import PathAttrs
from bgp.service import (
    IDLE_WAIT_SECONDS,
    STATUS_REWRITE_SECONDS,
    STATUS_ROUTES_SECONDS,
    BGPService,
    _RequestWatch,
)
from bgp.status import ROUTES_FILE, ROUTES_REQUEST
from tests.fixtures import waiting
from tests.unit.test_bgp_routes_view import TOR, scenario


def _wakeups(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)


def _service(tmp_path: Path) -> tuple[BGPService, threading.Thread]:
    """A service with its request watch and loop running, no ExaBGP (``start`` would run one)."""
    svc = BGPService("node1", tmp_path, install_routes=False)
    watch = _RequestWatch(svc.run_dir, ROUTES_REQUEST, svc._wake)
    assert watch.start(), "this kernel offers no inotify"
    svc._request_watch = watch
    svc._status_written = time.monotonic()
    thread = threading.Thread(target=svc._loop, name="bgp-service-test", daemon=True)
    thread.start()
    return svc, thread


def _stop(svc: BGPService, thread: threading.Thread) -> float:
    t0 = time.monotonic()
    svc._stopping.set()
    svc._wake()
    assert svc._request_watch is not None
    svc._request_watch.stop()
    thread.join(5.0)
    assert not thread.is_alive()
    return time.monotonic() - t0


def test_an_idle_service_sleeps_and_a_felixctl_request_or_a_stop_wakes_it_at_once(tmp_path: Path) -> None:
    from felixpy.ctl.node_routes import fresh_view

    svc, thread = _service(tmp_path)
    try:
        waiting.wait_for(lambda: (tmp_path / ROUTES_FILE).exists(), "the first view", 5.0)
        time.sleep(STATUS_REWRITE_SECONDS / 5)  # settle: the first turns are done
        assert thread.native_id is not None
        before = _wakeups(thread.native_id)
        time.sleep(2.0)
        woke = _wakeups(thread.native_id) - before
        assert woke <= 2, f"an idle service thread woke {woke} times in 2 s (was 4, every 0.5 s)"
        t0 = time.monotonic()
        view = fresh_view(tmp_path, timeout=5.0)  # touches the request file, waits for a newer view
        took = time.monotonic() - t0
        assert view is not None and float(view["updated"]) >= time.time() - took - 0.1
        print(f"felixctl routes request answered in {took * 1000:.0f} ms")
        assert took < 2.0, f"a routes request took {took:.2f}s (the idle wait is {IDLE_WAIT_SECONDS}s)"
        # an in-process request (the CalicoNodeStatus writer) wakes it too
        t0 = time.monotonic()
        assert svc.fresh_routes_view(timeout=5.0) is not None
        assert time.monotonic() - t0 < 2.0
    finally:
        took = _stop(svc, thread)
    assert took < 2.0, f"stopping the idle service thread took {took:.2f}s"


def test_the_wait_ends_at_the_engines_next_timer(tmp_path: Path) -> None:
    """A session gone stale (graceful restart) bounds the wait by its stale time; BFD hold-downs
    and adoption likewise (``Engine.next_due``); nothing timed leaves the status rewrite."""
    svc = BGPService("node1", tmp_path, install_routes=False)
    svc._request_watch = _RequestWatch(tmp_path, ROUTES_REQUEST, lambda: None)  # not started: as if inotify
    now = time.monotonic()
    svc._status_written = now
    assert svc.engine.next_due(now) is None
    assert abs(svc._wait_seconds(now, now + 30.0) - STATUS_REWRITE_SECONDS) < 0.01
    engine = scenario()
    engine.handle(api.StateChange(TOR, "down", "connection closed"), 100.0)  # no NOTIFICATION: stale
    stale = engine.sessions[TOR].stale_until
    assert stale is not None and stale > 100.0
    adopt_poll = 100.0 + ADOPT_POLL if engine.adopting else stale
    assert engine.next_due(100.0) == min(stale, adopt_poll)
    engine.tick(stale)
    assert engine.sessions[TOR].stale_until is None  # the stale time ran out when it was due
    assert engine.next_due(stale) in (None, stale + ADOPT_POLL)
    svc._request_watch = None  # no inotify: the request file is polled as before
    assert svc._wait_seconds(now, now + 30.0) <= 0.5


def test_route_counts_are_written_once_per_burst_and_a_session_change_at_once(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A reflector's burst of UPDATEs arrives as many batches: the status file (route counts only)
    is written once, at most STATUS_ROUTES_SECONDS after the first of them, not between batches;
    the wait ends then, so a quiet service still writes it. A session change is written at once."""
    import bgp.service as service_module

    written: list[dict[str, int]] = []

    def record(run_dir: Path, peers: list[Any], **_: Any) -> None:
        written.append({p.address: p.routes_received for p in peers})

    monkeypatch.setattr(service_module, "write_status", record)
    svc = BGPService("node1", tmp_path, install_routes=False)
    svc.engine = scenario()
    svc.engine.status_changed = False
    svc._status_written = time.monotonic()
    start = time.monotonic()
    for i in range(3):  # three batches of one burst
        update = api.Update(
            TOR, 65001, PathAttrs(as_path=(65001,)), (api.Announce(f"10.65.{8 + i}.0/26", TOR),)
        )
        svc._process([("event", update)])
    if time.monotonic() - start < STATUS_ROUTES_SECONDS:  # (a loaded machine may take longer)
        assert written == [], "the status file was written between the batches of a burst"
        assert svc._wait_seconds(time.monotonic(), time.monotonic() + 30.0) <= STATUS_ROUTES_SECONDS
    waiting.wait_for(lambda: time.monotonic() - start > STATUS_ROUTES_SECONDS, "the routes delay", 5.0)
    svc._process([])  # the wake-up at that deadline, with nothing new
    assert written and written[-1][TOR] == 7  # 4 of the scenario + 3
    count = len(written)
    svc._process([])
    assert len(written) == count, "written again with nothing changed"
    svc._process([("event", api.StateChange(TOR, "down", "connection closed"))])
    assert len(written) == count + 1, "a session change waited"
