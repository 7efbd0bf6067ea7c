"""A graceful stop writes the dataplane's deferred writes before the writer thread ends, so the next
agent starts on the kernel state the last one wanted (and its first commit writes nothing). Before
in-sync nothing is written: the deferral has nothing planned on a complete snapshot then."""

from __future__ import annotations

import threading
import time

from felixpy.calc.graph import CalcGraph
from felixpy.runtime.writer import InSyncMsg, NullDataplane, Writer


class Deferring(NullDataplane):
    """Has deferred writes due far in the future (as after a CNI ADD's insert-only write)."""

    def __init__(self, pending: bool) -> None:
        self.pending = pending
        self.flushes = 0

    def next_deadline(self) -> float | None:
        return time.monotonic() + 3600 if self.pending else None

    def commit_deferred(self) -> bool:
        self.flushes += 1
        self.pending = False
        return True


def _run_then_stop(dp: Deferring, *, in_sync: bool) -> None:
    writer = Writer(CalcGraph("n1"), dp)
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        if in_sync:
            writer.submit(InSyncMsg())
            deadline = time.monotonic() + 10
            while not writer.in_sync.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert writer.in_sync.is_set()
        assert dp.flushes == 0, "nothing is flushed before it is due while running"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_a_stop_flushes_deferred_writes_once() -> None:
    dp = Deferring(pending=True)
    _run_then_stop(dp, in_sync=True)
    assert dp.flushes == 1


def test_a_stop_with_nothing_deferred_writes_nothing() -> None:
    dp = Deferring(pending=False)
    _run_then_stop(dp, in_sync=True)
    assert dp.flushes == 0


def test_a_stop_before_in_sync_writes_nothing() -> None:
    dp = Deferring(pending=True)
    _run_then_stop(dp, in_sync=False)
    assert dp.flushes == 0
