"""`KubeKV`: the KV protocol (felixpy.datastore.kv) over Kubernetes custom resources, for IPAM.

IPAM is written against raw keys in Calico's etcd layout. In Kubernetes mode each key is one object of
the matching IPAM CRD (`crd.projectcalico.org/v1`), as Calico's Kubernetes datastore keeps them:

    /calico/ipam/v2/assignment/ipv4/block/<cidr>       → IPAMBlock      <cidr, '.' ':' '/' → '-'>
    /calico/ipam/v2/host/<node>/ipv4/block/<cidr>      → BlockAffinity  <node>-<cidr>
    /calico/ipam/v2/handle/<id>                        → IPAMHandle     <id>
    /calico/ipam/v2/config                             → IPAMConfig     default

The object's `spec` is the key's JSON value and the annotation `felixpy.io/key` holds the key itself;
a name that sanitising changed gets a short hash suffix so two keys never share an object.
The mod revision is `metadata.resourceVersion`, so create / update-if-revision / delete-if-revision
are the API server's own optimistic concurrency.

`txn` cannot be atomic here: Kubernetes has no multi-object transaction. IPAM relies on one in
four places (ipam/ipam.py, ipam/release.py): taking addresses writes the block and the handle; claiming
a block creates the block and its affinity; releasing writes the block and every handle it touches;
dropping an affinity deletes it and rewrites the block. KubeKV makes each of those safe without one:

- The writes are compare-and-swap each, in a fixed order (`write_rank`): records that *claim* first
  (a handle that grows, an affinity being created), then the block, whose CAS is the one that decides
  races between allocators, then records that *let go* (deletes, a handle that shrinks).
- On the first failure the writes already made are undone in reverse, each undo again a CAS on the
  revision this transaction wrote. A key someone else changed in between is left alone: an undo never
  overwrites another writer's work (an unconditional put back could free an address another client
  had just taken — handing it out twice).
- So a transaction cut short (crash, lost connection, an undo that lost its CAS) leaves only
  repairable states, never a double allocation nor an address no handle records: a handle counting
  more than its blocks hold (release_by_handle and `ipam check` clean it up), an affinity without its
  block (IPAM's `_repair_claim` recreates the block on the next claim), or a block already released
  whose handle or affinity still names it (released again as a no-op).

etcd gives every key of a transaction one mod revision and IPAM caches it as each key's CAS token;
here each object gets its own resourceVersion. `txn` returns the last one and remembers, per key, the
pair (returned revision → the key's own resourceVersion), which update/delete translate. Kubernetes
resourceVersions are unique across objects, so the alias never shadows a real revision of that key.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from felixpy.datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound
from felixpy.datastore.kubernetes import KubernetesBackend, error_for, iter_lines
from felixpy.datastore.kv import KeyValue, TxnOp, WatchEvent

GROUP_PATH = "/apis/crd.projectcalico.org/v1"
KEY_ANNOTATION = "felixpy.io/key"
WATCH_STREAM_S = 30
MAX_WATCH_STREAMS = 1_000_000  # bound on resumed streams over a watch's life (~1 year at 30 s)
IPAM_ROOT = "/calico/ipam/v2/"

# (key prefix, plural, kind); longest prefixes first.
_KINDS: tuple[tuple[str, str, str], ...] = (
    ("/calico/ipam/v2/assignment/", "ipamblocks", "IPAMBlock"),
    ("/calico/ipam/v2/host/", "blockaffinities", "BlockAffinity"),
    ("/calico/ipam/v2/handle/", "ipamhandles", "IPAMHandle"),
    ("/calico/ipam/v2/config", "ipamconfigs", "IPAMConfig"),
)
_UNSAFE = re.compile(r"[^a-z0-9.-]+")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def kind_of(key: str) -> tuple[str, str]:
    """(plural, kind) of the CRD that stores ``key``."""
    for prefix, plural, kind in _KINDS:
        if key.startswith(prefix):
            return plural, kind
    raise DatastoreError(f"key {key!r} has no Kubernetes form (only IPAM keys under {IPAM_ROOT})")


def object_name(key: str) -> str:
    """A DNS-1123 name for ``key``, unique per key: Calico's names where they are valid as they are."""
    if key == "/calico/ipam/v2/config":
        return "default"
    if "/block/" in key:
        name = _dashed(key.split("/block/")[-1])
        if "/host/" in key:
            name = key.split("/host/")[1].split("/")[0] + "-" + name
    else:
        name = key.rsplit("/", 1)[-1]
    if _DNS_NAME.fullmatch(name) and len(name) <= 253:
        return name
    clean = _UNSAFE.sub("-", name.lower()).strip("-.") or "x"
    return f"{clean[:240]}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _dashed(cidr: str) -> str:
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def _prefix_plurals(prefix: str) -> list[str]:
    plurals = [plural for p, plural, _ in _KINDS if p.startswith(prefix) or prefix.startswith(p)]
    if not plurals:
        kind_of(prefix)  # raises the explanatory error
    return plurals


