"""The controllers' loop: hold (or wait for) the Lease, reload the configuration, run GC passes.

Only the Lease holder acts. A replica that loses the Lease (or cannot renew it within the renew
deadline) stops acting at once and forgets its candidate clocks: a new leader starts every grace
period afresh, which can only delay a release, never hasten one.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from felixpy.controllers import hostendpoints
from felixpy.controllers.gc_pass import GarbageCollector
from felixpy.controllers.leader import KubeLeaseClient, LeaderElector
from felixpy.controllers.metrics import ControllerMetrics, Health
from felixpy.controllers.settings import ControllerSettings
from felixpy.controllers.sync_pass import Mirror
from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from felixpy.resources.node import Node

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    identity: str
    namespace: str = "kube-system"
    lease_name: str = "felixpy-controllers"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def load_settings(backend: Any, previous: ControllerSettings | None = None) -> ControllerSettings:
    """KubeControllersConfiguration ``default``; missing → defaults; unreadable → the previous ones."""
    try:
        kcc = backend.get(KubeControllersConfiguration, "default")
    except NotFound:
        return ControllerSettings()
    except (ValidationError, ValueError, OSError) as err:
        log.warning("controllers.config_unreadable", error=str(err).splitlines()[0])
        return previous or ControllerSettings()
    except Exception as err:  # datastore unreachable: keep what we had
        log.warning("controllers.config_unreadable", error=str(err))
        return previous or ControllerSettings()
    return ControllerSettings.from_resource(kcc if isinstance(kcc, KubeControllersConfiguration) else None)


class Controllers:
    def __init__(
        self,
        *,
        kube: Any,
        ipam: Any,
        backend: Any,
        etcd_mode: bool,
        election: ElectionSettings,
        metrics: ControllerMetrics | None = None,
    ):
        self.backend = backend
        self.metrics = metrics or ControllerMetrics()
        self.elector = LeaderElector(
            KubeLeaseClient(kube, namespace=election.namespace, name=election.lease_name),
            identity=election.identity,
            lease_duration=election.lease_duration,
            renew_deadline=election.renew_deadline,
            retry_period=election.retry_period,
        )
        self.mirror = Mirror(kube=kube, backend=backend, metrics=self.metrics) if etcd_mode else None
        self.gc = GarbageCollector(
            kube=kube, ipam=ipam, backend=backend, metrics=self.metrics, etcd_mode=etcd_mode
        )
        self.retry_period = election.retry_period
        self.settings = load_settings(backend)
        self.health = Health(stale_after=max(30.0, 3 * election.lease_duration))
        self.stop_event = threading.Event()
        self._last_pass: float | None = None
        self._graceful = True

    def step(self) -> None:
        """One turn of the loop (tests drive it directly)."""
        leader = self.elector.try_acquire_or_renew()
        self.metrics.is_leader.set(1 if leader else 0)
        if not leader:
            if self._last_pass is not None:
                log.info("controllers.standing_by", identity=self.elector.identity)
            self.gc.candidates.clear()
            self._last_pass = None
            self.health.beat(ok=True)
            return
        now = time.monotonic()
        if self._last_pass is not None and now - self._last_pass < self.settings.gc_interval:
            self.health.beat(ok=True)
            return
        self.settings = load_settings(self.backend, self.settings)
        ok = True
        if self.settings.node_enabled and self.settings.leak_grace_period > 0 and self.elector.is_leader():
            ok = (
                self.gc.run_once(
                    grace=self.settings.leak_grace_period, endpoints=self.settings.workload_endpoint_enabled
                )
                is not None
            )
        if self.mirror is not None and self.elector.is_leader():
            s = self.settings
            synced = self.mirror.run_once(
                namespaces=s.namespace_enabled,
                policies=s.policy_enabled,
                endpoints=s.workload_endpoint_enabled,
                node_labels=s.node_enabled and s.sync_labels,
                service_accounts=s.service_account_enabled,
            )
            ok = ok and synced is not None
        if self.settings.node_enabled and self.elector.is_leader():
            ok = self._auto_host_endpoints() and ok
        self._last_pass = now
        self.health.beat(ok=ok)

    def _auto_host_endpoints(self) -> bool:
        """Runs whenever the node controller does, so turning autoCreate off removes them."""
        try:
            nodes = [n for n in self.backend.list(Node)[0] if isinstance(n, Node)]
            heps = [h for h in self.backend.list(HostEndpoint)[0] if isinstance(h, HostEndpoint)]
        except Exception as err:
            log.warning("autohep.pass_skipped", error=str(err))
            return False
        n = hostendpoints.sync(self.backend, nodes, heps, enabled=self.settings.auto_host_endpoints)
        if n:
            self.metrics.synced.labels(kind="HostEndpoint", op="auto").inc(n)
        return True

    def run(self) -> None:
        tick = min(self.retry_period, 1.0)
        next_try = 0.0
        while not self.stop_event.is_set():
            if time.monotonic() >= next_try:
                self.step()
                next_try = time.monotonic() + tick
            self.stop_event.wait(tick)
        if self._graceful:
            self.elector.release()

    def stop(self, *, graceful: bool = True) -> None:
        """End ``run``; graceful hands the Lease over at once, otherwise it expires (as after a crash)."""
        self._graceful = graceful
        self.stop_event.set()


def env_seconds(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}: must be more than 0 seconds, not {text}")
    return value


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def run_controllers(env: dict[str, str]) -> int:
    """`felixpy controllers`: wire the datastore, the API server, health and metrics; run until SIGTERM."""
    from felixpy.datastore.config import DatastoreConfig, connect
    from felixpy.datastore.kubernetes import KubernetesBackend
    from felixpy.runtime.health import HealthServer
    from ipam.ipam import IPAM

    election = ElectionSettings(
        identity=default_identity(),
        namespace=env.get("POD_NAMESPACE") or "kube-system",
        lease_name=env.get("LEASE_NAME") or "felixpy-controllers",
        lease_duration=env_seconds(env, "LEADER_ELECTION_LEASE_DURATION", 15),
        renew_deadline=env_seconds(env, "LEADER_ELECTION_RENEW_DEADLINE", 10),
        retry_period=env_seconds(env, "LEADER_ELECTION_RETRY_PERIOD", 2),
    )
    if not election.retry_period < election.renew_deadline < election.lease_duration:
        raise ValueError(
            "LEADER_ELECTION_*: need RETRY_PERIOD < RENEW_DEADLINE < LEASE_DURATION "
            f"(got {election.retry_period} < {election.renew_deadline} < {election.lease_duration})"
        )
    ds = DatastoreConfig.from_env(env)
    kv, backend = connect(ds)
    try:
        kube = KubernetesBackend.from_kubeconfig(env.get("KUBECONFIG") or None)
    except Exception as err:  # kubeconfig unreadable, no in-cluster service account
        raise DatastoreError(f"cannot reach the Kubernetes API (KUBECONFIG or in-cluster): {err}") from None
    ctl = Controllers(
        kube=kube,
        ipam=IPAM(kv, backend),
        backend=backend,
        etcd_mode=ds.datastore_type == "etcdv3",
        election=election,
    )
    if ctl.settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(ctl.settings.metrics_port, addr="0.0.0.0", registry=ctl.metrics.registry)
    if ctl.settings.health_checks:
        port = int(env.get("HEALTH_PORT") or 9440)
        HealthServer("0.0.0.0", port, live=ctl.health.live, ready=ctl.health.ready).start()
    signal.signal(signal.SIGTERM, lambda *_: ctl.stop())
    signal.signal(signal.SIGINT, lambda *_: ctl.stop())
    log.info(
        "controllers.started", identity=election.identity, lease=f"{election.namespace}/{election.lease_name}"
    )
    ctl.run()
    return 0
