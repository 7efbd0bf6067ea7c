"""A kernel read started early, taken once by the first commit that needs it.

At start-up the writers' first commit reads the whole kernel state they own (``iptables-save`` of
each family, ``ipset save``, the route dump) before it can plan. Nothing of that depends on the
datastore, so the agent starts those reads when it builds the dataplane, and they run (mostly in the
tools' own processes, on the other core) while the datastore snapshot is fetched and the calc graph
digests it. The first commit then takes the result instead of reading again.

A read taken this way may be a few seconds older than the commit that plans against it. Between the
two only another program can change what it holds (the writers own their objects and write nothing
before the first commit): the iptables writer therefore schedules its post-write check after a first
commit planned on a prefetched view, as after any write. A read older than ``max_age``, or one that
failed, is not used: the caller reads again, as it would have without a prefetch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")
MAX_AGE = 30.0  # seconds: an older read is not trusted to plan a first commit
WAIT = 60.0  # seconds a first commit waits for a read still running (the tools' own timeout)


class Prefetch(Generic[T]):
    """``read()`` run in a daemon thread from construction; :meth:`take` returns its result once."""

    def __init__(
        self,
        what: str,
        read: Callable[[], T],
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.max_age = max_age
        self._read = read
        self._clock = clock
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._finished_at = 0.0
        self._taken = False
        self._thread = threading.Thread(target=self._run, name=f"felixpy-prefetch-{what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._read()
        except Exception as exc:  # the caller reads again and sees the error itself
            self._error = exc
        finally:
            self._finished_at = self._clock()
            self._done.set()

    def take(self, wait: float = WAIT) -> tuple[bool, T | None]:
        """(True, result) the first time, if the read finished within ``wait`` seconds, succeeded
        and is at most ``max_age`` old; else (False, None): read again."""
        if self._taken:
            return False, None
        self._taken = True
        if not self._done.wait(wait):
            log.warning("prefetch.unused", what=self.what, reason=f"still running after {wait:g}s")
            return False, None
        if self._error is not None:
            log.warning("prefetch.unused", what=self.what, reason=f"read failed: {self._error}")
            return False, None
        age = self._clock() - self._finished_at
        if age > self.max_age:
            log.info("prefetch.unused", what=self.what, reason=f"{age:.1f}s old, more than {self.max_age:g}s")
            return False, None
        result, self._result = self._result, None
        return True, result


def take(prefetch: Prefetch[T] | None) -> T | None:
    """What ``prefetch`` read, when it may be used (:meth:`Prefetch.take`); None: read again."""
    return None if prefetch is None else prefetch.take()[1]
