"""Counts of the dataplane's calls to an external tool (iptables-restore, ipset…), for metrics.

Each writer owns one :class:`ToolStats`; the metrics collector reads it at scrape time. Felix
exports the same counts as ``felix_iptables_restore_calls``, ``felix_ipset_errors`` and so on.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class ToolStats:
    """Calls, failed calls and input lines per tool action ("restore", "save", "ipset"…), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._lines: Counter[tuple[str, str]] = Counter()  # (action, table or "") -> lines

    @contextmanager
    def call(self, action: str) -> Iterator[None]:
        """Count one call of ``action``; an exception out of the block counts it as an error too."""
        try:
            yield
        except BaseException:
            with self._lock:
                self._calls[action] += 1
                self._errors[action] += 1
            raise
        with self._lock:
            self._calls[action] += 1

    def add_lines(self, action: str, n: int, table: str = "") -> None:
        with self._lock:
            self._lines[(action, table)] += n

    def calls(self, action: str) -> int:
        with self._lock:
            return self._calls[action]

    def errors(self, action: str) -> int:
        with self._lock:
            return self._errors[action]

    def lines(self, action: str) -> dict[str, int]:
        """Lines executed by ``action``, by table ("" when the tool has none)."""
        with self._lock:
            return {table: n for (a, table), n in self._lines.items() if a == action}
