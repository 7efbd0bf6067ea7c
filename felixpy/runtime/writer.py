"""The one writer loop: every input goes through one queue; one dataplane commit per batch.

Producers (the datastore syncer thread, the block-affinity watcher, CNI handler threads, the
resync timer) only `submit`. The loop takes everything queued, feeds the calc graph, flushes
its deltas to the dataplane and commits once, so the kernel never sees half a batch. Nothing is
written before the datastore is in sync (a restart must not program a half-built state).

CNI writes are also injected directly ("local" updates, with the etcd revision of the write) so
an ADD returns with its route programmed; an older event about the same endpoint arriving from
the syncer afterwards is ignored, so a lagging watch cannot undo a newer local write.

A dataplane may defer part of a commit (endpoint removals' iptables work, and what an additive
commit left; the policy writers decide that, ``felixpy.dataplane.deferral``): it says when they
are due (``next_deadline``), and the loop wakes up then and asks it to write them
(``commit_deferred``); nothing else of the deferral is the loop's business.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from felixpy.calc.graph import CalcGraph, event_input
from felixpy.calc.updates import InSync, InvalidConfig, Update

if TYPE_CHECKING:
    from felixpy.datastore.backend import ResourceEvent
    from felixpy.resources.base import Resource

log = structlog.get_logger(__name__)


class Dataplane(Protocol):
    """What the loop drives. A dataplane may leave some writes for later: ``next_deadline`` says when
    they are due (None: nothing is), ``commit_deferred`` writes them; ``post_write_check`` is cheap
    when nothing is due."""

    def apply(self, updates: list[Update]) -> None: ...

    def commit(self) -> bool:
        """Write the kernel; True when everything desired is in place."""
        ...

    def resync(self, what: str) -> None: ...

    def next_deadline(self) -> float | None: ...

    def commit_deferred(self) -> bool: ...

    def post_write_check(self) -> None: ...


class NullDataplane:
    """A dataplane with nothing to write: each step does nothing and succeeds. The route reflector's
    dataplane starts from it, and so do the stand-ins of tests and benchmarks that only watch what
    calc sends (they override ``apply`` or the step they count)."""

    def apply(self, updates: list[Update]) -> None:
        return None

    def commit(self) -> bool:
        return True

    def resync(self, what: str) -> None:
        return None

    def next_deadline(self) -> float | None:
        return None

    def commit_deferred(self) -> bool:
        return True

    def post_write_check(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ResourceMsg:
    kind: str
    key: tuple[str, str]
    obj: Resource | InvalidConfig | None  # InvalidConfig: a FelixConfiguration that does not validate
    revision: int = 0
    local: bool = False
    # A datastore event whose ``obj`` is built here, in the writer, when the message is processed
    # (``obj`` is then unused): a start-up snapshot of 11,000 endpoints queued as models held
    # them all at once, as raw JSON it holds a few MB and builds one model at a time.
    event: ResourceEvent | None = None

    @property
    def deleted(self) -> bool:
        """The resource is gone (no model, and no event to build one from)."""
        return self.obj is None and self.event is None


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


@dataclass(slots=True)
class WriterStats:
    """What the loop counts for Felix's ``felix_calc_graph_*`` and ``felix_int_dataplane_messages``
    (felixpy.runtime.felix_metrics reads them at scrape time). Kept per batch: two clock reads per
    batch that fed the graph, one dict increment per message and per update (no lock: only the
    writer thread writes, a scrape copies with one C call)."""

    updates_processed: Counter[str] = field(default_factory=Counter)  # datastore updates, by kind
    calc_batches: int = 0  # batches of datastore updates fed to the graph (summary count)
    calc_seconds: float = 0.0  # time spent feeding them (summary sum)
    output_events: int = 0  # updates the graph emitted (flush), InSync included
    dataplane_messages: Counter[str] = field(default_factory=Counter)  # updates applied, by type
    invalid_resources: Counter[str] = field(default_factory=Counter)  # stored documents refused, by kind


def _validation_errors(exc: ValueError) -> str:
    """``spec.node: String should match pattern ...; metadata.name: ...`` for a pydantic error, else
    the exception's text."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in errors())


