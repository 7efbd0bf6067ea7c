"""When writes a dataplane deferred go out (the iptables removals a CNI DEL's batch left, and what an
insert-only commit left, see ``felixpy.dataplane.linux``).

They are written with the next batch that commits policy anyway, or alone once the dataplane has
been idle for ``idle`` seconds (no batch committed), and in any case no later than ``max_wait``
seconds after they were first pending: a writer loop that never goes idle (pods added back to back)
still flushes them right after its current batch. A failed flush starts both clocks again (no busy
retry loop). The writer loop only asks :meth:`FlushClock.deadline`'s answer, through the dataplane.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFERRED_SECONDS = 0.25  # idle time before writes a dataplane deferred are flushed on their own
DEFERRED_MAX_SECONDS = 1.0  # ... and the longest they wait when the loop is never idle


class FlushClock:
    def __init__(
        self,
        *,
        idle: float = DEFERRED_SECONDS,
        max_wait: float = DEFERRED_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.max_wait = max_wait
        self._clock = clock
        self._busy_at = 0.0  # when a batch was last committed (or a flush tried)
        self._since: float | None = None  # when the deferred writes were first seen pending

    def busy(self) -> None:
        """A batch was committed."""
        self._busy_at = self._clock()

    def deadline(self, pending: bool) -> float | None:
        """When the deferred writes are due (``time.monotonic`` time), or None when nothing is."""
        if not pending:
            self._since = None
            return None
        if self._since is None:
            self._since = self._clock()
        return min(self._busy_at + self.idle, self._since + self.max_wait)

    def flushed(self, ok: bool) -> None:
        """A flush was tried; a failed one starts both clocks again."""
        self._busy_at = self._clock()
        if not ok:
            self._since = self._busy_at
