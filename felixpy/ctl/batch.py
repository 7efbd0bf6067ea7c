"""All-or-nothing writes for felixctl's file verbs (apply, create, replace, delete -f).

etcd: the planned writes (`felixpy.ctl.write_plan`) go in one transaction when they fit etcd's
limits — etcd applies all of it or none of it. A batch larger than one transaction is written
as consecutive transactions (validate-then-write), and if etcd refuses one, every transaction
already applied is undone by compare-and-swap: created keys deleted, updated keys given their
previous value back, deleted keys re-created. A key someone else changed meanwhile is left as
they made it and named in the message.

Kubernetes API (no multi-object transaction): resources are written one at a time through the
Backend and undone the same way on failure.

The outcome's ``how`` says which was done; felixctl prints it with any failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from felixpy.ctl.limits import Limits
from felixpy.ctl.write_plan import Write, chunks
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.datastore.kv import KV, TxnOp
from felixpy.resources.base import Resource

log = logging.getLogger(__name__)


class BatchError(Exception):
    """The batch was not written; the message says what was written and undone."""


class RaceError(BatchError):
    """A resource changed between planning and writing (one transaction: nothing written; retry)."""


@dataclass
class Outcome:
    written: int
    transactions: int

    @property
    def how(self) -> str:
        return (
            "in one etcd transaction"
            if self.transactions == 1
            else f"in {self.transactions} etcd transactions"
        )


def commit(kv: KV, writes: list[Write], limits: Limits) -> Outcome:
    """Write every planned write, or none: see the module docstring."""
    if not writes:
        return Outcome(0, 0)
    groups = chunks(writes, limits)
    if len(groups) == 1:
        _one_transaction(kv, writes)
        return Outcome(len(writes), 1)
    return _many_transactions(kv, groups)


def _one_transaction(kv: KV, writes: list[Write]) -> None:
    try:
        kv.txn([w.txn_op() for w in writes])
    except Conflict:
        raise RaceError(
            f"a resource of the batch changed while it was being written; nothing was written "
            f"(one etcd transaction of {len(writes)} resource(s))"
        ) from None
    except Unavailable as exc:
        raise BatchError(
            f"etcd did not answer the transaction of {len(writes)} resource(s), which it applies whole or "
            f"not at all; check with get before retrying: {exc}"
        ) from None
    except DatastoreError as exc:
        raise BatchError(
            f"etcd refused the write; nothing was written (one etcd transaction of "
            f"{len(writes)} resource(s)): {exc}"
        ) from None


@dataclass
class _Applied:
    groups: list[tuple[list[Write], int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(g) for g, _ in self.groups)


def _many_transactions(kv: KV, groups: list[list[Write]]) -> Outcome:
    applied = _Applied()
    for number, group in enumerate(groups, start=1):
        try:
            revision = kv.txn([w.txn_op() for w in group])
        except DatastoreError as exc:
            first, last = group[0].index, group[-1].index
            what = (
                f"validate-then-write in {len(groups)} etcd transactions (too many for one): "
                f"transaction {number} (documents {first}-{last}) failed: {_reason(exc)}"
            )
            raise BatchError(f"{what}; {_undo(kv, applied)}") from None
        applied.groups.append((group, revision))
        log.debug("transaction %d of %d written at revision %d", number, len(groups), revision)
    return Outcome(applied.count, len(groups))


def _reason(exc: DatastoreError) -> str:
    if isinstance(exc, Conflict):
        return "a resource changed while the batch was being written"
    return str(exc)


def undo_ops(group: list[Write], revision: int) -> list[TxnOp]:
    """The operations that put back what ``group`` (written at ``revision``) replaced."""
    ops = []
    for w in group:
        if w.op == "create":
            ops.append(TxnOp("delete", w.key, b"", revision))
        elif w.op == "update" and w.previous is not None:
            ops.append(TxnOp("update", w.key, w.previous.value, revision))
        elif w.previous is not None:
            ops.append(TxnOp("create", w.key, w.previous.value))
    return ops


def _undo(kv: KV, applied: _Applied) -> str:
    """Undo every applied transaction, newest first; a sentence saying how it went."""
    if not applied.count:
        return "nothing had been written"
    failed: list[str] = []
    for group, revision in reversed(applied.groups):
        ops = undo_ops(group, revision)
        try:
            kv.txn(ops)
            continue
        except DatastoreError:
            pass  # one key changed meanwhile (or etcd failed): undo key by key, as much as possible
        for w, op in zip(group, ops, strict=True):
            try:
                kv.txn([op])
            except DatastoreError as exc:
                failed.append(
                    f"{w.label} ({'changed by someone else since' if isinstance(exc, Conflict) else exc})"
                )
    if failed:
        return (
            f"rolled back {applied.count - len(failed)} of the {applied.count} resource(s) already written; "
            f"could not roll back: {', '.join(failed)}"
        )
    return f"the {applied.count} resource(s) already written were rolled back: nothing changed"


# --- Kubernetes API: one object at a time, undone through the Backend ---------------------------


@dataclass
class BackendStep:
    obj: Resource
    before: Resource | None  # the stored object this write replaces or deletes


def commit_backend(
    backend: Backend, steps: list[BackendStep], verb: str, write: Callable[[Resource], None]
) -> Outcome:
    """Write ``steps`` one by one with ``write``; on a failure undo the written ones, newest first."""
    done: list[BackendStep] = []
    for step in steps:
        try:
            write(step.obj)
        except (DatastoreError, ValueError) as exc:
            what = (
                f"validate-then-write, one resource at a time (the Kubernetes API has no multi-resource "
                f"transaction): {step.obj.KIND} '{step.obj.name}' failed: {exc}"
            )
            raise BatchError(f"{what}; {_undo_backend(backend, done, verb)}") from None
        done.append(step)
    return Outcome(len(done), 0)


def _undo_backend(backend: Backend, done: list[BackendStep], verb: str) -> str:
    if not done:
        return "nothing had been written"
    failed = []
    for step in reversed(done):
        obj, before = step.obj, step.before
        try:
            if verb == "delete" and before is not None:
                before.metadata.resource_version = None
                backend.create(before)
            elif before is None:
                backend.delete(type(obj), obj.name, obj.namespace)
            else:
                current = backend.get(type(obj), obj.name, obj.namespace)
                before.metadata.resource_version = current.metadata.resource_version
                backend.update(before)
        except (AlreadyExists, NotFound, Conflict, DatastoreError) as exc:
            failed.append(f"{obj.KIND} '{obj.name}' ({exc})")
    if failed:
        return (
            f"rolled back {len(done) - len(failed)} of {len(done)}; could not roll back: {', '.join(failed)}"
        )
    return f"the {len(done)} resource(s) already written were rolled back: nothing changed"
