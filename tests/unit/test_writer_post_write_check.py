"""The writer loop gives the dataplane a chance to run its post-write check on every turn once in sync
(and never before), so a rule another program clobbers right after our write is put back within
seconds rather than at the next periodic refresh."""

from __future__ import annotations

import threading
import time

from felixpy.calc.graph import CalcGraph
from felixpy.runtime.writer import InSyncMsg, NullDataplane, Writer


class Dataplane(NullDataplane):
    """Counts the loop's commits and post-write checks."""

    def __init__(self) -> None:
        self.checks = 0
        self.commits = 0

    def commit(self) -> bool:
        self.commits += 1
        return True

    def post_write_check(self) -> None:
        self.checks += 1


def test_post_write_check_runs_only_once_in_sync() -> None:
    dp = Dataplane()
    writer = Writer(CalcGraph("n1"), dp)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(1.3)
        assert dp.checks == 0, "no check before the dataplane is programmed"
        writer.submit(InSyncMsg())
        deadline = time.monotonic() + 5
        while dp.checks < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert dp.checks >= 2 and dp.commits >= 1
    finally:
        stop.set()
        thread.join(5)
