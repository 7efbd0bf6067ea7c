"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

The Lease's ``spec`` is the record: ``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime``, ``leaseTransitions``. Every write is a compare-and-swap on ``resourceVersion``.

A candidate that sees another holder waits until the record has stayed *unchanged, by its own
clock*, for ``leaseDurationSeconds`` (client-go's observed time: no trust in the other side's clock),
then takes the Lease over (acquireTime now, leaseTransitions + 1). The leader renews every
``retry_period``; it counts itself leader only while its last successful renewal is younger than
``renew_deadline`` (< the lease duration), so it stops acting before anyone else may start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound

log = structlog.get_logger(__name__)

LEASE_API = "/apis/coordination.k8s.io/v1"


def micro_time(t: float | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str
    duration_s: int
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": self.acquire_time or None,
            "renewTime": self.renew_time or None,
            "leaseTransitions": self.transitions,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LeaseRecord:
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime") or "",
            renew_time=spec.get("renewTime") or "",
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def next_record(
    current: LeaseRecord | None, *, me: str, observed_for: float, duration_s: int, now_text: str
) -> LeaseRecord | None:
    """The record to write to hold the Lease, or None to stand by (pure).

    ``observed_for``: seconds this candidate has seen ``current`` unchanged.
    """
    mine = LeaseRecord(me, duration_s, now_text, now_text, 0)
    if current is None:
        return mine
    if current.holder == me:
        return replace(current, duration_s=duration_s, renew_time=now_text)
    held = bool(current.holder) and observed_for < (current.duration_s or duration_s)
    if held:
        return None
    return replace(mine, transitions=current.transitions + (1 if current.holder else 0))


class LeaseClient(Protocol):
    def get(self) -> tuple[LeaseRecord, str] | None: ...
    def create(self, record: LeaseRecord) -> str: ...
    def update(self, record: LeaseRecord, resource_version: str) -> str: ...


class KubeLeaseClient:
    """One Lease through a KubernetesBackend's HTTP path (its auth, TLS and error mapping)."""

    def __init__(self, backend: Any, *, namespace: str, name: str):
        self.backend = backend
        self.namespace, self.name = namespace, name
        self._base = f"{LEASE_API}/namespaces/{namespace}/leases"

    def get(self) -> tuple[LeaseRecord, str] | None:
        try:
            obj = self.backend._json("GET", f"{self._base}/{self.name}")
        except NotFound:
            return None
        return LeaseRecord.from_spec(obj.get("spec") or {}), obj["metadata"]["resourceVersion"]

    def _body(self, record: LeaseRecord, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if rv:
            meta["resourceVersion"] = rv
        spec = {k: v for k, v in record.to_spec().items() if v is not None}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def create(self, record: LeaseRecord) -> str:
        try:
            obj = self.backend._json("POST", self._base, body=self._body(record, None))
        except AlreadyExists as err:
            raise Conflict(str(err)) from None
        return str(obj["metadata"]["resourceVersion"])

    def update(self, record: LeaseRecord, resource_version: str) -> str:
        obj = self.backend._json(
            "PUT", f"{self._base}/{self.name}", body=self._body(record, resource_version)
        )
        return str(obj["metadata"]["resourceVersion"])


class LeaderElector:
    def __init__(
        self,
        client: LeaseClient,
        *,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.client = client
        self.identity = identity
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self.clock = clock
        self._observed: tuple[LeaseRecord, float] | None = None
        self._renewed_at: float | None = None

    def is_leader(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards. Errors count as 'not now'."""
        now = self.clock()
        was = self.is_leader()
        try:
            got = self.client.get()
            current, rv = got if got is not None else (None, "")
            if current is not None and (self._observed is None or self._observed[0] != current):
                self._observed = (current, now)
            seen_for = now - self._observed[1] if self._observed and current is not None else 0.0
            want = next_record(
                current,
                me=self.identity,
                observed_for=seen_for,
                duration_s=max(1, round(self.lease_duration)),
                now_text=micro_time(),
            )
            if want is None:
                self._renewed_at = None
                return False
            if current is None:
                self.client.create(want)
            else:
                self.client.update(want, rv)
        except Exception as err:  # a lost CAS, an unreachable API: try again next period
            log.info("leader.attempt_failed", identity=self.identity, error=str(err))
            return self.is_leader()
        self._observed = (want, now)
        self._renewed_at = now
        if not was:
            log.info("leader.acquired", identity=self.identity, transitions=want.transitions)
        return True

    def release(self) -> None:
        """Graceful stop: clear the holder so a stand-by takes over at once (client-go's ReleaseOnCancel)."""
        if not self.is_leader():
            return
        try:
            got = self.client.get()
            if got is not None and got[0].holder == self.identity:
                self.client.update(replace(got[0], holder="", duration_s=1, renew_time=micro_time()), got[1])
                log.info("leader.released", identity=self.identity)
        except Exception as err:
            log.info("leader.release_failed", identity=self.identity, error=str(err))
        self._renewed_at = None
