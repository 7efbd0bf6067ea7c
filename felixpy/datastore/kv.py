"""The raw key/value layer the rest of felixpy stores through.

Keys are str, values bytes, and every value carries its etcd mod revision, which is
the compare-and-swap token. `felixpy.datastore.etcd.EtcdKV` implements this over etcd v3;
IPAM and the resource Backend are written against this protocol only.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change to one key. For deletes, ``value`` is b"" and ``prev_value`` may hold the old value."""

    type: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int
    prev_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One write inside an atomic multi-key transaction.

    op="create": key must not exist.   op="update": key's mod revision must equal ``revision``.
    op="put": unconditional write.     op="delete": key must exist with ``revision`` (None = any).
    """

    op: Literal["create", "update", "put", "delete"]
    key: str
    value: bytes = b""
    revision: int | None = None


class KV(Protocol):
    def get(self, key: str) -> KeyValue | None: ...

    def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        """All keys under ``prefix`` (sorted by key) and the store revision they were read at."""
        ...

    def create(self, key: str, value: bytes) -> int:
        """Write only if absent; returns the new mod revision. Raises AlreadyExists."""
        ...

    def update(self, key: str, value: bytes, revision: int) -> int:
        """Write only if the key's mod revision is ``revision``. Raises Conflict, or NotFound if absent."""
        ...

    def put(self, key: str, value: bytes) -> int:
        """Unconditional write; returns the new mod revision."""
        ...

    def delete(self, key: str, revision: int | None = None) -> int:
        """Delete (CAS on ``revision`` when given). Raises NotFound or Conflict."""
        ...

    def txn(self, ops: Sequence[TxnOp]) -> int:
        """All-or-nothing: every condition holds and every write happens, or Conflict is raised."""
        ...

    def watch(self, prefix: str, start_revision: int) -> Iterator[builtins.list[WatchEvent]]:
        """Batches of events under ``prefix`` from ``start_revision`` on, in revision order.

        Raises Compacted when ``start_revision`` is gone. Ends (StopIteration) only when
        ``close()`` was called; connection loss raises Unavailable.
        """
        ...

    def revision(self) -> int:
        """The store's current revision."""
        ...

    def close(self) -> None: ...