class _Queue(queue.Queue[Msg]):
    """The writer's queue, with bulk ends: a start-up snapshot of 11,500 messages put and taken one
    at a time paid a lock round and a wake-up per message on both sides (~40 ms of CPU at x10)."""

    def put_many(self, items: list[Msg]) -> None:
        if not items:
            return
        with self.not_empty:  # unbounded (maxsize 0): never waits for room
            self.queue.extend(items)
            self.unfinished_tasks += len(items)
            self.not_empty.notify()

    def take_nowait(self, batch: list[Msg], limit: int) -> None:
        """Move up to ``limit`` queued messages, oldest first, to the end of ``batch``."""
        with self.mutex:
            q = self.queue
            for _ in range(min(limit, len(q))):
                batch.append(q.popleft())
            self.not_full.notify()


class Writer:
    def __init__(
        self,
        graph: CalcGraph,
        dataplane: Dataplane,
        *,
        intervals: dict[str, float] | None = None,
        max_batch: int = 2000,
        on_commit: Callable[[float, bool, int], None] | None = None,
        hold_gc: bool = False,
    ) -> None:
        self.graph = graph
        self.dataplane = dataplane
        self.intervals = intervals or {}
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.on_updates: Callable[[list[Update]], None] | None = None  # sees every batch first
        self.in_sync = threading.Event()
        self.applied_ok = False
        self.stats = WriterStats()
        self._queue = _Queue()
        self._local_revs: dict[tuple[str, str, str], int] = {}
        self._next_resync = {what: time.monotonic() + every for what, every in self.intervals.items()}
        # The cyclic collector off for the start-up snapshot (`_hold_gc`): the agent asks for it; a
        # process that makes writers and never brings them in sync (tests) must not lose its collector.
        self.hold_gc = hold_gc
        self._gc_held = False
        # The snapshot's cost as the `datastore.in_sync` line reports it: wall time from the first
        # message to in-sync, and the writer thread's own CPU in that time (the rest of the wall
        # time is waiting: for messages, for the GIL, for a core).
        self._feed_start: float | None = None
        self._feed_cpu = 0.0
        self._feed_process_cpu = 0.0

    # ---- producers ----------------------------------------------------------------------
    def submit(self, msg: Msg) -> None:
        self._queue.put(msg)

    def has_work(self) -> bool:
        """Whether a message waits (for work done only while the writer would be idle)."""
        return not self._queue.empty()

    def submit_many(self, msgs: list[Msg]) -> None:
        """``submit`` of each, in order, as one queue operation (the syncer's snapshot batches)."""
        self._queue.put_many(msgs)

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
        try:
            while not stop.is_set():
                batch = self._take_batch()
                if batch:
                    self._process(batch)
                deadline = self._flush_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    self._commit_deferred()
                self._due_resyncs()
                self._post_write_check()
            self._flush_before_exit()
        finally:
            self._release_gc()

    def _flush_before_exit(self) -> None:
        """A graceful stop writes what the dataplane deferred (a DEL's chain removals, an ADD's
        hash fix-ups) instead of leaving it for the next agent: the kernel is left as desired, so
        a restart on that state finds nothing to write (one commit; the agent's join bounds it)."""
        if self._flush_deadline() is not None:
            log.info("dataplane.deferred_flush", reason="agent stopping: deferred writes go now")
            self._commit_deferred()

    def _post_write_check(self) -> None:
        """Cheap when nothing is due: the dataplane decides whether a re-read is due (Felix's schedule)."""
        if self.in_sync.is_set():
            self.dataplane.post_write_check()

    def _flush_deadline(self) -> float | None:
        """When the dataplane's deferred writes are due (never before in-sync)."""
        return self.dataplane.next_deadline() if self.in_sync.is_set() else None

    def _commit_deferred(self) -> None:
        start = time.monotonic()
        ok = self.dataplane.commit_deferred()
        self.applied_ok = ok
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - start, ok, 0)

    def _take_batch(self) -> list[Msg]:
        timeout = max(0.0, min(self._next_resync.values(), default=time.monotonic() + 1) - time.monotonic())
        deadline = self._flush_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        try:
            first = self._queue.get(timeout=min(timeout, 1.0))
        except queue.Empty:
            return []
        batch = [first]
        self._queue.take_nowait(batch, self.max_batch - 1)
        return batch

    def _due_resyncs(self) -> None:
        now = time.monotonic()
        for what, when in self._next_resync.items():
            if now >= when:
                self._next_resync[what] = now + self.intervals[what]
                self._process([ResyncMsg(what)])

    def _hold_gc(self) -> None:
        """Turn the cyclic garbage collector off until the snapshot is programmed (`_release_gc`).

        The snapshot builds the calc graph's whole state at once (x10: ~385,000 tracked objects, none
        of them garbage), and each generation-0 collection it triggers promotes them and makes the
        older generations rescan the growing heap: a third of the snapshot's CPU went to the
        collector. Bounded: only until the first commit after in-sync."""
        if self.hold_gc and not self._gc_held and not self.in_sync.is_set() and gc.isenabled():
            gc.disable()
            self._gc_held = True

    def _release_gc(self) -> None:
        """Back on, with what the start-up built moved out of the collector's generations
        (``gc.freeze``): it is the agent's long-lived state, and a full collection rescanning it
        costs ~0.15 s of CPU each time (at x10), at start-up and at idle alike."""
        if self._gc_held:
            self._gc_held = False
            gc.freeze()
            gc.enable()

    def _process(self, batch: list[Msg]) -> None:
        self._hold_gc()
        waiters = []
        just_synced = False
        fed = self.stats.updates_processed
        n_fed = 0
        start = time.monotonic()
        syncing = not self.in_sync.is_set()
        if syncing:
            cpu_start = time.thread_time()
            if self._feed_start is None:
                self._feed_start = start
                self._feed_process_cpu = time.process_time()
        for msg in batch:
            if isinstance(msg, Waiter):
                waiters.append(msg)
            elif isinstance(msg, ResourceMsg):
                fed[msg.kind] += 1
                n_fed += 1
                self._on_resource(msg)
            elif isinstance(msg, BlockMsg):
                fed["Block"] += 1
                n_fed += 1
                self.graph.on_block(msg.cidr, msg.node)
            elif isinstance(msg, InSyncMsg):
                just_synced = not self.in_sync.is_set()
            elif isinstance(msg, ResyncMsg) and self.in_sync.is_set():
                self.dataplane.resync(msg.what)
        if n_fed:  # one observation per batch, as Felix observes one per OnUpdates call
            self.stats.calc_batches += 1
            self.stats.calc_seconds += time.monotonic() - start
        if syncing:
            self._feed_cpu += time.thread_time() - cpu_start
        if just_synced:
            log.info(
                "datastore.in_sync",
                reason="snapshot complete; programming the dataplane",
                updates=sum(fed.values()),
                feed_s=round(time.monotonic() - (self._feed_start or start), 3),
                feed_cpu_s=round(self._feed_cpu, 3),
                process_cpu_s=round(time.process_time() - self._feed_process_cpu, 3),
            )
        if not (self.in_sync.is_set() or just_synced):
            for w in waiters:
                w.event.set()
            return
        self._commit(waiters, just_synced)

    def _commit(self, waiters: list[Waiter], just_synced: bool) -> None:
        updates = self.graph.flush()
        if just_synced:
            updates.append(InSync())
        self.stats.output_events += len(updates)
        messages = self.stats.dataplane_messages
        for update in updates:
            messages[type(update).__name__] += 1
        start = time.monotonic()
        if self.on_updates is not None:
            self.on_updates(updates)
        self.dataplane.apply(updates)
        ok = self.dataplane.commit()
        if just_synced:
            self.in_sync.set()
            self._release_gc()
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
        obj = msg.obj if msg.event is None else self._decoded(msg, msg.event)
        self.graph.on_resource(msg.kind, msg.key, obj)

    def _decoded(self, msg: ResourceMsg, event: ResourceEvent) -> Any:
        """The calc's input for a stored document, or None (as if deleted) when it does not validate.

        A document in the datastore that fails validation (written past felixctl, by an older or
        buggy client, or by hand with etcdctl) must not stop the writer: the agent would exit, and
        restart into the same document forever. As Felix's validation filter does, it is logged
        with the field and the reason and treated as deleted: the calc drops what it had for that
        key, and takes the resource again when a valid version is written."""
        try:
            return event_input(msg.kind, event)
        except ValueError as exc:  # pydantic's ValidationError (JSON and fields) is a ValueError
            self.stats.invalid_resources[msg.kind] += 1
            log.warning(
                "datastore.invalid_resource",
                kind=msg.kind,
                namespace=msg.key[0] or None,
                name=msg.key[1],
                revision=msg.revision,
                errors=_validation_errors(exc),
                action="treated as deleted",
            )
            return None
