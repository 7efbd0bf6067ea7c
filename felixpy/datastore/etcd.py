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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from pyetcd import MultiEndpointEtcd3Client, etcdrpc

from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, DatastoreError, NotFound, Unavailable
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
    if code in _TRANSIENT or "no leader" in details or "leader changed" in details:
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
        self.channel = (
            grpc.secure_channel(ep.target, creds, options=_GRPC_OPTIONS)
            if creds
            else grpc.insecure_channel(ep.target, options=_GRPC_OPTIONS)
        )
        self.kv = etcdrpc.KVStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] | None = None
        if kv.username is not None:
            req = etcdrpc.AuthenticateRequest(name=kv.username, password=kv.password or "")
            try:
                token = etcdrpc.AuthStub(self.channel).Authenticate(req, kv.timeout).token
            except grpc.RpcError:
                self.channel.close()
                raise
            self.metadata = (("token", token),)

    def close(self) -> None:
        self.channel.close()


class EtcdKV:
    """KV over etcd v3 with CAS writes, atomic multi-key txns, paged lists and resumable watches."""

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
    ):
        self.endpoints = parse_endpoints(endpoints)
        self.ca_cert, self.cert_file, self.key_file = ca_cert, cert_file, key_file
        self.username, self.password, self.timeout = username, password, timeout
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

    def _call(self, fn: Callable[[_Session], T], *, read: bool) -> T:
        attempts = len(self.endpoints) + 1 if read else 1
        last: DatastoreError = Unavailable("etcd: no attempt made")
        for _ in range(attempts):
            try:
                session = self._session()
            except Unavailable as exc:
                last = exc
                continue
            try:
                return fn(session)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                last = map_rpc_error(code, details)
                if isinstance(last, Unavailable) or code == grpc.StatusCode.UNAUTHENTICATED:
                    self._drop(session, details)
                    if read or code == grpc.StatusCode.UNAUTHENTICATED:
                        continue
                raise last from exc
        raise last

    # --- reads ---------------------------------------------------------------------

    def _range(self, req: Any) -> Any:
        return self._call(lambda s: s.kv.Range(req, self.timeout, metadata=s.metadata), read=True)

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

    # --- writes --------------------------------------------------------------------

    def _txn(
        self, compare: builtins.list[Any], success: builtins.list[Any], failure: builtins.list[Any]
    ) -> Any:
        req = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        return self._call(lambda s: s.kv.Txn(req, self.timeout, metadata=s.metadata), read=False)

    def put(self, key: str, value: bytes) -> int:
        req = etcdrpc.PutRequest(key=key.encode(), value=value)
        resp = self._call(lambda s: s.kv.Put(req, self.timeout, metadata=s.metadata), read=False)
        return int(resp.header.revision)

    def create(self, key: str, value: bytes) -> int:
        resp = self._txn([_cmp_version(key, 0)], [_op_put(key, value)], [])
        if not resp.succeeded:
            raise AlreadyExists(key)
        return int(resp.header.revision)

    def update(self, key: str, value: bytes, revision: int) -> int:
        resp = self._txn([_cmp_mod(key, revision)], [_op_put(key, value)], [_op_get(key)])
        if not resp.succeeded:
            raise _cas_failure(key, resp)
        return int(resp.header.revision)

    def delete(self, key: str, revision: int | None = None) -> int:
        cmp = _cmp_mod(key, revision) if revision is not None else _cmp_version(key, 0, _GREATER)
        resp = self._txn([cmp], [_op_delete(key)], [_op_get(key)])
        if not resp.succeeded:
            raise _cas_failure(key, resp)
        return int(resp.header.revision)

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
        resp = self._txn(compare, success, [])
        if not resp.succeeded:
            raise Conflict("transaction conditions failed: " + ", ".join(f"{o.op} {o.key}" for o in ops))
        return int(resp.header.revision)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` ("" = the whole keyspace); returns how many."""
        req = etcdrpc.DeleteRangeRequest(key=prefix.encode() or b"\0", range_end=prefix_end(prefix.encode()))
        resp = self._call(lambda s: s.kv.DeleteRange(req, self.timeout, metadata=s.metadata), read=False)
        return int(resp.deleted)

    def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (watches from older revisions then fail Compacted)."""
        req = etcdrpc.CompactionRequest(revision=revision, physical=True)
        self._call(lambda s: s.kv.Compact(req, self.timeout, metadata=s.metadata), read=False)

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
    """One etcd watch stream: an iterator of ``list[WatchEvent]`` batches in revision order.

    Raises `Compacted` when the start revision is gone, `Unavailable` when the stream
    breaks; stops (StopIteration) only after ``close()``, which is safe from any thread.
    """

    def __init__(self, kv: EtcdKV, prefix: str, start_revision: int, *, prev_kv: bool = True):
        self._kv = kv
        self._closed = threading.Event()
        self._call: Any = None
        key = prefix.encode() or b"\0"
        create = etcdrpc.WatchCreateRequest(
            key=key, range_end=prefix_end(prefix.encode()), start_revision=start_revision, prev_kv=prev_kv
        )
        self._request = etcdrpc.WatchRequest(create_request=create)
        self._session: _Session | None = None

    def _requests(self) -> Any:
        yield self._request
        # Keep the request side open until closed or the call ends (bounded: checks each second).
        while not self._closed.wait(1.0):
            if self._call is not None and self._call.done():
                return

    def _open(self) -> Any:
        session = self._kv._session()
        self._session = session
        self._call = session.watch.Watch(self._requests(), metadata=session.metadata)
        if self._closed.is_set():
            self._call.cancel()
        return self._call

    def __iter__(self) -> EtcdWatch:
        return self

    def __next__(self) -> list[WatchEvent]:
        try:
            call = self._call or self._open()
            while True:
                if self._closed.is_set():
                    raise StopIteration
                resp = next(call)
                batch = self._batch(resp)
                if batch:
                    return batch
        except grpc.RpcError as exc:
            self._finish()
            if self._closed.is_set():
                raise StopIteration from None
            err = map_rpc_error(exc.code(), exc.details() or "")
            if isinstance(err, Unavailable) and self._session is not None:
                self._kv._drop(self._session, exc.details() or "")
            raise err from exc
        except StopIteration:
            self._finish()
            if self._closed.is_set():
                raise
            raise Unavailable("etcd: watch stream ended") from None
        except DatastoreError:
            self._finish()
            raise

    def _batch(self, resp: Any) -> list[WatchEvent]:
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
        if self._call is not None:
            self._call.cancel()
        self._kv._forget(self)

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        self._kv._forget(self)