def write_rank(op: TxnOp, before: KeyValue | None) -> int:
    """Where a write goes in a transaction: 0 before the block write, 1 the block, 2 after it.

    Records that claim (a handle that grows, an affinity being created) go first and records that
    let go (deletes, a handle that shrinks) go last, so a transaction cut short between two writes
    leaves a handle that counts too much or an affinity without its block, never the reverse.
    """
    plural, _ = kind_of(op.key)
    if plural == "ipamblocks":
        return 1
    if op.op == "delete":
        return 2
    if plural == "ipamhandles" and before is not None and _shrinks(before.value, op.value):
        return 2
    return 0


def _shrinks(old: bytes, new: bytes) -> bool:
    """True when the handle ``new`` holds fewer addresses than ``old`` in some block."""
    try:
        before = (json.loads(old) or {}).get("block") or {}
        after = (json.loads(new) or {}).get("block") or {}
    except (ValueError, AttributeError):
        return False
    return any(int(after.get(cidr, 0)) < int(n) for cidr, n in before.items())


class KubeKV:
    def __init__(self, backend: KubernetesBackend):
        self._b = backend
        # key -> (revision a txn reported, the key's own resourceVersion from that txn)
        self._aliases: dict[str, tuple[int, int]] = {}

    # -- helpers ----------------------------------------------------------------------------------

    def _path(self, key: str, *, named: bool = True) -> str:
        plural, _ = kind_of(key)
        return f"{GROUP_PATH}/{plural}/{object_name(key)}" if named else f"{GROUP_PATH}/{plural}"

    def _body(self, key: str, value: bytes, revision: int | None = None) -> dict[str, Any]:
        _, kind = kind_of(key)
        meta: dict[str, Any] = {"name": object_name(key)}
        meta["annotations"] = {KEY_ANNOTATION: key}
        if revision is not None:
            meta["resourceVersion"] = str(revision)
        return {
            "apiVersion": f"{GROUP_PATH.split('/', 2)[2]}",
            "kind": kind,
            "metadata": meta,
            "spec": _spec(value),
        }

    @staticmethod
    def _kv(obj: dict[str, Any]) -> KeyValue | None:
        meta = obj.get("metadata", {})
        key = (meta.get("annotations") or {}).get(KEY_ANNOTATION)
        if not key:
            return None
        return KeyValue(key, _value(obj.get("spec")), int(meta["resourceVersion"]))

    # -- KV protocol ------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        try:
            return self._kv(self._b._json("GET", self._path(key)))
        except NotFound:
            return None

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        out: list[KeyValue] = []
        revision = 0
        for plural in _prefix_plurals(prefix):
            page = self._b._json("GET", f"{GROUP_PATH}/{plural}")
            revision = max(revision, int(page["metadata"]["resourceVersion"]))
            out += [kv for kv in map(self._kv, page.get("items", [])) if kv and kv.key.startswith(prefix)]
        return sorted(out, key=lambda kv: kv.key), revision

    def create(self, key: str, value: bytes) -> int:
        obj = self._b._json("POST", self._path(key, named=False), body=self._body(key, value))
        return int(obj["metadata"]["resourceVersion"])

    def update(self, key: str, value: bytes, revision: int) -> int:
        revision = self._real(key, revision)
        obj = self._b._json("PUT", self._path(key), body=self._body(key, value, revision))
        return int(obj["metadata"]["resourceVersion"])

    def put(self, key: str, value: bytes) -> int:
        for _ in range(10):
            current = self.get(key)
            try:
                if current is None:
                    return self.create(key, value)
                return self.update(key, value, current.mod_revision)
            except (AlreadyExists, Conflict):
                continue
        raise Conflict(f"{key}: kept changing while being written")

    def delete(self, key: str, revision: int | None = None) -> int:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if revision is not None:
            body["preconditions"] = {"resourceVersion": str(self._real(key, revision))}
        obj = self._b._json("DELETE", self._path(key), body=body)
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)

    def txn(self, ops: Sequence[TxnOp]) -> int:
        """Ordered compare-and-swap writes, undone (by compare-and-swap) on the first failure.

        Returns the revision of the last write; the other keys written are remembered as aliases of
        that revision (see the module docstring), so etcd's "one revision per transaction" holds.
        """
        befores = [self.get(op.key) if op.op != "create" else None for op in ops]
        plan = sorted(zip(ops, befores, strict=True), key=lambda pair: write_rank(*pair))
        done: builtins.list[tuple[TxnOp, KeyValue | None, int]] = []
        try:
            for op, before in plan:
                done.append((op, before, self._apply(op)))
        except DatastoreError as err:
            self._rollback(done)
            if isinstance(err, AlreadyExists | Conflict | NotFound):
                raise Conflict(f"transaction failed at {op.op} {op.key}: {err}") from err
            raise
        revision = done[-1][2] if done else self.revision()
        for op, _, written in done:
            if op.op != "delete" and written != revision:
                self._aliases[op.key] = (revision, written)
        return revision

    def _real(self, key: str, revision: int) -> int:
        alias = self._aliases.get(key)
        return alias[1] if alias is not None and alias[0] == revision else revision

    def _apply(self, op: TxnOp) -> int:
        if op.op == "create":
            return self.create(op.key, op.value)
        if op.op == "update":
            assert op.revision is not None, "update needs a revision"
            return self.update(op.key, op.value, op.revision)
        if op.op == "put":
            return self.put(op.key, op.value)
        return self.delete(op.key, op.revision)

    def _rollback(self, done: builtins.list[tuple[TxnOp, KeyValue | None, int]]) -> None:
        """Undo in reverse, each step a CAS on the revision this transaction wrote: a key another
        writer has changed since is left as it is (never overwritten); see the module docstring."""
        for op, before, written in reversed(done):
            with contextlib.suppress(DatastoreError):
                if op.op == "delete" and before is not None:
                    self.create(op.key, before.value)
                elif before is None:
                    self.delete(op.key, written)
                elif op.op != "delete":
                    self.update(op.key, before.value, written)

    def watch(self, prefix: str, start_revision: int) -> Iterator[builtins.list[WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` on, one batch per event.

        One streaming watch per IPAM kind the prefix covers (in practice one: affinities or blocks).
        A stream the server ends is resumed from the last resourceVersion seen, and each end yields an
        empty batch so a consumer polling a stop flag between batches is never stuck. 410 Gone raises
        Compacted (re-list), as etcd's compaction does.
        """
        plurals = _prefix_plurals(prefix)
        if len(plurals) != 1:
            raise DatastoreError(f"watch {prefix!r}: spans several IPAM kinds; watch one of them")
        revision = start_revision - 1  # Kubernetes' watch starts after the given resourceVersion
        for _ in range(MAX_WATCH_STREAMS):
            for event in self._stream(plurals[0], revision):
                revision = max(revision, event.mod_revision)
                if event.key.startswith(prefix):
                    yield [event]
            yield []

    def _stream(self, plural: str, revision: int) -> Iterator[WatchEvent]:
        query = {"watch": "true", "resourceVersion": str(revision), "timeoutSeconds": str(WATCH_STREAM_S)}
        resp = self._b._request(
            "GET", f"{GROUP_PATH}/{plural}", query=query, timeout=(30.0, WATCH_STREAM_S + 30)
        )
        if resp.status >= 300:
            self._b._json_of(resp)
        for line in iter_lines(resp.response):
            event = json.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                code = int(obj.get("code") or 500)
                raise error_for(code, obj.get("message", ""), obj.get("reason", ""))
            kv = self._kv(obj)
            if kv is None:
                continue
            if event.get("type") == "DELETED":
                yield WatchEvent("delete", kv.key, b"", kv.mod_revision, prev_value=kv.value)
            elif event.get("type") in ("ADDED", "MODIFIED"):
                yield WatchEvent("put", kv.key, kv.value, kv.mod_revision)

    def revision(self) -> int:
        """The API's current resourceVersion: a one-item list's, of ipamblocks (a list the node agent's
        and the controllers' roles grant for IPAM anyway; any kind's list carries the same one)."""
        page = self._b._json("GET", f"{GROUP_PATH}/ipamblocks", query={"limit": 1})
        return int(page["metadata"]["resourceVersion"])

    def close(self) -> None:
        pass


def _spec(value: bytes) -> dict[str, Any]:
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    return {"felixpyRawValue": value.decode("utf-8", "surrogateescape")}


def _value(spec: dict[str, Any] | None) -> bytes:
    spec = spec or {}
    if set(spec) == {"felixpyRawValue"}:
        return str(spec["felixpyRawValue"]).encode("utf-8", "surrogateescape")
    return json.dumps(spec, separators=(",", ":"), sort_keys=True).encode()
