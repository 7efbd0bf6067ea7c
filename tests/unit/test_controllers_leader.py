"""Leader election: the pure record decision, and two electors on one in-memory Lease with CAS."""

from __future__ import annotations

from dataclasses import replace

import pytest

from felixpy.controllers.leader import LeaderElector, LeaseRecord, next_record
from felixpy.datastore.errors import Conflict


class MemoryLease:
    """One Lease with resourceVersion compare-and-swap, as the API server keeps it."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.rv = 0
        self.fail = False

    def get(self) -> tuple[LeaseRecord, str] | None:
        if self.fail:
            raise OSError("API server unreachable")
        return None if self.record is None else (self.record, str(self.rv))

    def create(self, record: LeaseRecord) -> str:
        if self.record is not None:
            raise Conflict("exists")
        self.record, self.rv = record, self.rv + 1
        return str(self.rv)

    def update(self, record: LeaseRecord, resource_version: str) -> str:
        if resource_version != str(self.rv):
            raise Conflict("stale")
        self.record, self.rv = record, self.rv + 1
        return str(self.rv)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def electors(lease: MemoryLease, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    kw = dict(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0, clock=clock)
    return LeaderElector(lease, identity="a", **kw), LeaderElector(lease, identity="b", **kw)  # type: ignore[arg-type]


def test_next_record_table() -> None:
    held = LeaseRecord("other", 15, "t0", "t0", 3)
    assert next_record(None, me="me", observed_for=0, duration_s=15, now_text="t1") == LeaseRecord(
        "me", 15, "t1", "t1", 0
    )
    assert next_record(held, me="me", observed_for=14.9, duration_s=15, now_text="t1") is None
    taken = next_record(held, me="me", observed_for=15.0, duration_s=15, now_text="t1")
    assert taken == LeaseRecord("me", 15, "t1", "t1", 4), "expired: taken over, one more transition"
    mine = replace(held, holder="me")
    assert next_record(mine, me="me", observed_for=0, duration_s=15, now_text="t2") == replace(
        mine, renew_time="t2"
    )
    released = replace(held, holder="")
    assert next_record(released, me="me", observed_for=0, duration_s=15, now_text="t1") == LeaseRecord(
        "me", 15, "t1", "t1", 3
    )


def test_only_one_leader_and_takeover_after_the_lease_duration() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = electors(lease, clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    for _ in range(20):  # a renews every retry period: b never gets it
        clock.t += 2
        assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    # a dies (no more renewals): b waits the lease duration from when it last saw a change.
    seen = clock.t
    while clock.t - seen < 15:
        assert not b.try_acquire_or_renew()
        clock.t += 2
    assert b.try_acquire_or_renew() and lease.record is not None and lease.record.holder == "b"
    assert lease.record.transitions == 1
    assert not a.is_leader(), "a's last renewal is older than its renew deadline"


def test_leader_that_cannot_renew_stops_acting_before_the_lease_expires() -> None:
    lease, clock = MemoryLease(), Clock()
    a, _ = electors(lease, clock)
    assert a.try_acquire_or_renew()
    lease.fail = True
    clock.t += 9
    assert a.try_acquire_or_renew(), "inside the renew deadline it still counts itself leader"
    clock.t += 1.5
    assert not a.try_acquire_or_renew() and not a.is_leader()


def test_release_hands_over_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = electors(lease, clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader() and b.try_acquire_or_renew()


def test_bad_timings_refused() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(MemoryLease(), identity="x", lease_duration=5, renew_deadline=10)
