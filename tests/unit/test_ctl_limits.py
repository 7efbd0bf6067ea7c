"""The pure parts of felixctl's bounds (issue 12): input decoding and limits, document shape, the
split of a batch into etcd transactions, and what a rollback writes back."""

from __future__ import annotations

import argparse
import time

import pytest

from felixpy.ctl.batch import undo_ops
from felixpy.ctl.limits import LimitError, Limits, decode_text
from felixpy.ctl.write_plan import OP_OVERHEAD, TXN_OVERHEAD, PlanError, Write, check_sizes, chunks
from felixpy.datastore.kv import KeyValue, TxnOp
from felixpy.resources.base import ResourceError
from felixpy.resources.parse import load_yaml, parse_documents
from felixpy.resources.shape import MAX_DEPTH, check_shape


def ns(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_limits_flag_beats_env_beats_default() -> None:
    assert Limits.from_args(ns(), {}) == Limits(64 * 1024 * 1024, 10_000, 1_572_864, 128)
    env = {"FELIXCTL_MAX_DOCUMENTS": "50", "FELIXCTL_ETCD_MAX_TXN_OPS": "16"}
    limits = Limits.from_args(ns(max_documents="7"), env)
    assert (limits.max_documents, limits.etcd_max_txn_ops) == (7, 16)
    bad = r"^FELIXCTL_ETCD_MAX_REQUEST_BYTES: must be a positive integer \(got -1\)$"
    with pytest.raises(LimitError, match=bad):
        Limits.from_args(ns(), {"FELIXCTL_ETCD_MAX_REQUEST_BYTES": "-1"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a: b\x00", "f is binary, not YAML or JSON (a NUL byte at offset 4)"),
        (b"a: \xc3\x28", "f is not UTF-8 text (byte 0xc3 at offset 3)"),
        (b"a: \xed\xa0\x80", "f is not UTF-8 text (byte 0xed at offset 3)"),  # a UTF-16 surrogate
    ],
)
def test_decode_text_names_the_bad_byte(data: bytes, message: str) -> None:
    with pytest.raises(LimitError) as info:
        decode_text(data, "f")
    assert str(info.value) == message


def test_decode_text_accepts_utf8_and_drops_a_bom() -> None:
    assert decode_text("\ufeffname: café".encode(), "f") == "name: café"


def test_shape_depth_limit_is_exact() -> None:
    ok: list[object] = []
    inner = ok
    for _ in range(MAX_DEPTH - 1):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    check_shape(ok, max_nodes=1000)
    inner.append([])
    with pytest.raises(ResourceError, match="nested more than 64 levels deep"):
        check_shape(ok, max_nodes=1000)


def test_shape_measures_shared_parts_once_and_refuses_the_expansion() -> None:
    level: list[object] = ["lol"] * 10
    for _ in range(30):  # 10 * 2**30 values once expanded, 40 objects in memory
        level = [level, level]
    started = time.monotonic()
    with pytest.raises(ResourceError, match="expands to more than 1,000,000 values"):
        check_shape(level, max_nodes=1_000_000)
    assert time.monotonic() - started < 1.0


def test_document_count_stops_decoding_at_the_limit() -> None:
    doc = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p{i}}}\n"
    doc += "spec: {{cidr: 10.{i}.0.0/16}}\n"
    text = "---\n".join(doc.format(i=i) for i in range(5))
    assert len(parse_documents(text, max_documents=5)) == 5
    with pytest.raises(ResourceError, match="more than 4 resources in one input"):
        parse_documents(text, max_documents=4)
    item = "- {{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {{name: p{i}}}}}"
    items = "\n".join(item.format(i=i) for i in range(3))
    with pytest.raises(ResourceError, match="more than 2 resources"):
        load_yaml(f"kind: List\nitems:\n{items}\n", max_documents=2)  # items of a List count one each


def write(index: int, size: int, op: str = "create") -> Write:
    value = b"x" * (size - 2 * len("/k/0000") - OP_OVERHEAD)
    previous = KeyValue(f"/k/{index:04d}", b"old", 7) if op != "create" else None
    return Write(index, f"IPPool 'p{index}'", op, f"/k/{index:04d}", value, 7 if previous else None, previous)  # type: ignore[arg-type]


def test_chunks_respect_operation_count_and_request_size() -> None:
    limits = Limits(etcd_max_txn_ops=3, etcd_max_request_bytes=TXN_OVERHEAD + 1000)
    writes = [write(i, 300) for i in range(1, 8)]
    assert [[w.index for w in g] for g in chunks(writes, limits)] == [[1, 2, 3], [4, 5, 6], [7]]
    writes = [write(1, 600), write(2, 600), write(3, 300), write(4, 100)]
    assert [[w.index for w in g] for g in chunks(writes, limits)] == [[1], [2, 3, 4]]
    assert len(chunks([write(i, 100) for i in range(1, 129)], Limits())) == 1  # etcd's defaults: one txn


def test_one_document_larger_than_a_request_refuses_the_batch() -> None:
    limits = Limits(etcd_max_request_bytes=TXN_OVERHEAD + 1000)
    check_sizes([write(1, 1000)], limits)
    with pytest.raises(PlanError, match=r"^document 2: IPPool 'p2' is 1,001 bytes as stored in etcd; etcd"):
        check_sizes([write(1, 10), write(2, 1001)], limits)


def test_undo_puts_back_what_each_operation_replaced() -> None:
    group = [write(1, 200, "create"), write(2, 200, "update"), write(3, 200, "delete")]
    assert undo_ops(group, 42) == [
        TxnOp("delete", "/k/0001", b"", 42),
        TxnOp("update", "/k/0002", b"old", 42),
        TxnOp("create", "/k/0003", b"old"),
    ]
