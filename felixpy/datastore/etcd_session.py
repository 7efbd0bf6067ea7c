"""One gRPC session to one etcd member, and the error taxonomy the client and its watches share.

Apart from `etcd.py` so that `EtcdKV` and `EtcdWatch` (etcd_watch.py) both build on it without
importing each other: a session needs only the owner's settings and token (`SessionOwner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import grpc
from pyetcd import MultiEndpointEtcd3Client, etcdrpc

from felixpy.datastore.errors import Compacted, DatastoreError, Unavailable


class SessionOwner(Protocol):
    """What a session reads of its client (`EtcdKV`)."""

    ca_cert: str | None
    key_file: str | None
    cert_file: str | None
    username: str | None
    password: str | None
    timeout: float
    _token: str | None


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


def _transport_failure(code: grpc.StatusCode, details: str) -> bool:
    """UNKNOWN/INTERNAL raised by gRPC itself ("No status received": the member died mid-call),
    not by etcd, whose own errors name their layer ("etcdserver: ...", "mvcc: ...", "auth: ...")."""
    own = details.startswith(("etcdserver:", "mvcc:", "auth:", "rpc error"))
    return code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and not own


def map_rpc_error(code: grpc.StatusCode, details: str) -> DatastoreError:
    """Translate a gRPC status into the datastore's exception tree (errors.py)."""
    text = f"etcd: {code.name}: {details}"
    if (
        code in _TRANSIENT
        or any(s in details for s in _TRANSIENT_DETAILS)
        or _transport_failure(code, details)
    ):
        return Unavailable(text)
    if "compacted" in details:
        return Compacted(text)
    return DatastoreError(text)


class _Session:
    """One gRPC channel to one endpoint, with its stubs and (optional) auth token."""

    def __init__(self, ep: Endpoint, kv: SessionOwner):
        creds = None
        if ep.secure:
            if not kv.ca_cert:
                raise DatastoreError(f"https endpoint {ep.target} needs a CA certificate")
            creds = MultiEndpointEtcd3Client.get_secure_creds(kv.ca_cert, kv.key_file, kv.cert_file)
        self.endpoint = ep
        self._owner = kv
        self.closed = False
        self.channel = (
            grpc.secure_channel(ep.target, creds, options=_GRPC_OPTIONS)
            if creds
            else grpc.insecure_channel(ep.target, options=_GRPC_OPTIONS)
        )
        self.kv = etcdrpc.KVStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] | None = None
        if kv.username is not None and kv._token is not None:
            # Simple tokens are assigned through Raft, so every member knows them: carry the token
            # over instead of a new login (a Raft round trip and a bcrypt check) on every failover.
            self.metadata = (("token", kv._token),)
        elif kv.username is not None:
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
        kv._token = token

    def close(self) -> None:
        self.closed = True
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
