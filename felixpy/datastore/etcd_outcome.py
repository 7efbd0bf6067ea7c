"""Did a write whose answer was lost apply? Decided from the key's history, never guessed.

When a write times out, or the member carrying it dies, etcd may or may not have applied it
(the proposal can still commit through the new leader). Retrying blindly could apply it twice;
giving up could lose it. So before any retry, `EtcdKV` asks this module, which reads the
history of one key of the write at past revisions (``read_at(key, revision)``):

- ``floor``: a revision the client had already seen before sending the write; the write, if
  it applied, applied at some revision X in (floor, now].
- ``now``: the store revision from a linearizable read made after the failure. A linearizable
  read is served only once the current leader has committed an entry of its own term, so any
  proposal of the lost write is by then either committed (visible at X ≤ now) or dropped for
  good (Raft: an entry a new leader does not hold can never commit).
- The write applied at X iff every effect is visible at X: each put's key has mod revision X
  and our value; each delete's key is absent at X and present at X-1. One transaction per
  revision, so a match is ours (another client writing byte-identical values at the same
  revision would mean our compare-and-swap failed; for IPAM that is the same allocation).

The key searched (the anchor) is a compare-and-swap update when the write has one: then
only the first change after the compared revision can be ours, and "the key still has mod
revision E" is monotonic in the revision, so a binary search finds it in log2(now-E) reads.
A run where the anchor key is absent is not monotonic (created and deleted again), so it is
scanned revision by revision, at most ``scan_limit`` reads; past that, or when the history
has been compacted, the outcome is reported unknown (`OutcomeUnknown`), never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from felixpy.datastore.errors import Unavailable
from felixpy.datastore.kv import TxnOp

# (mod_revision, value) of a key at a revision, or None when absent then.
ReadAt = Callable[[str, int], "tuple[int, bytes] | None"]
SCAN_LIMIT = 4096


class OutcomeUnknown(Unavailable):
    """The lost write's outcome cannot be decided from the history that remains."""


@dataclass(frozen=True, slots=True)
class Effect:
    """What one key looks like right after the write. ``value`` None = deleted.
    ``after``: the write compared the key's mod revision with this one (CAS update/delete)."""

    key: str
    value: bytes | None
    after: int | None = None


def effects_of(ops: Sequence[TxnOp]) -> list[Effect]:
    out = []
    for op in ops:
        after = op.revision if op.op in ("update", "delete") else None
        out.append(Effect(op.key, None if op.op == "delete" else op.value, after))
    return out


def resolve(
    effects: Sequence[Effect], *, floor: int, now: int, read_at: ReadAt, scan_limit: int = SCAN_LIMIT
) -> int | None:
    """The revision at which the write applied, or None when it did not (see the module doc)."""
    if not effects or now <= floor:
        return None
    anchor = next((e for e in effects if e.after is not None), effects[0])
    start = min(anchor.after, floor) if anchor.after is not None else floor
    for x in _changes(anchor.key, start, now, read_at, scan_limit):
        if x > floor and all(_visible(e, x, read_at) for e in effects):
            return x
        if anchor.after is not None:
            return None  # a CAS write can only be the first change after the compared revision
    return None


def _visible(e: Effect, x: int, read_at: ReadAt) -> bool:
    got = read_at(e.key, x)
    if e.value is not None:
        return got is not None and got[0] == x and got[1] == e.value
    return got is None and read_at(e.key, x - 1) is not None


def _changes(key: str, lo: int, hi: int, read_at: ReadAt, scan_limit: int) -> Iterator[int]:
    """Every revision in (lo, hi] at which ``key`` changed (put or delete), in order."""
    pos, state = lo, read_at(key, lo)
    scanned = 0
    while pos < hi:
        if state is None:  # absent: not monotonic, scan
            scanned += 1
            if scanned > scan_limit:
                raise OutcomeUnknown(f"etcd: write outcome unknown: {key} changed too often to scan")
            pos += 1
            nxt = read_at(key, pos)
            if nxt is not None:
                state = nxt
                yield pos
            continue
        mod = state[0]
        first = _first_change(key, pos, hi, mod, read_at)
        if first is None:
            return
        pos, state = first, read_at(key, first)
        yield pos


def _first_change(key: str, lo: int, hi: int, mod: int, read_at: ReadAt) -> int | None:
    """Smallest r in (lo, hi] where ``key`` no longer has mod revision ``mod`` (monotonic)."""

    def same(r: int) -> bool:
        got = read_at(key, r)
        return got is not None and got[0] == mod

    if same(hi):
        return None
    a, b = lo, hi  # same(a) holds, same(b) does not
    while b - a > 1:
        mid = (a + b) // 2
        if same(mid):
            a = mid
        else:
            b = mid
    return b
