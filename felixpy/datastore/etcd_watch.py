"""`EtcdWatch`: one etcd watch stream that survives the loss of the member serving it.

Split from etcd.py (which owns the connection and request core); uses its session and error
mapping. See the class docstring for the resume rules.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Protocol

import grpc
from pyetcd import etcdrpc

from felixpy.datastore.errors import Compacted, DatastoreError, Unavailable
from felixpy.datastore.etcd_session import _Session, _token_expired, map_rpc_error, prefix_end
from felixpy.datastore.kv import WatchEvent


class WatchOwner(Protocol):
    """What a watch uses of its client (`EtcdKV`): settings, sessions, and being forgotten."""

    timeout: float
    failover_timeout: float
    endpoints: Any

    def _session(self) -> _Session: ...
    def _renew(self, session: _Session) -> None: ...
    def _drop(self, session: _Session, reason: str) -> None: ...
    def _forget(self, watch: EtcdWatch) -> None: ...
    def _probes(self, watch: EtcdWatch) -> bool: ...

log = logging.getLogger("felixpy.datastore.etcd")
_WATCH_SEQ = itertools.count()


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

    def __init__(self, kv: WatchOwner, prefix: str, start_revision: int, *, prev_kv: bool = True):
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
        self._waiting_since: float | None = None  # when the consumer began waiting on the stream
        self.seq = next(_WATCH_SEQ)  # creation order: the oldest waiting watch of a connection probes it
        self._opened = False
        self.resumes = 0

    def _requests(self, stop: threading.Event) -> Any:
        """The request side: the create, then a progress request every ``interval`` seconds.

        A member that is stopped or partitioned keeps the stream open and silent; gRPC keepalive
        alone did not notice in 60 s. Every progress request is answered at once by a live
        member, so no answer for ``timeout + interval`` means the member is gone: the stream is
        cancelled (marked stalled) and the watch resumes elsewhere.

        One watch per connection asks (``EtcdKV._probes``: the oldest one whose consumer is
        waiting on its stream): a stall found on one stream drops the connection, and the other
        streams on it resume elsewhere too. Each request wakes several threads of an idle agent
        (the request and consumer threads, gRPC's channel and event-engine threads); with three
        watches, asking on every stream was most of its idle wake-ups (docs/performance.md,
        "Idle (session 9)"). A consumer busy elsewhere has not read what came: it is not judged.
        """
        create = etcdrpc.WatchCreateRequest(
            key=self._key, range_end=self._end, start_revision=self._next, prev_kv=self._prev_kv
        )
        yield etcdrpc.WatchRequest(create_request=create)
        interval = max(0.5, self._kv.timeout / 2)
        progress = etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
        probing_since: float | None = None  # since when this stream asks (silence before is not news)
        while not stop.wait(interval):
            if self._closed.is_set():
                return
            if not self._kv._probes(self):
                probing_since = None
                continue
            now = time.monotonic()
            probing_since = now if probing_since is None else probing_since
            heard = max(self._last_rx, probing_since, self._waiting_since or now)
            if now - heard > self._kv.timeout + interval:
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

    @property
    def session(self) -> _Session | None:
        """The connection this watch's stream is on (None between streams)."""
        return self._session

    @property
    def waiting(self) -> bool:
        """Whether the consumer is waiting on the stream now."""
        return self._waiting_since is not None

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
                call = self._call or self._open()
                self._waiting_since = time.monotonic()
                try:
                    resp = next(call)
                finally:
                    self._waiting_since = None
                self._last_rx = time.monotonic()
            except (grpc.RpcError, StopIteration, Unavailable) as exc:
                if self._closed.is_set():
                    continue
                err = self._broken(exc)
                failures += 1
                deadline = deadline or time.monotonic() + self._kv.failover_timeout
                gave_all = failures >= len(self._kv.endpoints)
                if (time.monotonic() >= deadline and gave_all) or isinstance(exc, _StaleMember):
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
        elif isinstance(exc, grpc.RpcError) and self._session is not None and self._session.closed:
            err, details = Unavailable("etcd: watch connection closed after a failure elsewhere"), "closed"
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
