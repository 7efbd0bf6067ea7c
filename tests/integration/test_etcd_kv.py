"""EtcdKV against a real etcd: CAS semantics, transactions, lists and watches."""

from __future__ import annotations

import threading

import pytest

from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, NotFound
from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.kv import TxnOp, WatchEvent

pytestmark = pytest.mark.integration


def test_create_get_update_delete_roundtrip(etcd_kv: EtcdKV) -> None:
    rev1 = etcd_kv.create("/t/a", b"one")
    got = etcd_kv.get("/t/a")
    assert got is not None and got.value == b"one" and got.mod_revision == rev1 == got.create_revision
    rev2 = etcd_kv.update("/t/a", b"two", rev1)
    assert rev2 > rev1
    assert etcd_kv.get("/t/a").value == b"two"  # type: ignore[union-attr]
    etcd_kv.delete("/t/a", rev2)
    assert etcd_kv.get("/t/a") is None


def test_create_of_existing_key_raises_already_exists_and_keeps_value(etcd_kv: EtcdKV) -> None:
    etcd_kv.create("/t/a", b"first")
    with pytest.raises(AlreadyExists):
        etcd_kv.create("/t/a", b"second")
    assert etcd_kv.get("/t/a").value == b"first"  # type: ignore[union-attr]


def test_update_with_stale_revision_conflicts_and_missing_key_is_not_found(etcd_kv: EtcdKV) -> None:
    rev1 = etcd_kv.create("/t/a", b"v1")
    etcd_kv.update("/t/a", b"v2", rev1)
    with pytest.raises(Conflict):
        etcd_kv.update("/t/a", b"lost-race", rev1)
    assert etcd_kv.get("/t/a").value == b"v2"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        etcd_kv.update("/t/missing", b"x", 1)


def test_delete_cas_and_unconditional(etcd_kv: EtcdKV) -> None:
    rev1 = etcd_kv.create("/t/a", b"v1")
    rev2 = etcd_kv.put("/t/a", b"v2")
    with pytest.raises(Conflict):
        etcd_kv.delete("/t/a", rev1)
    assert etcd_kv.get("/t/a") is not None
    etcd_kv.delete("/t/a", rev2)
    with pytest.raises(NotFound):
        etcd_kv.delete("/t/a")
    etcd_kv.put("/t/b", b"x")
    etcd_kv.delete("/t/b")
    assert etcd_kv.get("/t/b") is None


def test_txn_is_all_or_nothing(etcd_kv: EtcdKV) -> None:
    rev_a = etcd_kv.create("/t/a", b"a1")
    etcd_kv.create("/t/b", b"b1")
    # One stale condition (create of existing /t/b) → nothing at all is written.
    with pytest.raises(Conflict):
        etcd_kv.txn(
            [
                TxnOp("update", "/t/a", b"a2", rev_a),
                TxnOp("create", "/t/b", b"b2"),
                TxnOp("put", "/t/c", b"c"),
            ]
        )
    assert etcd_kv.get("/t/a").value == b"a1"  # type: ignore[union-attr]
    assert etcd_kv.get("/t/c") is None
    rev = etcd_kv.txn(
        [TxnOp("update", "/t/a", b"a2", rev_a), TxnOp("delete", "/t/b"), TxnOp("create", "/t/c", b"c")]
    )
    a, c = etcd_kv.get("/t/a"), etcd_kv.get("/t/c")
    assert a is not None and c is not None and a.value == b"a2" and a.mod_revision == rev == c.mod_revision
    assert etcd_kv.get("/t/b") is None


def test_list_is_sorted_scoped_to_prefix_and_paged(etcd_kv: EtcdKV, monkeypatch: pytest.MonkeyPatch) -> None:
    import felixpy.datastore.etcd as etcd_mod

    monkeypatch.setattr(etcd_mod, "LIST_PAGE", 7)
    for i in reversed(range(30)):
        etcd_kv.put(f"/p/k{i:03d}", str(i).encode())
    etcd_kv.put("/p2/other", b"x")  # shares the text prefix "/p" but not "/p/"
    kvs, rev = etcd_kv.list("/p/")
    assert [kv.key for kv in kvs] == [f"/p/k{i:03d}" for i in range(30)]
    assert rev == etcd_kv.revision()
    # A later write is not in a list pinned at the earlier revision.
    etcd_kv.put("/p/k999", b"late")
    pinned, rev2 = etcd_kv.list("/p/", revision=rev)
    assert rev2 == rev and len(pinned) == 30


def _collect(kv: EtcdKV, prefix: str, start: int, count: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    w = kv.watch(prefix, start)
    try:
        for batch in w:
            out.extend(batch)
            if len(out) >= count:
                break
    finally:
        w.close()
    return out


def test_watch_delivers_puts_and_deletes_in_revision_order(etcd_kv: EtcdKV) -> None:
    start = etcd_kv.revision() + 1
    r1 = etcd_kv.put("/w/a", b"1")
    r2 = etcd_kv.put("/w/b", b"2")
    etcd_kv.put("/elsewhere", b"ignored")
    r3 = etcd_kv.delete("/w/a")
    events = _collect(etcd_kv, "/w/", start, 3)
    assert [(e.type, e.key, e.mod_revision) for e in events] == [
        ("put", "/w/a", r1),
        ("put", "/w/b", r2),
        ("delete", "/w/a", r3),
    ]
    assert events[2].prev_value == b"1"


def test_watch_sees_writes_made_while_it_is_blocked(etcd_kv: EtcdKV) -> None:
    start = etcd_kv.revision() + 1
    timer = threading.Timer(0.2, lambda: [etcd_kv.put(f"/w/{i}", b"x") for i in range(5)])
    timer.start()
    try:
        events = _collect(etcd_kv, "/w/", start, 5)
    finally:
        timer.join()
    assert [e.key for e in events] == [f"/w/{i}" for i in range(5)]


def test_watch_from_compacted_revision_raises_compacted(etcd_kv: EtcdKV) -> None:
    old = etcd_kv.put("/c/a", b"1")
    etcd_kv.put("/c/a", b"2")
    now = etcd_kv.put("/c/a", b"3")
    etcd_kv.compact(now)
    w = etcd_kv.watch("/c/", old)
    with pytest.raises(Compacted) as info:
        next(iter(w))
    assert info.value.compact_revision >= now


def test_close_from_another_thread_ends_a_blocked_watch(etcd_kv: EtcdKV) -> None:
    w = etcd_kv.watch("/idle/", etcd_kv.revision() + 1)
    threading.Timer(0.2, w.close).start()
    assert list(w) == []
