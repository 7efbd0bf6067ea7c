"""The Syncer on a three-member etcd through a leader kill and a member restart: it resumes its
watch on another member, delivers every change once in order, and ends equal to a clean list; a
member behind the revision already seen is not resumed on, the Syncer re-lists instead."""

from __future__ import annotations

import threading
import time

import pytest

from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.resources import KVBackend, resource_key
from felixpy.resources import WorkloadEndpoint
from tests.fixtures.etcd_cluster import EtcdCluster
from tests.integration.test_syncer import Mirror, etcd_state, wep

pytestmark = pytest.mark.integration


def _writes(kv: EtcdKV, log: list[tuple[str, str, int]], stop: threading.Event, errors: list[str]) -> None:
    try:
        _write_pods(kv, log, stop)
    except Exception as exc:  # reported by the test, never lost in a thread
        errors.append(f"{type(exc).__name__}: {exc}")


def _write_pods(kv: EtcdKV, log: list[tuple[str, str, int]], stop: threading.Event) -> None:
    """Create, update and delete pods one after another, recording (type, name, revision)."""
    backend = KVBackend(kv)
    i = 0
    while not stop.is_set() and i < 400:
        name = f"w-{i}"
        obj = backend.create(wep(name))
        log.append(("put", name, int(obj.metadata.resource_version or 0)))
        if i % 3 == 1:
            obj.metadata.labels = {"v": "2"}
            obj = backend.update(obj)
            log.append(("put", name, int(obj.metadata.resource_version or 0)))
        if i % 3 == 2:
            rev = kv.delete(
                resource_key(WorkloadEndpoint, name, "default"), int(obj.metadata.resource_version or 0)
            )
            log.append(("delete", name, rev))
        i += 1
        time.sleep(0.01)


def test_syncer_through_a_leader_kill_and_a_member_restart(
    etcd_cluster: EtcdCluster, cluster_kv: EtcdKV
) -> None:
    mirror = Mirror()
    backend = KVBackend(cluster_kv)
    for i in range(20):
        backend.create(wep(f"pod-{i}"))
    reader = etcd_cluster.kv()
    syncer = mirror.syncer(reader)
    written: list[tuple[str, str, int]] = []
    stop = threading.Event()
    errors: list[str] = []
    writer = threading.Thread(target=_writes, args=(cluster_kv, written, stop, errors), daemon=True)
    try:
        syncer.start()
        mirror.until(lambda: "in-sync" in mirror.statuses)
        snapshot = len(mirror.events)
        writer.start()
        time.sleep(0.5)
        leader = etcd_cluster.leader()
        etcd_cluster.kill(leader)
        time.sleep(1.0)
        etcd_cluster.start(leader)
        time.sleep(0.5)
        watch = syncer._watch._inner  # the EtcdWatch under the resource watch
        assert watch._session is not None
        serving = next(
            i for i, m in enumerate(etcd_cluster.members) if m.client_port == watch._session.endpoint.port
        )
        etcd_cluster.stop(serving)  # a graceful member restart under the watch
        time.sleep(0.5)
        etcd_cluster.start(serving)
        time.sleep(0.5)
        during = len(written)
        stop.set()
        writer.join(30)
        assert errors == [], f"a write failed during the faults: {errors}"
        assert during > 20, "the writer was not writing through the faults"
        last = backend.create(wep("last"))
        mirror.until(lambda: ("WorkloadEndpoint", "default", "last") in mirror.state, timeout=30)
        assert mirror.state == etcd_state(cluster_kv), "the mirror differs from a clean list"
        got = [(e.type, e.name, e.revision) for e in mirror.events[snapshot:]]
        assert got == [*written, ("put", "last", int(last.metadata.resource_version or 0))], (
            "an event was lost, repeated or reordered"
        )
        assert syncer.resyncs == 0, "the watch resumed on another member without a re-list"
        assert watch.resumes >= 1, "the watch never moved: the faults did not reach it"
    finally:
        stop.set()
        syncer.stop()
        reader.close()
    assert syncer.error is None


def test_syncer_re_lists_when_the_next_member_is_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Endpoint B is an etcd restored from an old backup: when A dies, the watch must not resume
    on B; the Syncer re-lists from B instead and ends equal to a clean list of B."""
    from tests.fixtures.etcd import running_etcd

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_etcd(tmp_path / "a") as a, running_etcd(tmp_path / "b") as b:
        old, new = b.kv(), a.kv()
        KVBackend(old).create(wep("from-backup"))
        for i in range(20):
            KVBackend(new).create(wep(f"pod-{i}"))
        mirror = Mirror()
        kv = EtcdKV(f"{a.endpoints},{b.endpoints}", timeout=1.0)
        syncer = mirror.syncer(kv)
        try:
            syncer.start()
            mirror.until(lambda: "in-sync" in mirror.statuses)
            assert len(mirror.state) == 20
            a.kill()
            mirror.until(lambda: mirror.statuses.count("in-sync") >= 2, timeout=30)
            assert mirror.state == etcd_state(old), "the Syncer did not end equal to a clean list of B"
            assert syncer.resyncs >= 1
        finally:
            syncer.stop()
            kv.close()
            old.close()
            new.close()
        assert syncer.error is None
