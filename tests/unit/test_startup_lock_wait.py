"""Start-up while the datastore is locked (`felixctl datastore migrate lock`): the agent waits, bounded,
logging "datastore locked, waiting", and writes nothing until the unlock (calico-node waits too)."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.resources.parse import parse_document
from felixpy.resources.stored import ClusterInformation
from felixpy.runtime import startup
from felixpy.runtime.settings import Settings


def info(ready: bool | None) -> ClusterInformation:
    spec = {} if ready is None else {"datastoreReady": ready}
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation",
           "metadata": {"name": "default"}, "spec": spec}  # fmt: skip
    res = parse_document(doc)
    assert isinstance(res, ClusterInformation)
    return res


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Backend:
    """ClusterInformation default: locked for the first `locked_reads` reads, then unlocked."""

    def __init__(self, locked_reads: int, *, present: bool = True) -> None:
        self.locked_reads = locked_reads
        self.present = present
        self.reads = 0

    def get(self, kind: Any, name: str) -> ClusterInformation:
        assert kind is ClusterInformation and name == "default"
        self.reads += 1
        if not self.present:
            raise NotFound("clusterinformations/default")
        return info(self.reads > self.locked_reads)


def test_unlocked_datastore_starts_at_once() -> None:
    clock = Clock()
    with capture_logs() as logs:
        assert startup.wait_until_unlocked(Backend(0), 60, clock=clock, sleep=clock.sleep) == 0
    assert clock.sleeps == [] and logs == []


@pytest.mark.parametrize("ready", [None, True])
def test_ready_unset_or_true_is_not_locked(ready: bool | None) -> None:
    class One:
        def get(self, kind: Any, name: str) -> ClusterInformation:
            return info(ready)

    assert not startup.datastore_locked(One())
    assert not startup.datastore_locked(Backend(0, present=False))


def test_locked_datastore_waits_with_backoff_then_starts() -> None:
    clock = Clock()
    backend = Backend(locked_reads=6)
    with capture_logs() as logs:
        waited = startup.wait_until_unlocked(backend, 3600, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [1, 2, 4, 8, 10, 10]  # doubling, capped at LOCK_POLL_MAX
    assert waited == 35 and backend.reads == 7
    waits = [e for e in logs if e["event"] == "datastore locked, waiting"]
    assert waits and waits[0]["log_level"] == "warning"
    assert "datastoreReady: false" in waits[0]["reason"]
    assert len(waits) <= 3  # once at first, then once per capped interval: not one line a second
    assert logs[-1]["event"] == "datastore unlocked, starting"


def test_wait_is_bounded_and_names_the_setting() -> None:
    clock = Clock()
    with pytest.raises(DatastoreError) as err:
        startup.wait_until_unlocked(Backend(10**9), 30, clock=clock, sleep=clock.sleep)
    assert clock.now == 30  # the last sleep is cut to the bound
    assert "datastore locked" in str(err.value) and "FELIXPY_DATASTORE_LOCK_WAIT=30s" in str(err.value)
    assert "felixctl datastore migrate unlock" in str(err.value)


def test_zero_limit_fails_at_once_when_locked() -> None:
    clock = Clock()
    with pytest.raises(DatastoreError):
        startup.wait_until_unlocked(Backend(1), 0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_lock_wait_setting() -> None:
    assert Settings.from_env({"NODENAME": "n"}).datastore_lock_wait == 3600
    two_minutes = Settings.from_env({"NODENAME": "n", "FELIXPY_DATASTORE_LOCK_WAIT": "2m"})
    assert two_minutes.datastore_lock_wait == 120
    with pytest.raises(ValueError, match="FELIXPY_DATASTORE_LOCK_WAIT: 'soon' is not a duration"):
        Settings.from_env({"NODENAME": "n", "FELIXPY_DATASTORE_LOCK_WAIT": "soon"})
    with pytest.raises(ValueError, match="datastore_lock_wait"):
        Settings.from_env({"NODENAME": "n", "FELIXPY_DATASTORE_LOCK_WAIT": "-1"})
