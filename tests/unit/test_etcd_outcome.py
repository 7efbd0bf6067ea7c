"""Deciding whether a write whose answer was lost applied, from a key history (pure)."""

from __future__ import annotations

import random

import pytest

from felixpy.datastore.etcd_outcome import Effect, OutcomeUnknown, effects_of, resolve
from felixpy.datastore.kv import TxnOp


class History:
    """An etcd-like revision history: one transaction per revision, each touching some keys."""

    def __init__(self) -> None:
        self.rev = 1
        self.events: list[tuple[int, str, bytes | None]] = []
        self.reads = 0

    def commit(self, **writes: bytes | None) -> int:
        self.rev += 1
        for key, value in writes.items():
            self.events.append((self.rev, key, value))
        return self.rev

    def read_at(self, key: str, revision: int) -> tuple[int, bytes] | None:
        self.reads += 1
        last = None
        for rev, k, value in self.events:
            if k == key and rev <= revision:
                last = None if value is None else (rev, value)
        return last


def brute_force(effects: list[Effect], floor: int, now: int, h: History) -> int | None:
    """The reference: check every revision; a CAS write can only be the first change after its compare."""

    def visible(e: Effect, x: int) -> bool:
        got = h.read_at(e.key, x)
        if e.value is not None:
            return got is not None and got == (x, e.value)
        return got is None and h.read_at(e.key, x - 1) is not None

    cas = [e for e in effects if e.after is not None]
    for x in range(floor + 1, now + 1):
        if cas and any(h.read_at(c.key, x - 1) != h.read_at(c.key, c.after) for c in cas[:1]):
            return None
        if all(visible(e, x) for e in effects):
            return x
    return None


def test_a_cas_update_applied_among_other_writes_is_found_with_a_binary_search() -> None:
    h = History()
    e = h.commit(k=b"v0")
    floor = h.rev
    for i in range(200):
        h.commit(other=str(i).encode())
    ours = h.commit(k=b"mine")
    for i in range(200):
        h.commit(k=str(i).encode())
    h.reads = 0
    assert resolve([Effect("k", b"mine", e)], floor=floor, now=h.rev, read_at=h.read_at) == ours
    assert h.reads < 40, "a binary search, not a scan"


def test_a_cas_update_beaten_by_another_writer_did_not_apply_even_if_our_value_shows_later() -> None:
    h = History()
    e = h.commit(k=b"v0")
    floor = h.rev
    h.commit(k=b"theirs")
    h.commit(k=b"mine")  # someone else later wrote the same bytes: not our CAS write
    assert resolve([Effect("k", b"mine", e)], floor=floor, now=h.rev, read_at=h.read_at) is None


def test_a_write_that_never_reached_the_log_did_not_apply() -> None:
    h = History()
    h.commit(k=b"v0")
    floor = h.rev
    assert resolve([Effect("k", b"v1")], floor=floor, now=h.rev, read_at=h.read_at) is None
    h.commit(other=b"x")
    assert resolve([Effect("k", b"v1")], floor=floor, now=h.rev, read_at=h.read_at) is None


def test_a_create_is_found_behind_another_writers_create_and_delete() -> None:
    h = History()
    floor = h.rev
    h.commit(k=b"theirs")
    h.commit(k=None)
    ours = h.commit(k=b"mine", j=b"also")
    h.commit(k=None)
    effects = effects_of([TxnOp("create", "k", b"mine"), TxnOp("create", "j", b"also")])
    assert resolve(effects, floor=floor, now=h.rev, read_at=h.read_at) == ours


def test_a_transaction_applied_only_if_every_key_shows_it_at_one_revision() -> None:
    h = History()
    floor = h.rev
    h.commit(k=b"mine")
    h.commit(j=b"also")  # same values, different revisions: not one transaction
    effects = effects_of([TxnOp("create", "k", b"mine"), TxnOp("create", "j", b"also")])
    assert resolve(effects, floor=floor, now=h.rev, read_at=h.read_at) is None


def test_a_cas_delete_is_found() -> None:
    h = History()
    e = h.commit(k=b"v0")
    floor = h.rev
    ours = h.commit(k=None)
    h.commit(k=b"recreated")
    assert (
        resolve(effects_of([TxnOp("delete", "k", revision=e)]), floor=floor, now=h.rev, read_at=h.read_at)
        == ours
    )


def test_a_history_too_busy_to_scan_is_reported_unknown_never_guessed() -> None:
    h = History()
    floor = h.rev
    for i in range(50):
        h.commit(other=str(i).encode())
    with pytest.raises(OutcomeUnknown):
        resolve([Effect("k", b"mine")], floor=floor, now=h.rev, read_at=h.read_at, scan_limit=10)


@pytest.mark.parametrize("seed", range(150))
def test_agrees_with_the_brute_force_reference_on_random_histories(seed: int) -> None:
    rnd = random.Random(seed)
    h = History()
    keys = ["a", "b", "c"]
    for _ in range(rnd.randint(0, 5)):
        h.commit(**{rnd.choice(keys): rnd.choice([b"1", b"2", None])})
    floor = h.rev
    cas_key = rnd.choice(keys)
    before = h.read_at(cas_key, floor)
    use_cas = before is not None and rnd.random() < 0.5
    effects = [
        Effect(cas_key, rnd.choice([b"1", b"2", None]), before[0] if use_cas and before else None),
        *[Effect(k, rnd.choice([b"1", b"2"])) for k in keys if k != cas_key and rnd.random() < 0.3],
    ]
    for _ in range(rnd.randint(0, 25)):
        if rnd.random() < 0.2:  # maybe our write, maybe a look-alike
            h.commit(**{e.key: e.value for e in effects})
        else:
            h.commit(**{rnd.choice(keys): rnd.choice([b"1", b"2", None]) for _ in range(rnd.randint(1, 2))})
    got = resolve(effects, floor=floor, now=h.rev, read_at=h.read_at)
    assert got == brute_force(effects, floor, h.rev, h)
