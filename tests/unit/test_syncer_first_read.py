"""The syncer's early first read (issue 15, goal 2): the agent starts listing the snapshot while it
builds the rest of itself, and the syncer takes that read instead of listing again. Same list, same
revision, same watch start: the consumer sees exactly what a syncer listing for itself delivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from felixpy.datastore.backend import ResourceEvent
from felixpy.datastore.errors import Unavailable
from felixpy.datastore.resources import LazyResourceEvent
from felixpy.datastore.syncer import Backoff, SnapshotRead, Syncer, SyncerQueue, Updates
from felixpy.resources import GlobalNetworkPolicy, IPPool, WorkloadEndpoint
from felixpy.resources.base import Resource

KINDS: list[type[Resource]] = [IPPool, WorkloadEndpoint, GlobalNetworkPolicy]
REVISION = 41


class Watch:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[list[ResourceEvent]]:
        self.closed.wait(30)
        return iter(())

    def close(self) -> None:
        self.closed.set()


class Source:
    """list_events / watch of a fixed store; ``fail`` lists fail first; ``gate`` holds every list."""

    def __init__(self, fail: int = 0, gate: threading.Event | None = None) -> None:
        self.lists: list[tuple[str, int | None, str]] = []  # kind, pinned revision, thread name
        self.watches: list[int] = []
        self.fail = fail
        self.gate = gate

    def list_events(self, kind: type[Resource], revision: int | None = None) -> tuple[list[Any], int]:
        if self.gate is not None:
            self.gate.wait(30)
        self.lists.append((kind.KIND, revision, threading.current_thread().name))
        if self.fail:
            self.fail -= 1
            raise Unavailable("etcd: no leader")
        name = kind.KIND.lower()
        events = [LazyResourceEvent("put", kind, f"{name}-{i}", None, b"{}", 10 + i) for i in range(3)]
        return events, REVISION

    def watch(self, kinds: list[type[Resource]], start: int) -> Watch:
        self.watches.append(start)
        return Watch()


def _run(source: Source, first_read: SnapshotRead | None, kinds: list[type[Resource]] = KINDS) -> list[Any]:
    q = SyncerQueue()
    syncer = Syncer(
        source, kinds, on_updates=q.on_updates, on_status=q.on_status,
        backoff=Backoff(initial=0.01), first_read=first_read,
    )  # fmt: skip
    syncer.start()
    try:
        msgs = q.wait_for(lambda m: getattr(m, "status", None) == "in-sync", timeout=20)
        deadline = time.monotonic() + 10
        while not source.watches and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        syncer.stop(timeout=5)
    assert syncer.error is None
    return msgs


def _names(msgs: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.kind.KIND, e.name, e.revision) for m in msgs if isinstance(m, Updates) for e in m.events]


def test_the_syncer_takes_the_early_read_and_does_not_list_again() -> None:
    plain = Source()
    expected = _names(_run(plain, None))
    early = Source()
    read = SnapshotRead(early, KINDS)
    got = _names(_run(early, read))
    assert got == expected and len(got) == 9
    assert [(k, r) for k, r, _ in early.lists] == [(k, r) for k, r, _ in plain.lists]  # pinned the same
    assert {t for _, _, t in early.lists} == {"felixpy-snapshot-read"}  # listed once, early
    assert early.watches == plain.watches == [REVISION + 1]


def test_a_failed_early_read_is_listed_again_as_any_failed_snapshot() -> None:
    source = Source(fail=1)
    msgs = _run(source, SnapshotRead(source, KINDS))
    assert len(_names(msgs)) == 9
    threads = [t for _, _, t in source.lists]
    assert threads[0] == "felixpy-snapshot-read" and set(threads[1:]) == {"felixpy-syncer"}
    assert [getattr(m, "status", None) for m in msgs].count("in-sync") == 1


def test_an_early_read_of_other_kinds_is_not_used() -> None:
    source = Source()
    read = SnapshotRead(source, KINDS[:1])
    assert len(_names(_run(source, read))) == 9
    assert sum(1 for _, _, t in source.lists if t == "felixpy-syncer") == len(KINDS)


def test_stop_while_the_early_read_is_still_running_ends_the_syncer() -> None:
    gate = threading.Event()
    source = Source(gate=gate)
    syncer = Syncer(source, KINDS, on_updates=lambda evs: None, first_read=SnapshotRead(source, KINDS))
    syncer.start()
    time.sleep(0.1)
    start = time.monotonic()
    syncer.stop(timeout=10)
    assert not syncer.alive and time.monotonic() - start < 10
    gate.set()
