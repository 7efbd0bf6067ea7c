"""The controllers' Prometheus metrics (own registry, as the agent's) and health state."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.released = Counter(
            "felixpy_controllers_ipam_released",
            "IPAM addresses, endpoints and node holdings released by the controllers, by kind and reason",
            ["kind", "reason"],
            registry=r,
        )
        self.candidates = Gauge(
            "felixpy_controllers_gc_candidates",
            "Items seen as leaked, waiting out leakGracePeriod",
            registry=r,
        )
        self.passes = Counter(
            "felixpy_controllers_gc_passes", "GC passes by outcome (ok | aborted)", ["outcome"], registry=r
        )
        self.synced = Counter(
            "felixpy_controllers_synced",
            "etcd mode: objects written to mirror the Kubernetes API, by kind and operation",
            ["kind", "op"],
            registry=r,
        )
        self.is_leader = Gauge(
            "felixpy_controllers_is_leader", "1 while this replica holds the Lease", registry=r
        )


class Health:
    """Live while the loop turns; ready once a pass (or a stand-by round) completed recently."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._ok_at: float | None = None

    def beat(self, *, ok: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self._beat = now
            if ok:
                self._ok_at = now

    def live(self) -> bool:
        with self._lock:
            return time.monotonic() - self._beat < self.stale_after

    def ready(self) -> bool:
        with self._lock:
            return self._ok_at is not None and time.monotonic() - self._ok_at < self.stale_after
