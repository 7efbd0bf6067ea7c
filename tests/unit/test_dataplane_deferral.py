"""The deferred-flush clock the dataplane answers the writer loop with (felixpy.dataplane.deferral):
idle time after the last commit, bounded by the longest wait since the writes were first pending."""

from __future__ import annotations

from felixpy.dataplane.deferral import FlushClock


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_pending_has_no_deadline() -> None:
    clock = FlushClock(idle=0.25, max_wait=1.0, clock=Clock())
    assert clock.deadline(False) is None


def test_due_once_idle_and_at_the_latest_max_wait_after_first_seen() -> None:
    t = Clock()
    clock = FlushClock(idle=0.25, max_wait=1.0, clock=t)
    clock.busy()
    assert clock.deadline(True) == 100.25  # idle 0.25 s after the last commit
    for _ in range(10):  # a commit every 0.2 s: never idle
        t.now += 0.2
        clock.busy()
    assert clock.deadline(True) == 101.0, "first seen at 100.0: due 1.0 s later however busy"
    assert clock.deadline(False) is None
    clock.busy()
    assert clock.deadline(True) == t.now + 0.25, "pending again: the bound counts from now"


def test_a_failed_flush_starts_both_clocks_again() -> None:
    t = Clock()
    clock = FlushClock(idle=0.25, max_wait=1.0, clock=t)
    assert clock.deadline(True) == 0.25, "nothing committed yet: due at once"
    t.now = 105.0
    clock.flushed(False)
    assert clock.deadline(True) == 105.25
    t.now = 105.1
    clock.flushed(True)
    assert clock.deadline(True) == 105.35
