"""The Syncer: a consistent, gap-free, duplicate-free stream of resource changes.

Protocol (the watcher-syncer of networking-calico / libcalico-go, rewritten):

1. ``on_status("wait-for-ready")``.
2. Snapshot: every kind is listed at one etcd revision R (pages pinned at R). Nothing is
   emitted until the whole snapshot has been read, so a failure mid-list emits nothing.
3. The snapshot goes out as ``on_updates(batch)`` calls (puts, one batch per kind), then
   ``on_status("in-sync")``. Consumers must not treat their state as complete before it.
4. A watch from R+1 delivers every later change, in revision order, as ``on_updates``.
5. On `Compacted` or a lost connection: ``on_status("resync")``, wait (bounded
   exponential backoff, reset after each successful sync), list again at a new R', and
   emit only the difference against what was already delivered (mark and sweep):
   a put for every key that is new or whose mod revision changed, a delete (``obj`` None)
   for every key that vanished. Then ``"in-sync"`` and watch from R'+1. The consumer
   keeps its state throughout; it never sees a change twice or misses one.

Consumer API (two styles):

- callbacks, run from the syncer's own thread::

      s = Syncer(backend, [WorkloadEndpoint, NetworkPolicy], on_updates=f, on_status=g)
      s.start()            # a daemon thread; s.stop() ends it (and joins, bounded)
      s.run(stop_event)    # or block the calling thread yourself

- messages: ``q = SyncerQueue(); Syncer(..., on_updates=q.on_updates, on_status=q.on_status)``
  then, in the consumer's thread, ``for msg in q.drain(timeout)`` yields ``Updates`` and
  ``Status`` objects in order.

Early read: ``SnapshotRead(backend, kinds)`` starts the first snapshot's list in its own thread
before the syncer exists (the agent does it right after its start-up writes, while it builds the
rest of itself); ``Syncer(..., first_read=that)`` then takes it instead of listing again. It is
the same list at one revision R, followed by the same watch from R+1, so nothing is lost or
repeated; a failed early read is listed again as any failed snapshot is.

Callbacks must not block for long; an exception in one ends the syncer (crash-only:
``syncer.error`` holds it and the agent exits). Events are `LazyResourceEvent`s: the JSON is
decoded once and the pydantic model built on first access of ``event.obj``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from felixpy.datastore.backend import ResourceEvent
from felixpy.datastore.errors import Compacted, DatastoreError
from felixpy.datastore.resources import KVBackend, LazyResourceEvent
from felixpy.resources.base import Resource

log = logging.getLogger(__name__)

SyncStatus = Literal["wait-for-ready", "resync", "in-sync"]
Key = tuple[type[Resource], str | None, str]


@dataclass(frozen=True, slots=True)
class Updates:
    events: list[ResourceEvent]


@dataclass(frozen=True, slots=True)
class Status:
    status: SyncStatus


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(0, failures - 1)))


def list_kinds(
    source: Any, kinds: Sequence[type[Resource]]
) -> tuple[list[list[ResourceEvent]], dict[type[Resource], int], int]:
    """Every kind listed at one revision: (a batch per kind, revision each was listed at, that revision)."""
    batches: list[list[ResourceEvent]] = []
    listed_at: dict[type[Resource], int] = {}
    pinned: int | None = None
    for kind in kinds:
        events, rev = source.list_events(kind, revision=pinned)
        pinned = pinned or rev
        listed_at[kind] = rev
        batches.append(events)
    return batches, listed_at, pinned or 0


class SnapshotRead:
    """A first snapshot's list, read in its own thread from the moment it is made (see above).

    Issue 15, goal 2: the agent's start otherwise read the snapshot (0.3-0.5 s at x10, mostly
    etcd's own time) only after it had built everything else; now the two overlap."""

    def __init__(self, source: Any, kinds: Sequence[type[Resource]]) -> None:
        self.kinds = list(kinds)
        self._source = _as_source(source)
        self._done = threading.Event()
        self._result: tuple[list[list[ResourceEvent]], dict[type[Resource], int], int] | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._read, name="felixpy-snapshot-read", daemon=True).start()

    def _read(self) -> None:
        try:
            self._result = list_kinds(self._source, self.kinds)
        except BaseException as exc:  # handed to the syncer, which raises it in its own thread
            self._error = exc
        finally:
            self._done.set()

    def take(
        self, stop: threading.Event
    ) -> tuple[list[list[ResourceEvent]], dict[type[Resource], int], int] | None:
        """The read (its error raised), or None when ``stop`` is set first. Bounded by the read's own
        deadlines (the KV's request and fail-over timeouts) and by ``stop``."""
        while not self._done.wait(0.5):
            if stop.is_set():
                return None
        if self._error is not None:
            raise self._error
        return self._result


def diff_snapshot(
    known: dict[Key, int], listed: Sequence[ResourceEvent], revision: int
) -> tuple[list[ResourceEvent], dict[Key, int]]:
    """Mark and sweep: events turning ``known`` into ``listed``, and the new known map (pure)."""
    fresh: dict[Key, int] = {}
    out: list[ResourceEvent] = []
    for ev in listed:
        key = (ev.kind, ev.namespace, ev.name)
        fresh[key] = ev.revision
        if known.get(key) != ev.revision:
            out.append(ev)
    for key in known.keys() - fresh.keys():
        kind, ns, name = key
        out.append(LazyResourceEvent("delete", kind, name, ns, None, revision))
    return out, fresh


