"""The one writer loop: every input goes through one queue; one dataplane commit per batch.

Producers (the datastore syncer thread, the block-affinity watcher, CNI handler threads, the
resync timer) only `submit`. The loop takes everything queued, feeds the calc graph, flushes
its deltas to the dataplane and commits once, so the kernel never sees half a batch. Nothing is
written before the datastore is in sync (a restart must not program a half-built state).

CNI writes are also injected directly ("local" updates, with the etcd revision of the write) so
an ADD returns with its route programmed; an older event about the same endpoint arriving from
the syncer afterwards is ignored, so a lagging watch cannot undo a newer local write.

A dataplane may defer part of a commit (endpoint removals' iptables work, and what an additive
commit left, see ``LinuxDataplane``): the deferred writes go out with the next batch that commits
them, or alone once the queue has been idle for ``deferred_seconds``, and in any case no later than
``deferred_max_seconds`` after they were first seen pending: a loop that never goes idle (pods
added back to back) still flushes them right after its current batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from felixpy.calc.graph import CalcGraph
from felixpy.calc.updates import InSync, Update

log = structlog.get_logger(__name__)
DEFERRED_SECONDS = 0.25  # idle time before writes a dataplane deferred are flushed on their own
DEFERRED_MAX_SECONDS = 1.0  # ... and the longest they wait when the loop is never idle


class Dataplane(Protocol):
    """What the loop drives. A dataplane may leave some writes for later (``deferred``) and flush
    them when asked (``commit_deferred``); ``post_write_check`` is cheap when nothing is due."""

    def apply(self, updates: list[Update]) -> None: ...

    def commit(self) -> bool:
        """Write the kernel; True when everything desired is in place."""
        ...

    def resync(self, what: str) -> None: ...

    @property
    def deferred(self) -> bool: ...

    def commit_deferred(self) -> bool: ...

    def post_write_check(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ResourceMsg:
    kind: str
    key: tuple[str, str]
    obj: Any | None
    revision: int = 0
    local: bool = False


@dataclass(frozen=True, slots=True)
class BlockMsg:
    cidr: str
    node: str | None


@dataclass(frozen=True, slots=True)
class InSyncMsg:
    pass


@dataclass(frozen=True, slots=True)
class ResyncMsg:
    what: str  # "routes" | "iptables" | "ipsets"


@dataclass(slots=True)
class Waiter:
    """Set once the batch holding it has been committed (``ok`` = the commit fully succeeded)."""

    event: threading.Event = field(default_factory=threading.Event)
    ok: bool = False

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout) and self.ok


Msg = ResourceMsg | BlockMsg | InSyncMsg | ResyncMsg | Waiter


class Writer:
    def __init__(
        self,
        graph: CalcGraph,
        dataplane: Dataplane,
        *,
        intervals: dict[str, float] | None = None,
        max_batch: int = 2000,
        on_commit: Callable[[float, bool, int], None] | None = None,
        deferred_seconds: float = DEFERRED_SECONDS,
        deferred_max_seconds: float = DEFERRED_MAX_SECONDS,
    ) -> None:
        self.graph = graph
        self.dataplane = dataplane
        self.intervals = intervals or {}
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.on_updates: Callable[[list[Update]], None] | None = None  # sees every batch first
        self.deferred_seconds = deferred_seconds
        self.deferred_max_seconds = deferred_max_seconds
        self._deferred_since: float | None = None  # when the dataplane was first seen with deferred work
        self._busy_at = 0.0  # when the loop last processed a batch (or tried a flush)
        self.in_sync = threading.Event()
        self.applied_ok = False
        self._queue: queue.Queue[Msg] = queue.Queue()
        self._local_revs: dict[tuple[str, str, str], int] = {}
        self._next_resync = {what: time.monotonic() + every for what, every in self.intervals.items()}

    # ---- producers ----------------------------------------------------------------------
    def submit(self, msg: Msg) -> None:
        self._queue.put(msg)

    def submit_and_wait(self, msgs: list[Msg], timeout: float) -> bool:
        waiter = Waiter()
        for msg in msgs:
            self._queue.put(msg)
        self._queue.put(waiter)
        return waiter.wait(timeout)

    @property
    def ready(self) -> bool:
        return self.in_sync.is_set() and self.applied_ok

    # ---- the loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            batch = self._take_batch()
            if batch:
                self._process(batch)
                self._busy_at = time.monotonic()
            if self._deferred() and time.monotonic() >= self._flush_at():
                self._commit_deferred()
            self._due_resyncs()
            self._post_write_check()

    def _post_write_check(self) -> None:
        """Cheap when nothing is due: the dataplane decides whether a re-read is due (Felix's schedule)."""
        if self.in_sync.is_set():
            self.dataplane.post_write_check()

    def _deferred(self) -> bool:
        pending = self.dataplane.deferred and self.in_sync.is_set()
        if not pending:
            self._deferred_since = None
        elif self._deferred_since is None:
            self._deferred_since = time.monotonic()
        return pending

    def _flush_at(self) -> float:
        """When deferred writes go out: once the loop was idle ``deferred_seconds``, at the latest
        ``deferred_max_seconds`` after they were first seen (call after ``_deferred()`` is True)."""
        since = self._deferred_since if self._deferred_since is not None else time.monotonic()
        return min(self._busy_at + self.deferred_seconds, since + self.deferred_max_seconds)

    def _commit_deferred(self) -> None:
        """Idle for ``deferred_seconds``, or pending for ``deferred_max_seconds``: flush alone. A failed
        flush starts both clocks again (no busy retry loop)."""
        start = time.monotonic()
        ok = self.dataplane.commit_deferred()
        self.applied_ok = ok
        self._busy_at = time.monotonic()
        if not ok:
            self._deferred_since = self._busy_at
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - start, ok, 0)

    def _take_batch(self) -> list[Msg]:
        timeout = max(0.0, min(self._next_resync.values(), default=time.monotonic() + 1) - time.monotonic())
        if self._deferred():
            timeout = min(timeout, max(0.0, self._flush_at() - time.monotonic()))
        try:
            first = self._queue.get(timeout=min(timeout, 1.0))
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _due_resyncs(self) -> None:
        now = time.monotonic()
        for what, when in self._next_resync.items():
            if now >= when:
                self._next_resync[what] = now + self.intervals[what]
                self._process([ResyncMsg(what)])

    def _process(self, batch: list[Msg]) -> None:
        waiters = []
        just_synced = False
        for msg in batch:
            if isinstance(msg, Waiter):
                waiters.append(msg)
            elif isinstance(msg, ResourceMsg):
                self._on_resource(msg)
            elif isinstance(msg, BlockMsg):
                self.graph.on_block(msg.cidr, msg.node)
            elif isinstance(msg, InSyncMsg):
                just_synced = not self.in_sync.is_set()
            elif isinstance(msg, ResyncMsg) and self.in_sync.is_set():
                self.dataplane.resync(msg.what)
        if just_synced:
            log.info("datastore.in_sync", reason="snapshot complete; programming the dataplane")
        if not (self.in_sync.is_set() or just_synced):
            for w in waiters:
                w.event.set()
            return
        self._commit(waiters, just_synced)

    def _commit(self, waiters: list[Waiter], just_synced: bool) -> None:
        updates = self.graph.flush()
        if just_synced:
            updates.append(InSync())
        start = time.monotonic()
        if self.on_updates is not None:
            self.on_updates(updates)
        self.dataplane.apply(updates)
        ok = self.dataplane.commit()
        if just_synced:
            self.in_sync.set()
        self.applied_ok = ok
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - start, ok, len(updates))
        for w in waiters:
            w.ok = ok
            w.event.set()

    def _on_resource(self, msg: ResourceMsg) -> None:
        ident = (msg.kind, *msg.key)
        if msg.local:
            self._local_revs[ident] = max(msg.revision, self._local_revs.get(ident, 0))
        else:
            newest_local = self._local_revs.get(ident)
            if newest_local is not None:
                if msg.revision and msg.revision < newest_local:
                    return  # stale: a CNI write newer than this event was already applied
                del self._local_revs[ident]
        self.graph.on_resource(msg.kind, msg.key, msg.obj)
