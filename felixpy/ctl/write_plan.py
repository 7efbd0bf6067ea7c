"""What a felixctl file verb will write to etcd, checked against etcd's limits before any write.

`plan` reads each resource's key once and turns every document into one `Write`: a create, a
compare-and-swap update or a compare-and-swap delete of one key, with the bytes it stores and
the value it replaces (kept for a rollback). `check_sizes` refuses the whole batch when one
document alone could never be written (larger than etcd's ``--max-request-bytes``); `chunks`
cuts the writes into transactions etcd accepts (at most ``--max-txn-ops`` operations and
``--max-request-bytes`` each). One chunk = one atomic transaction; more = validate-then-write
with rollback (`felixpy.ctl.batch`).
"""

from __future__ import annotations

import datetime
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from felixpy.ctl.limits import Limits
from felixpy.datastore.kv import KV, KeyValue, TxnOp
from felixpy.datastore.resources import decode, encode, kind_prefix, resource_key
from felixpy.resources.base import Resource

# What one operation costs in etcd's request beyond its key and value (compare + op framing);
# the key counts twice (the compare names it too). Generous, so a planned txn is never refused.
OP_OVERHEAD = 64
TXN_OVERHEAD = 1024
PREFETCH_AT = 32  # documents of one kind from which its keys are read with one list


class PlanError(Exception):
    """A document that cannot be written as asked (exists, missing, stale, too large)."""


@dataclass(frozen=True)
class Write:
    index: int  # document number, from 1
    label: str  # "IPPool 'pool-a'"
    op: Literal["create", "update", "delete"]
    key: str
    value: bytes  # what is stored (b"" for a delete)
    revision: int | None  # the CAS revision (update, delete)
    previous: KeyValue | None  # what was there before: what a rollback puts back

    @property
    def size(self) -> int:
        return request_size(self.key, self.value)

    def txn_op(self) -> TxnOp:
        return TxnOp(self.op, self.key, self.value, self.revision)


def request_size(key: str, value: bytes) -> int:
    return 2 * len(key.encode()) + len(value) + OP_OVERHEAD


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_value(obj: Resource, current: Resource | None) -> tuple[str, bytes]:
    """(key, bytes) as KVBackend stores ``obj``: uid and creationTimestamp kept from ``current`` or new."""
    data = obj.to_dict()
    meta = data.setdefault("metadata", {})
    old = current.metadata if current is not None else None
    meta.setdefault("uid", (old.uid if old else None) or str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", (old.creation_timestamp if old else None) or _now())
    return encode(type(obj).model_validate(data))


def plan(kv: KV, objs: list[Resource], verb: str, *, skip_missing: bool = False) -> list[Write]:
    """One Write per key (a delete of a missing one is dropped with ``skip_missing``).

    A key named twice is written once, with its last document, as writing them in turn would
    leave it (etcd refuses two operations on one key in a transaction).
    """
    by_key: dict[str, Write] = {}
    stored = prefetch(kv, objs)
    for index, obj in enumerate(objs, start=1):
        kind = type(obj)
        where = f"{obj.namespace}/" if kind.NAMESPACED and obj.namespace else ""
        label = f"{obj.KIND} '{where}{obj.name}'"
        key = resource_key(kind, obj.name, obj.namespace)
        earlier = by_key.get(key)
        if earlier is not None:
            if verb != "delete":
                by_key[key] = _again(earlier, index, obj)
            continue
        found = stored[key] if key in stored else kv.get(key)
        current = decode(kind, found.value, found.mod_revision) if found is not None else None
        wanted = obj.metadata.resource_version
        if verb == "delete":
            if found is None:
                if skip_missing:
                    continue
                raise PlanError(f"document {index}: resource does not exist: {label}")
            by_key[key] = Write(index, label, "delete", key, b"", found.mod_revision, found)
            continue
        if verb == "create" and found is not None:
            if skip_missing:  # create --skip-exists
                continue
            raise PlanError(f"document {index}: resource already exists: {label}")
        if verb == "replace" and found is None:
            raise PlanError(f"document {index}: resource does not exist: {label}")
        if verb == "replace" and found is not None and wanted and wanted != str(found.mod_revision):
            raise PlanError(
                f"document {index}: update conflict: {label} was modified since resourceVersion "
                f"{wanted} was read (now {found.mod_revision}); get it again and retry"
            )
        _, value = stored_value(obj, current)
        if found is None:
            by_key[key] = Write(index, label, "create", key, value, None, None)
        else:
            by_key[key] = Write(index, label, "update", key, value, found.mod_revision, found)
    return list(by_key.values())


def prefetch(kv: KV, objs: list[Resource]) -> dict[str, KeyValue | None]:
    """The stored values of the kinds with many documents in the batch, read with one list each
    (10,000 policies: one range read instead of 10,000); the other keys are read one by one."""
    counts = Counter(type(o) for o in objs)
    out: dict[str, KeyValue | None] = {}
    for kind, count in counts.items():
        if count < PREFETCH_AT:
            continue
        for o in objs:
            if type(o) is kind:
                out[resource_key(kind, o.name, o.namespace)] = None
        for item in kv.list(kind_prefix(kind))[0]:
            if item.key in out:
                out[item.key] = item
    return out


def _again(earlier: Write, index: int, obj: Resource) -> Write:
    """``earlier``'s key written with a later document's content (same operation and CAS revision)."""
    kind = type(obj)
    current = (
        decode(kind, earlier.previous.value, earlier.previous.mod_revision) if earlier.previous else None
    )
    _, value = stored_value(obj, current)
    return Write(index, earlier.label, earlier.op, earlier.key, value, earlier.revision, earlier.previous)


def check_sizes(writes: list[Write], limits: Limits) -> None:
    """Refuse the batch if any one document is larger than one etcd request may be."""
    room = limits.etcd_max_request_bytes - TXN_OVERHEAD
    for w in writes:
        if w.size > room:
            raise PlanError(
                f"document {w.index}: {w.label} is {w.size:,} bytes as stored in etcd; etcd accepts at most "
                f"{limits.etcd_max_request_bytes:,} bytes in one request (its --max-request-bytes; tell "
                "felixctl another value with --etcd-max-request-bytes)"
            )


def chunks(writes: list[Write], limits: Limits) -> list[list[Write]]:
    """Consecutive groups of writes, each within etcd's operation count and request size."""
    room = limits.etcd_max_request_bytes - TXN_OVERHEAD
    groups: list[list[Write]] = []
    current: list[Write] = []
    used = 0
    for w in writes:
        if current and (len(current) >= limits.etcd_max_txn_ops or used + w.size > room):
            groups.append(current)
            current, used = [], 0
        current.append(w)
        used += w.size
    if current:
        groups.append(current)
    return groups
