"""`EtcdKV`: the KV protocol (kv.py) over etcd v3, through pyetcd's gRPC stubs.

We use `pyetcd` (etcd-sdk-python) for its generated protobuf messages and stubs and its
TLS credential loader, but drive the RPCs ourselves, because two behaviours of its
high-level client are wrong for an agent: a failed endpoint is marked unusable for
300 s (so a single-endpoint client cannot reconnect to a restarted etcd), and its
watch thread ends the iterator silently when the stream breaks.

Connection handling: one gRPC channel at a time, to one endpoint. Any UNAVAILABLE /
DEADLINE_EXCEEDED error drops that channel and moves to the next endpoint (a fresh
channel reconnects at once instead of waiting out gRPC's reconnect backoff). Reads are
retried once per endpoint; writes raise `Unavailable` (the caller's CAS loop retries,
because a write that timed out may or may not have been applied).
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from pyetcd import MultiEndpointEtcd3Client, etcdrpc

from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, DatastoreError, NotFound, Unavailable
from felixpy.datastore.etcd_outcome import Effect, OutcomeUnknown, effects_of, resolve
from felixpy.datastore.kv import KeyValue, TxnOp, WatchEvent

log = logging.getLogger(__name__)
T = TypeVar("T")

LIST_PAGE = 5000
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Transport failures gRPC reports as UNKNOWN/INTERNAL (a member shutting down mid-request), and
# etcd's own retryable conditions.
_TRANSIENT_DETAILS = (
    "no leader",
    "leader changed",
    "Stream removed",
    "Socket closed",
    "GOAWAY",
    "server stopped",
)
_EQUAL, _GREATER = etcdrpc.Compare.EQUAL, etcdrpc.Compare.GREATER


@dataclass(frozen=True, slots=True)
class Endpoint:
    secure: bool
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(spec: str | Sequence[str]) -> list[Endpoint]:
    """``"http://127.0.0.1:2379,https://[::1]:2380"`` → endpoints. Scheme defaults to http."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in (i.strip() for i in items):
        if not raw:
            continue
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid etcd endpoint {raw!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        out.append(Endpoint(parts.scheme == "https", host, parts.port or 2379))
    if not out:
        raise ValueError("no etcd endpoints given")
    return out


def prefix_end(prefix: bytes) -> bytes:
    """The etcd range_end that selects every key starting with ``prefix`` (b"\\0" = all keys)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


def map_rpc_error(code: grpc.StatusCode, details: str) -> DatastoreError:
    """Translate a gRPC status into the datastore's exception tree (errors.py)."""
    text = f"etcd: {code.name}: {details}"
    if code in _TRANSIENT or any(s in details for s in _TRANSIENT_DETAILS):
        return Unavailable(text)
    if "compacted" in details:
        return Compacted(text)
    return DatastoreError(text)


class _Session:
    """One gRPC channel to one endpoint, with its stubs and (optional) auth token."""

    def __init__(self, ep: Endpoint, kv: EtcdKV):
        creds = None
        if ep.secure:
            if not kv.ca_cert:
                raise DatastoreError(f"https endpoint {ep.target} needs a CA certificate")
            creds = MultiEndpointEtcd3Client.get_secure_creds(kv.ca_cert, kv.key_file, kv.cert_file)
        self.endpoint = ep
        self._owner = kv
        self.channel = (
            grpc.secure_channel(ep.target, creds, options=_GRPC_OPTIONS)
            if creds
            else grpc.insecure_channel(ep.target, options=_GRPC_OPTIONS)
        )
        self.kv = etcdrpc.KVStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] | None = None
        if kv.username is not None:
            try:
                self.authenticate()
            except grpc.RpcError:
                self.channel.close()
                raise

    def authenticate(self) -> None:
        """Get a fresh auth token (etcd's simple tokens expire after --auth-token-ttl idle seconds)."""
        kv = self._owner
        req = etcdrpc.AuthenticateRequest(name=kv.username, password=kv.password or "")
        token = etcdrpc.AuthStub(self.channel).Authenticate(req, kv.timeout).token
        self.metadata = (("token", token),)

    def close(self) -> None:
        self.channel.close()


class _MaybeApplied(Exception):
    """A write's answer was lost: it may or may not have been applied."""

    def __init__(self, error: DatastoreError):
        super().__init__(str(error))
        self.error = error


