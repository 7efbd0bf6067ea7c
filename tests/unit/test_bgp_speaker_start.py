"""The speaker starts ExaBGP as soon as it has a configuration (issue 15, goal 2): its supervisor
is woken by ``configure()``, not by a poll. Until session 10 it looked every 0.2 s, which added up
to 0.2 s to every agent start before ExaBGP's own interpreter start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bgp import speaker as speaker_mod
from bgp.speaker import Speaker, SpeakerSettings


def _fake_exabgp(tmp_path: Path) -> str:
    script = tmp_path / "fake-exabgp"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    return str(script)


def _wait_pid(sp: Speaker, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if sp.pid is not None:
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"ExaBGP not started within {timeout} s of configure()")


def test_configure_starts_exabgp_at_once_not_at_the_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speaker_mod, "IDLE_WAIT", 60.0)  # a poll would not come within the bound below
    sp = Speaker(SpeakerSettings(tmp_path, exabgp=_fake_exabgp(tmp_path)), socket_path=str(tmp_path / "s"))
    sp.start()
    try:
        time.sleep(0.2)  # the supervisor is waiting: nothing to run yet
        assert sp.pid is None
        sp.configure([], bind=[], port=179)
        took = _wait_pid(sp, 10.0)
        print(f"configure -> ExaBGP spawned in {took * 1000:.1f} ms")
        assert (tmp_path / "exabgp.pid").read_text() == str(sp.pid)
    finally:
        sp.stop(timeout=5.0)
    assert sp.pid is None


def test_stop_ends_a_supervisor_that_never_had_a_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speaker_mod, "IDLE_WAIT", 60.0)
    sp = Speaker(SpeakerSettings(tmp_path, exabgp=_fake_exabgp(tmp_path)), socket_path=str(tmp_path / "s"))
    sp.start()
    time.sleep(0.1)
    start = time.monotonic()
    sp.stop(timeout=10.0)
    assert sp._thread is not None and not sp._thread.is_alive()
    assert time.monotonic() - start < 10.0