class Syncer:
    def __init__(
        self,
        source: Any,
        kinds: Sequence[type[Resource]],
        *,
        on_updates: Callable[[list[ResourceEvent]], None],
        on_status: Callable[[SyncStatus], None] = lambda status: None,
        backoff: Backoff | None = None,
        first_read: SnapshotRead | None = None,
    ):
        self.backend = _as_source(source)
        self._first_read = first_read
        self.kinds = list(kinds)
        self.on_updates = on_updates
        self.on_status = on_status
        self.backoff = backoff or Backoff()
        self.status: SyncStatus | None = None
        self.error: BaseException | None = None
        self.resyncs = 0
        self._known: dict[Key, int] = {}
        self._listed_at: dict[type[Resource], int] = {}
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Syncer:
        self._thread = threading.Thread(target=self._thread_main, name="felixpy-syncer", daemon=True)
        self._thread.start()
        return self

    def _thread_main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # crash-only: record it for the agent and stop
            self.error = exc
            log.exception("syncer failed")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None and hasattr(watch, "close"):
            watch.close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _set_status(self, status: SyncStatus) -> None:
        if status != self.status:
            self.status = status
            log.info("syncer status=%s kinds=%d keys=%d", status, len(self.kinds), len(self._known))
            self.on_status(status)

    # --- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Snapshot, then follow; resync on failure. Returns when stopped."""
        if stop is not None:
            self._stop = stop
        self._set_status("wait-for-ready")
        failures = 0
        while not self._stop.is_set():
            try:
                revision = self._snapshot()
                failures = 0
                self._follow(revision + 1)
            except DatastoreError as exc:
                if self._stop.is_set():
                    break
                failures += 0 if isinstance(exc, Compacted) else 1
                self.resyncs += 1
                log.warning("syncer resync reason=%r failures=%d", str(exc), failures)
                if self.status == "in-sync":
                    self._set_status("resync")
                self._stop.wait(self.backoff.delay(failures) if failures else 0)

    def _list_all(self) -> tuple[list[list[ResourceEvent]], int]:
        read, self._first_read = self._first_read, None  # used once: a resync lists afresh
        if read is not None and read.kinds == self.kinds:
            taken = read.take(self._stop)
            if taken is None:
                raise DatastoreError("syncer stopped while its first snapshot was read")
        else:
            taken = list_kinds(self.backend, self.kinds)
        batches, listed_at, revision = taken
        self._listed_at.update(listed_at)
        return batches, revision

    def _snapshot(self) -> int:
        batches, revision = self._list_all()
        if not self._known:
            for kind, batch in zip(self.kinds, batches, strict=True):
                self._known.update(((kind, e.namespace, e.name), e.revision) for e in batch)
                if batch:
                    self.on_updates(batch)
        else:
            changes, self._known = diff_snapshot(self._known, [e for b in batches for e in b], revision)
            if changes:
                self.on_updates(changes)
        self._set_status("in-sync")
        return revision

    def _follow(self, start_revision: int) -> None:
        self._watch = self.backend.watch(self.kinds, start_revision)
        try:
            if self._stop.is_set():
                return
            for batch in self._watch:
                fresh = self._accept(batch)
                if fresh:
                    self.on_updates(fresh)
                if self._stop.is_set():
                    return
        finally:
            watch, self._watch = self._watch, None
            if hasattr(watch, "close"):
                watch.close()
        if not self._stop.is_set():
            raise DatastoreError("watch ended unexpectedly")

    def _accept(self, batch: list[ResourceEvent]) -> list[ResourceEvent]:
        """Drop events already covered by the snapshot; keep ``known`` current."""
        out = []
        known, listed_at = self._known, self._listed_at
        for ev in batch:
            if ev.revision <= listed_at.get(ev.kind, 0):
                continue
            key = (ev.kind, ev.namespace, ev.name)
            if ev.type == "put":
                known[key] = ev.revision
            elif known.pop(key, None) is None:
                continue
            out.append(ev)
        return out


def _as_source(source: Any) -> Any:
    """A backend offering ``list_events(kind, revision=)`` and ``watch(kinds, rev)``; a raw KV is wrapped."""
    if hasattr(source, "list_events") and hasattr(source, "watch"):
        return source
    if hasattr(source, "txn") and hasattr(source, "list"):
        return KVBackend(source)
    raise TypeError(f"Syncer needs a KV or a backend with list_events/watch, not {type(source).__name__}")


class SyncerQueue:
    """Turns the callbacks into an ordered queue of `Updates` / `Status` messages for another thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Updates | Status] = queue.Queue()

    def on_updates(self, events: list[ResourceEvent]) -> None:
        self.queue.put(Updates(events))

    def on_status(self, status: SyncStatus) -> None:
        self.queue.put(Status(status))

    def drain(self, timeout: float) -> Iterator[Updates | Status]:
        """Messages as they come, until none arrives for ``timeout`` seconds."""
        while True:
            try:
                yield self.queue.get(timeout=timeout)
            except queue.Empty:
                return

    def wait_for(
        self, predicate: Callable[[Updates | Status], bool], timeout: float
    ) -> list[Updates | Status]:
        """Messages up to and including the first matching ``predicate``; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: list[Updates | Status] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching syncer message within {timeout}s (saw {len(seen)})")
            try:
                msg = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(msg)
            if predicate(msg):
                return seen
