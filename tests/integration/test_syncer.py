"""The Syncer against a real etcd: snapshot, in-sync, ordered updates, and exact resyncs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felixpy.datastore.backend import ResourceEvent
from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.resources import KVBackend
from felixpy.datastore.syncer import Backoff, Status, Syncer, SyncerQueue, SyncStatus, Updates
from felixpy.resources import IPPool, NetworkPolicy, WorkloadEndpoint
from tests.fixtures.etcd import start_etcd

pytestmark = pytest.mark.integration
KINDS = [WorkloadEndpoint, NetworkPolicy, IPPool]


def wep(name: str, node: str = "node1") -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"node": node, "interfaceName": "cali" + name[-8:].rjust(11, "0")},
        }
    )


def policy(name: str, selector: str = "all()") -> NetworkPolicy:
    return NetworkPolicy.model_validate(
        {"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": selector}}
    )


class Mirror:
    """A consumer that rebuilds the datastore from the stream and checks it never repeats itself."""

    def __init__(self) -> None:
        self.queue = SyncerQueue()
        self.state: dict[tuple[str, str | None, str], int] = {}
        self.statuses: list[SyncStatus] = []
        self.events: list[ResourceEvent] = []
        self.in_sync_with_partial: bool = False

    def apply(self, msg: Updates | Status) -> None:
        if isinstance(msg, Status):
            self.statuses.append(msg.status)
            return
        for ev in msg.events:
            key = (ev.kind.KIND, ev.namespace, ev.name)
            self.events.append(ev)
            if ev.type == "put":
                assert self.state.get(key, 0) < ev.revision, f"duplicate or stale put {key}@{ev.revision}"
                self.state[key] = ev.revision
            else:
                assert key in self.state, f"delete of unknown {key}"
                del self.state[key]

    def until(self, pred: Any, timeout: float = 10.0) -> None:
        for msg in self.queue.wait_for(lambda m: (self.apply(m), pred())[1], timeout):
            del msg

    def syncer(self, source: Any, **kw: Any) -> Syncer:
        return Syncer(
            source,
            KINDS,
            on_updates=self.queue.on_updates,
            on_status=self.queue.on_status,
            backoff=Backoff(0.05, 0.5),
            **kw,
        )


def etcd_state(kv: EtcdKV) -> dict[tuple[str, str | None, str], int]:
    backend = KVBackend(kv)
    out = {}
    for kind in KINDS:
        for ev in backend.list_events(kind)[0]:
            out[(kind.KIND, ev.namespace, ev.name)] = ev.revision
    return out


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    yield Mirror()


def test_snapshot_then_in_sync_then_ordered_updates(etcd_backend: KVBackend, mirror: Mirror) -> None:
    for i in range(20):
        etcd_backend.create(wep(f"pod-{i:03d}"))
    etcd_backend.create(policy("allow"))
    syncer = mirror.syncer(etcd_backend).start()
    try:
        mirror.until(lambda: "in-sync" in mirror.statuses)
        assert mirror.statuses == ["wait-for-ready", "in-sync"]
        assert len(mirror.state) == 21  # the whole snapshot arrived before in-sync
        etcd_backend.delete(WorkloadEndpoint, "pod-000", "default")
        etcd_backend.apply(policy("allow", "app == 'x'"))
        etcd_backend.create(
            IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.9.0.0/16"}})
        )
        mirror.until(lambda: len(mirror.events) >= 24)
        tail = [(e.type, e.kind.KIND, e.name) for e in mirror.events[21:]]
        assert tail == [
            ("delete", "WorkloadEndpoint", "pod-000"),
            ("put", "NetworkPolicy", "allow"),
            ("put", "IPPool", "p"),
        ]
        assert mirror.events[22].obj.spec.selector == "app == 'x'"  # type: ignore[union-attr]
        assert mirror.state == etcd_state(etcd_backend.kv)  # type: ignore[arg-type]
    finally:
        syncer.stop()
    assert not syncer.alive and syncer.error is None


class CompactBeforeFirstWatch:
    """A real EtcdKV whose first watch() is preceded by other writers and a compaction."""

    def __init__(self, kv: EtcdKV, hook: Any):
        self.kv, self.hook, self.fired = kv, hook, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    def list(self, prefix: str, *, revision: int | None = None) -> Any:
        return self.kv.list(prefix, revision=revision)

    def watch(self, prefix: str, start_revision: int) -> Any:
        if not self.fired:
            self.fired = True
            self.hook()
        return self.kv.watch(prefix, start_revision)


def test_compaction_between_list_and_watch_resyncs_exactly_the_missed_changes(
    etcd_kv: EtcdKV, mirror: Mirror
) -> None:
    backend = KVBackend(etcd_kv)
    for i in range(10):
        backend.create(wep(f"pod-{i}"))

    def other_writers() -> None:
        backend.delete(WorkloadEndpoint, "pod-0", "default")
        current = backend.get(WorkloadEndpoint, "pod-1", "default")
        current.metadata.labels["changed"] = "yes"
        backend.update(current)
        backend.create(wep("pod-new"))
        etcd_kv.compact(etcd_kv.revision())

    syncer = mirror.syncer(CompactBeforeFirstWatch(etcd_kv, other_writers)).start()
    try:
        mirror.until(lambda: mirror.statuses.count("in-sync") == 2)
        assert mirror.statuses == ["wait-for-ready", "in-sync", "resync", "in-sync"]
        resync = [(e.type, e.name) for e in mirror.events[10:]]
        assert sorted(resync) == [("delete", "pod-0"), ("put", "pod-1"), ("put", "pod-new")]
        assert mirror.state == etcd_state(etcd_kv)
        backend.create(wep("after"))
        mirror.until(lambda: mirror.events[-1].name == "after")
    finally:
        syncer.stop()
    assert syncer.resyncs == 1


def test_etcd_killed_and_restarted_loses_and_repeats_nothing(tmp_path: Path, mirror: Mirror) -> None:
    etcd = start_etcd(tmp_path)
    kv = etcd.kv(timeout=2.0)
    writer = etcd.kv(timeout=2.0)
    syncer = mirror.syncer(kv)
    try:
        backend = KVBackend(writer)
        for i in range(10):
            backend.create(wep(f"pod-{i}"))
        syncer.start()
        mirror.until(lambda: "in-sync" in mirror.statuses)
        backend.create(wep("before-kill"))
        mirror.until(lambda: ("WorkloadEndpoint", "default", "before-kill") in mirror.state)
        etcd.kill()
        mirror.until(lambda: "resync" in mirror.statuses)
        etcd.start()
        # Another client writes right after the restart, racing the syncer's reconnect.
        backend.delete(WorkloadEndpoint, "pod-3", "default")
        pod4 = backend.get(WorkloadEndpoint, "pod-4", "default")
        pod4.metadata.labels["v"] = "2"
        backend.update(pod4)
        backend.create(wep("after-restart"))
        mirror.until(lambda: mirror.statuses.count("in-sync") >= 2, timeout=20)
        backend.create(wep("after-resync"))
        mirror.until(lambda: ("WorkloadEndpoint", "default", "after-resync") in mirror.state, timeout=20)
        assert mirror.state == etcd_state(writer)
        names = [e.name for e in mirror.events]
        # Unchanged pods were delivered exactly once, across the crash.
        assert all(names.count(f"pod-{i}") == 1 for i in (0, 1, 2, 5, 6, 7, 8, 9))
        assert names.count("pod-4") == 2 and names.count("pod-3") == 2  # put, then update / delete
    finally:
        syncer.stop()
        kv.close()
        writer.close()
        etcd.stop()
    assert syncer.error is None