def _token_expired(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED and "token" in details


def _not_sent(details: str) -> bool:
    """Transient errors that prove the request never reached etcd's log (safe to resend)."""
    text = details.lower()
    return any(s in text for s in ("failed to connect", "connection refused", "no leader", "dns resolution"))


class EtcdKV:
    """KV over etcd v3 with CAS writes, atomic multi-key txns, paged lists and resumable watches.

    ``timeout``: deadline of one request to one member. ``failover_timeout``: how long a call
    keeps trying other members (reads, writes, a watch reconnecting) before it raises
    `Unavailable`; default twice ``timeout``.
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
            if time.monotonic() >= deadline:
                raise last
            if tries % len(self.endpoints) == 0:  # every member tried once: back off a little
                time.sleep(min(0.5, 0.05 * tries))

    def _call(self, fn: Callable[[_Session], T]) -> T:
        """A read, or a write that is safe to repeat (delete of a range, compaction)."""
        return self._saw(self._retrying(fn))

    def _write(self, fn: Callable[[_Session], Any], effects: Sequence[Effect]) -> tuple[Any | None, int]:
        """A write that must apply at most once: a lost answer is resolved from history first.
        Returns (response, revision), or (None, revision) when history showed it applied."""
        floor = self.revision_seen

        def lost() -> tuple[Any | None, int] | None:
            applied = self._resolve(effects, floor)
            if applied is None:
                return None
            self.resolved_writes += 1
            keys = [e.key for e in effects]
            log.warning("etcd lost write found applied keys=%s revision=%d", keys, applied)
            return None, applied

        out = self._retrying(lambda s: (fn(s), 0), lost)
        if out[0] is not None:
            self._saw(out[0])
            return out[0], int(out[0].header.revision)
        return out

    def _resolve(self, effects: Sequence[Effect], floor: int) -> int | None:
        try:
            now = self.revision()
            return resolve(effects, floor=floor, now=now, read_at=self._read_at)
        except Compacted as exc:
            raise OutcomeUnknown(f"etcd: write outcome unknown, history compacted: {exc}") from exc

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
        effects: Sequence[Effect],
    ) -> tuple[Any | None, int]:
        req = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        return self._write(lambda s: s.kv.Txn(req, self.timeout, metadata=s.metadata), effects)

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


def _cas_failure(key: str, resp: Any) -> DatastoreError:
    """A failed CAS txn whose failure branch read the key: absent → NotFound, else Conflict."""
    found = resp.responses and resp.responses[0].response_range.kvs
    return Conflict(key) if found else NotFound(key)


class EtcdWatch:
    """One etcd watch: an iterator of ``list[WatchEvent]`` batches in revision order.

    A broken stream (member killed, stopped, partitioned) is reopened on the next member from
    the revision after the last event delivered, so nothing is lost or repeated; an expired
    auth token is renewed on the way. Before resuming, the member must show (linearizable read)
    a revision at least the highest this watch has seen; one that is behind (restored from an
    old backup, a different cluster) is not trusted: `Unavailable` is raised and the consumer
    re-lists (the Syncer does). Raises `Compacted` when the start revision is gone, and
    `Unavailable` when no member took the watch within the KV's ``failover_timeout``; stops
    (StopIteration) only after ``close()``, which is safe from any thread.
    """

    def __init__(self, kv: EtcdKV, prefix: str, start_revision: int, *, prev_kv: bool = True):
        self._kv = kv
        self._closed = threading.Event()
        self._call: Any = None
        self._key, self._end = prefix.encode() or b"\0", prefix_end(prefix.encode())
        self._prev_kv = prev_kv
        self._next = start_revision  # revision to (re)start from: last delivered + 1
        self._high = max(0, start_revision - 1)  # highest store revision this watch has seen
        self._session: _Session | None = None
        self._stream_stop = threading.Event()
        self._stalled, self._last_rx = False, time.monotonic()
        self._opened = False
        self.resumes = 0

    def _requests(self, stop: threading.Event) -> Any:
        """The request side: the create, then a progress request every ``interval`` seconds.

        A member that is stopped or partitioned keeps the stream open and silent; gRPC keepalive
        alone did not notice in 60 s. Every progress request is answered at once by a live
        member, so no answer for ``timeout + interval`` means the member is gone: the stream is
        cancelled (marked stalled) and the watch resumes elsewhere."""
        create = etcdrpc.WatchCreateRequest(
            key=self._key, range_end=self._end, start_revision=self._next, prev_kv=self._prev_kv
        )
        yield etcdrpc.WatchRequest(create_request=create)
        interval = max(0.5, self._kv.timeout / 2)
        progress = etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
        while not stop.wait(interval):
            if self._closed.is_set():
                return
            if time.monotonic() - self._last_rx > self._kv.timeout + interval:
                self._stalled = True
                call = self._call
                if call is not None:
                    call.cancel()
                return
            yield progress

    def _open(self) -> Any:
        session = self._kv._session()
        self._session = session
        if self._opened:
            self._check_member(session)
        self._stream_stop = threading.Event()
        self._stalled, self._last_rx = False, time.monotonic()
        self._call = session.watch.Watch(self._requests(self._stream_stop), metadata=session.metadata)
        self._opened = True
        if self._closed.is_set():
            self._call.cancel()
        return self._call

    def _check_member(self, session: _Session) -> None:
        """Resume only on a member whose linearizable revision is not behind what we saw."""
        req = etcdrpc.RangeRequest(key=self._key, range_end=self._end, count_only=True)
        try:
            resp = session.kv.Range(req, self._kv.timeout, metadata=session.metadata)
        except grpc.RpcError as exc:
            if not _token_expired(exc.code(), exc.details() or ""):
                raise
            self._kv._renew(session)
            resp = session.kv.Range(req, self._kv.timeout, metadata=session.metadata)
        rev = int(resp.header.revision)
        if rev < self._high:
            self._kv._drop(session, f"revision {rev} behind {self._high}")
            raise _StaleMember(
                f"etcd: member {session.endpoint.target} is at revision {rev}, behind revision "
                f"{self._high} already seen; not resuming the watch there (re-list)"
            )
        self.resumes += 1
        log.info("etcd watch resumed endpoint=%s from_revision=%d", session.endpoint.target, self._next)

    def __iter__(self) -> EtcdWatch:
        return self

    def __next__(self) -> list[WatchEvent]:
        try:
            return self._next_batch()
        except DatastoreError:
            self._finish()
            raise

    def _next_batch(self) -> list[WatchEvent]:
        deadline: float | None = None
        renewed, failures = False, 0
        while True:
            if self._closed.is_set():
                self._finish()
                raise StopIteration
            try:
                resp = next(self._call or self._open())
                self._last_rx = time.monotonic()
            except (grpc.RpcError, StopIteration, Unavailable) as exc:
                if self._closed.is_set():
                    continue
                err = self._broken(exc)
                failures += 1
                deadline = deadline or time.monotonic() + self._kv.failover_timeout
                if time.monotonic() >= deadline or isinstance(exc, _StaleMember):
                    raise err from None
                if failures % len(self._kv.endpoints) == 0:
                    self._closed.wait(min(0.5, 0.05 * failures))
                continue
            if self._token_refused(resp) and not renewed and self._session is not None:
                renewed = True
                self._reset()
                self._kv._renew(self._session)
                continue
            batch = self._batch(resp)
            deadline, failures = None, 0
            if batch:
                self._next = batch[-1].mod_revision + 1
                self._high = max(self._high, batch[-1].mod_revision)
                return batch

    def _broken(self, exc: BaseException) -> DatastoreError:
        """The stream broke: drop the member (when transient) so the next open goes elsewhere."""
        err: DatastoreError
        if isinstance(exc, grpc.RpcError) and self._stalled:
            err, details = Unavailable("etcd: watch stream stalled (member not answering)"), "watch stalled"
        elif isinstance(exc, grpc.RpcError):
            code, details = exc.code(), exc.details() or ""
            err = map_rpc_error(code, details)
            if not isinstance(err, Unavailable) and not _token_expired(code, details):
                self._finish()
                raise err from exc
        elif isinstance(exc, StopIteration):
            err, details = Unavailable("etcd: watch stream ended"), "watch stream ended"
        else:
            err, details = exc, str(exc)  # type: ignore[assignment]  # an Unavailable from _open
        session, self._session = self._session, None
        self._reset()
        if session is not None:
            self._kv._drop(session, details)
        return err

    def _reset(self) -> None:
        call, self._call = self._call, None
        self._stream_stop.set()
        if call is not None:
            call.cancel()

    @staticmethod
    def _token_refused(resp: Any) -> bool:
        """A watch created with an expired token is canceled at once ("invalid auth token")."""
        return bool(resp.canceled and resp.created and "auth token" in resp.cancel_reason)

    def _batch(self, resp: Any) -> list[WatchEvent]:
        if resp.HasField("header"):
            self._high = max(self._high, int(resp.header.revision))
        if resp.compact_revision:
            raise Compacted(
                f"etcd: revision compacted (compact_revision={resp.compact_revision})",
                compact_revision=int(resp.compact_revision),
            )
        if resp.canceled:
            raise DatastoreError(f"etcd: watch canceled: {resp.cancel_reason}")
        out = []
        for ev in resp.events:
            kv = ev.kv
            if ev.type == 0:
                out.append(WatchEvent("put", kv.key.decode(), kv.value, kv.mod_revision))
            else:
                prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
                out.append(WatchEvent("delete", kv.key.decode(), b"", kv.mod_revision, prev))
        return out

    def _finish(self) -> None:
        self._closed.set()
        self._reset()
        self._kv._forget(self)

    def close(self) -> None:
        self._closed.set()
        self._stream_stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._kv._forget(self)


class _StaleMember(Unavailable):
    """The member offered for a watch resume is behind the revision already seen."""
