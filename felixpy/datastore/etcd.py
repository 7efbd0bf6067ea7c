"""`EtcdKV`: the KV protocol (kv.py) over etcd v3, through pyetcd's gRPC stubs.

We use `pyetcd` (etcd-sdk-python) for its generated protobuf messages and stubs and its
TLS credential loader, but drive the RPCs ourselves, because two behaviours of its
high-level client are wrong for an agent: a failed endpoint is marked unusable for
300 s (so a single-endpoint client cannot reconnect to a restarted etcd), and its
watch thread ends the iterator silently when the stream breaks.

Connection handling (one job per function, so other changes stay out of this core):

- One gRPC channel at a time, to one member. A transient error (UNAVAILABLE, DEADLINE_EXCEEDED,
  "no leader", a stream cut by a member shutting down) drops that channel and the next call
  goes to the next endpoint: a fresh channel reconnects at once instead of waiting out gRPC's
  reconnect backoff. Calls keep trying members for ``failover_timeout`` (default twice the
  per-request ``timeout``), backing off a little after each full round.
- Reads are simply retried. A write whose answer was lost (it may have applied) is resolved
  from the key history before any retry (`etcd_outcome`): applied → its revision is returned;
  not applied → sent again, still compare-and-swap. Never applied twice, never lost.
- An expired auth token ("invalid auth token", etcd's ``--auth-token-ttl``) is renewed on the
  same channel and the request repeated (it was refused, so it did not apply).
- Watches resume on another member from the revision after the last event delivered, after
  checking that member is not behind what the watch has seen (`EtcdWatch`).
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from pyetcd import etcdrpc

from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.datastore.etcd_outcome import Effect, OutcomeUnknown, effects_of, resolve
from felixpy.datastore.etcd_session import (  # noqa: F401 (re-exported: Endpoint, parse_endpoints, ...)
    _GRPC_OPTIONS,
    _TRANSIENT,
    _TRANSIENT_DETAILS,
    Endpoint,
    _MaybeApplied,
    _not_sent,
    _Session,
    _token_expired,
    _transport_failure,
    map_rpc_error,
    parse_endpoints,
    prefix_end,
)
from felixpy.datastore.etcd_watch import EtcdWatch
from felixpy.datastore.kv import KeyValue, TxnOp

log = logging.getLogger(__name__)
T = TypeVar("T")

LIST_PAGE = 5000
_EQUAL, _GREATER = etcdrpc.Compare.EQUAL, etcdrpc.Compare.GREATER


class EtcdKV:
    """KV over etcd v3 with CAS writes, atomic multi-key txns, paged lists and resumable watches.

    ``timeout``: deadline of one request to one member. ``failover_timeout``: how long a call
    keeps trying other members (reads, writes, a watch reconnecting) before it raises
    `Unavailable`, default twice ``timeout``; but every member is tried at least once, so the
    bound is max(failover_timeout, members * timeout), reached only when all members hang.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        ca_cert: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        failover_timeout: float | None = None,
    ):
        self.endpoints = parse_endpoints(endpoints)
        self.ca_cert, self.cert_file, self.key_file = ca_cert, cert_file, key_file
        self.username, self.password, self.timeout = username, password, timeout
        self.failover_timeout = 2 * timeout if failover_timeout is None else failover_timeout
        self.revision_seen = 0  # highest store revision any answer carried (a floor for lost writes)
        self.resolved_writes = 0  # lost writes found applied by reading history (for tests and metrics)
        self.token_renewals = 0
        self._token: str | None = None
        self._lock = threading.Lock()
        self._index = 0
        self._session_obj: _Session | None = None
        self._watches: set[EtcdWatch] = set()
        self._closed = False

    # --- connection management -------------------------------------------------------

    def _session(self) -> _Session:
        with self._lock:
            if self._closed:
                raise DatastoreError("EtcdKV is closed")
            if self._session_obj is None:
                ep = self.endpoints[self._index % len(self.endpoints)]
                try:
                    self._session_obj = _Session(ep, self)
                except grpc.RpcError as exc:
                    self._index += 1
                    raise map_rpc_error(exc.code(), exc.details() or "") from exc
            return self._session_obj

    def _drop(self, session: _Session, reason: str) -> None:
        with self._lock:
            if self._session_obj is session:
                self._session_obj = None
                self._index += 1
                log.warning("etcd endpoint failed endpoint=%s reason=%r", session.endpoint.target, reason)
        session.close()

    def _saw(self, resp: Any) -> Any:
        rev = int(resp.header.revision) if resp is not None and resp.HasField("header") else 0
        if rev > self.revision_seen:
            self.revision_seen = rev
        return resp

    def _attempt(self, fn: Callable[[_Session], T]) -> T:
        """One try on the current member. Raises `Unavailable` when the request surely did not
        apply (the member is then dropped), `_MaybeApplied` when its answer was lost."""
        session = self._session()
        try:
            return fn(session)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if _token_expired(code, details):
                self._renew(session)
                raise Unavailable(f"etcd: auth token renewed ({details})") from exc
            err = map_rpc_error(code, details)
            if code == grpc.StatusCode.CANCELLED and session.closed:  # another thread dropped it
                err = Unavailable(f"etcd: connection to {session.endpoint.target} closed after a failure")
            if not isinstance(err, Unavailable):
                raise err from exc
            self._drop(session, details)
            if _not_sent(details):
                raise err from exc
            raise _MaybeApplied(err) from exc

    def _renew(self, session: _Session) -> None:
        try:
            session.authenticate()
        except grpc.RpcError as exc:
            self._drop(session, exc.details() or "")
            raise map_rpc_error(exc.code(), exc.details() or "") from exc
        self.token_renewals += 1
        log.info("etcd auth token renewed endpoint=%s", session.endpoint.target)

    def _retrying(self, fn: Callable[[_Session], T], lost: Callable[[], T | None] | None = None) -> T:
        """``fn`` on one member after another until it answers or ``failover_timeout`` passes.
        ``lost`` (writes): called when an answer was lost; a non-None result is the answer."""
        deadline = time.monotonic() + self.failover_timeout
        tries = 0
        last: DatastoreError
        while True:
            try:
                return self._attempt(fn)
            except Unavailable as exc:
                last = exc
            except _MaybeApplied as exc:
                last = exc.error
                if lost is not None:
                    found = lost()
                    if found is not None:
                        return found
            tries += 1
            if time.monotonic() >= deadline and tries >= len(self.endpoints):  # each member had its chance
                raise last
            if tries % len(self.endpoints) == 0:  # every member tried once: back off a little
                time.sleep(min(0.5, 0.05 * tries))

    def _call(self, fn: Callable[[_Session], T]) -> T:
        """A read, or a write that is safe to repeat (delete of a range, compaction)."""
        return self._saw(self._retrying(fn))

    def _write(self, fn: Callable[[_Session], Any], effects: Sequence[Effect]) -> tuple[Any | None, int]:
        """A write that must apply at most once: a lost answer is resolved from history first.
        Returns (response, revision), or (None, revision) when history showed it applied.

        A lost write found not applied may still be pending in a slow but live leader's log and
        commit later. Sent again, a CAS write then fails its compare (the first copy applied
        before it), so a compare failure after a lost answer is resolved once more."""
        floor = self.revision_seen
        lost_before = False

        def lost() -> tuple[Any | None, int] | None:
            nonlocal lost_before
            applied = self._found_applied(effects, floor)
            lost_before = applied is None
            return None if applied is None else (None, applied)

        out = self._retrying(lambda s: (fn(s), 0), lost)
        resp = out[0]
        if resp is None:
            return out  # history showed it applied
        self._saw(resp)
        if lost_before and not getattr(resp, "succeeded", True):
            applied = self._found_applied(effects, floor)
            if applied is not None:
                return None, applied
        return resp, int(resp.header.revision)

    def _found_applied(self, effects: Sequence[Effect], floor: int) -> int | None:
        applied = self._resolve(effects, floor)
        if applied is not None:
            self.resolved_writes += 1
            keys = [e.key for e in effects]
            log.warning("etcd lost write found applied keys=%s revision=%d", keys, applied)
        return applied

    def _resolve(self, effects: Sequence[Effect], floor: int) -> int | None:
        try:
            now = self._now(effects[0].key)
            return resolve(effects, floor=floor, now=now, read_at=self._read_at)
        except Compacted as exc:
            raise OutcomeUnknown(f"etcd: write outcome unknown, history compacted: {exc}") from exc

    def _now(self, key: str) -> int:
        """The store revision, by a linearizable read of a key we may read (our own write's)."""
        return int(self._range(etcdrpc.RangeRequest(key=key.encode(), count_only=True)).header.revision)

    def _read_at(self, key: str, revision: int) -> tuple[int, bytes] | None:
        resp = self._range(etcdrpc.RangeRequest(key=key.encode(), revision=revision))
        return (int(resp.kvs[0].mod_revision), bytes(resp.kvs[0].value)) if resp.kvs else None

    # --- reads ---------------------------------------------------------------------

    def _range(self, req: Any) -> Any:
        return self._call(lambda s: s.kv.Range(req, self.timeout, metadata=s.metadata))

    def get(self, key: str) -> KeyValue | None:
        resp = self._range(etcdrpc.RangeRequest(key=key.encode()))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return KeyValue(key, kv.value, kv.mod_revision, kv.create_revision)

    def list(self, prefix: str, *, revision: int | None = None) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, read in pages at one revision (consistent snapshot)."""
        start, end = (prefix.encode() or b"\0"), prefix_end(prefix.encode())
        out: list[KeyValue] = []
        rev = revision or 0
        while True:
            resp = self._range(etcdrpc.RangeRequest(key=start, range_end=end, limit=LIST_PAGE, revision=rev))
            rev = rev or resp.header.revision
            out.extend(
                KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision) for kv in resp.kvs
            )
            if not resp.more or not resp.kvs:
                return out, rev
            start = resp.kvs[-1].key + b"\0"

    def revision(self) -> int:
        return int(self._range(etcdrpc.RangeRequest(key=b"\0", count_only=True)).header.revision)

    # --- writes ----------------------------------------------------------------------
    # Each write names its effects (what its keys look like once applied): a write whose answer
    # is lost is then resolved from history before it is retried (etcd_outcome.py).

    def _txn(
        self,
        compare: builtins.list[Any],
        success: builtins.list[Any],
        failure: builtins.list[Any],
        effects: Sequence[Effect] | None = None,
    ) -> tuple[Any | None, int]:
        """``effects`` default: read off the success branch and the mod-revision compares."""
        req = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        found = effects if effects is not None else _effects_of_request(compare, success)
        return self._write(lambda s: s.kv.Txn(req, self.timeout, metadata=s.metadata), found)

    def put(self, key: str, value: bytes) -> int:
        req = etcdrpc.PutRequest(key=key.encode(), value=value)
        _, rev = self._write(lambda s: s.kv.Put(req, self.timeout, metadata=s.metadata), [Effect(key, value)])
        return rev

    def create(self, key: str, value: bytes) -> int:
        resp, rev = self._txn([_cmp_version(key, 0)], [_op_put(key, value)], [], [Effect(key, value)])
        if resp is not None and not resp.succeeded:
            raise AlreadyExists(key)
        return rev

    def update(self, key: str, value: bytes, revision: int) -> int:
        effects = [Effect(key, value, revision)]
        resp, rev = self._txn([_cmp_mod(key, revision)], [_op_put(key, value)], [_op_get(key)], effects)
        if resp is not None and not resp.succeeded:
            raise _cas_failure(key, resp)
        return rev

    def delete(self, key: str, revision: int | None = None) -> int:
        cmp = _cmp_mod(key, revision) if revision is not None else _cmp_version(key, 0, _GREATER)
        resp, rev = self._txn([cmp], [_op_delete(key)], [_op_get(key)], [Effect(key, None, revision)])
        if resp is not None and not resp.succeeded:
            raise _cas_failure(key, resp)
        return rev

    def txn(self, ops: Sequence[TxnOp]) -> int:
        compare: builtins.list[Any] = []
        success: builtins.list[Any] = []
        for op in ops:
            if op.op == "create":
                compare.append(_cmp_version(op.key, 0))
            elif op.op == "update" or (op.op == "delete" and op.revision is not None):
                compare.append(_cmp_mod(op.key, op.revision or 0))
            elif op.op == "delete":
                compare.append(_cmp_version(op.key, 0, _GREATER))
            success.append(_op_delete(op.key) if op.op == "delete" else _op_put(op.key, op.value))
        resp, rev = self._txn(compare, success, [], effects_of(ops))
        if resp is not None and not resp.succeeded:
            raise Conflict("transaction conditions failed: " + ", ".join(f"{o.op} {o.key}" for o in ops))
        return rev

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` ("" = the whole keyspace); returns how many."""
        req = etcdrpc.DeleteRangeRequest(key=prefix.encode() or b"\0", range_end=prefix_end(prefix.encode()))
        resp = self._call(lambda s: s.kv.DeleteRange(req, self.timeout, metadata=s.metadata))
        return int(resp.deleted)

    def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (watches from older revisions then fail Compacted)."""
        req = etcdrpc.CompactionRequest(revision=revision, physical=True)
        self._call(lambda s: s.kv.Compact(req, self.timeout, metadata=s.metadata))

    # --- watch ---------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, *, prev_kv: bool = True) -> EtcdWatch:
        """A watch stream; iterate it for batches, ``close()`` it (from any thread) to end it."""
        w = EtcdWatch(self, prefix, start_revision, prev_kv=prev_kv)
        with self._lock:
            self._watches.add(w)
        return w

    def _probes(self, w: EtcdWatch) -> bool:
        """Whether ``w`` sends its connection's watch progress requests (``EtcdWatch._requests``):
        the oldest of the watches on that connection whose consumer is waiting does."""
        session = w.session
        if session is None or not w.waiting:
            return False
        with self._lock:
            mates = [x.seq for x in self._watches if x.session is session and x.waiting]
        return not mates or min(mates) >= w.seq

    def _forget(self, w: EtcdWatch) -> None:
        with self._lock:
            self._watches.discard(w)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watches, self._watches = list(self._watches), set()
            session, self._session_obj = self._session_obj, None
        for w in watches:
            w.close()
        if session:
            session.close()


def _cmp_version(key: str, version: int, result: int = _EQUAL) -> Any:
    return etcdrpc.Compare(key=key.encode(), result=result, target=etcdrpc.Compare.VERSION, version=version)


def _cmp_mod(key: str, revision: int) -> Any:
    return etcdrpc.Compare(key=key.encode(), result=_EQUAL, target=etcdrpc.Compare.MOD, mod_revision=revision)


def _op_put(key: str, value: bytes) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key.encode(), value=value))


def _op_delete(key: str) -> Any:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))


def _op_get(key: str) -> Any:
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode()))


def _effects_of_request(compare: builtins.list[Any], success: builtins.list[Any]) -> list[Effect]:
    """The effects of a raw transaction's success branch (puts and single-key deletes)."""
    after = {c.key.decode(): int(c.mod_revision) for c in compare if c.target == etcdrpc.Compare.MOD}
    out = []
    for op in success:
        if op.HasField("request_put"):
            key = op.request_put.key.decode()
            out.append(Effect(key, bytes(op.request_put.value), after.get(key)))
        elif op.HasField("request_delete_range") and not op.request_delete_range.range_end:
            key = op.request_delete_range.key.decode()
            out.append(Effect(key, None, after.get(key)))
    return out


def _cas_failure(key: str, resp: Any) -> DatastoreError:
    """A failed CAS txn whose failure branch read the key: absent → NotFound, else Conflict."""
    found = resp.responses and resp.responses[0].response_range.kvs
    return Conflict(key) if found else NotFound(key)


