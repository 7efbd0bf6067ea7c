"""Fills in the CalicoNodeStatus resources that name this node, as calico-node does.

A Syncer follows CalicoNodeStatus (its own watch: the calc never sees the kind). For each one
whose ``spec.node`` is this node, the reporter thread writes ``status`` (``bgp.node_status``: the
classes ``spec.classes`` asks for) at once, then every ``spec.updatePeriodSeconds``; with 0 it is
written once and not refreshed. A change of the spec writes again at once. Writes are
compare-and-swap on the revision the watch last saw; a conflict (someone edited it meanwhile) is
retried with the newer object on the next tick. The agent's own writes come back through the
watch with the same spec and change nothing. ``CalicoNodeStatus`` of other nodes are left alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from bgp.node_status import build_status
from felixpy.datastore.errors import Conflict, DatastoreError, NotFound
from felixpy.datastore.syncer import Syncer
from felixpy.resources.stored import CalicoNodeStatus

if TYPE_CHECKING:
    from bgp.status import PeerStatus
    from felixpy.datastore.backend import Backend, ResourceEvent

log = structlog.get_logger(__name__)
TICK = 1.0  # how often due resources are looked at (seconds)
RESTART_SECONDS = 30.0  # a failed watch (no CRD, no RBAC grant yet) is started again after this


def _version() -> str:
    from importlib import metadata  # ~30 ms, not at the agent's start (issue 15)

    try:
        return metadata.version("felixpy")
    except metadata.PackageNotFoundError:
        return "unknown"


class BGPState(Protocol):
    """What the reporter reads of the BGP service (``bgp.service.BGPService``)."""

    @property
    def running(self) -> bool: ...

    @property
    def router_id(self) -> str: ...

    @property
    def families(self) -> Sequence[int]: ...

    @property
    def started_at(self) -> float: ...

    @property
    def configured_at(self) -> float: ...

    def status(self) -> Sequence[PeerStatus]: ...

    def fresh_routes_view(self) -> Mapping[str, object] | None: ...


class NodeStatusReporter:
    def __init__(self, backend: Backend, nodename: str, bgp: BGPState, *, tick: float = TICK) -> None:
        self.backend = backend
        self.nodename = nodename
        self.bgp = bgp
        self.tick = tick
        self.writes = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._objs: dict[str, CalicoNodeStatus] = {}  # name -> latest seen (ours only)
        self._due: dict[str, float | None] = {}  # name -> monotonic time of the next write (None: never)
        self._specs: dict[str, dict[str, object]] = {}  # name -> spec last written for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.syncer = self._new_syncer()
        self._syncer_failed_at: float | None = None

    def _new_syncer(self) -> Syncer:
        return Syncer(self.backend, [CalicoNodeStatus], on_updates=self._on_updates)

    def start(self) -> NodeStatusReporter:
        self.syncer.start()
        self._thread = threading.Thread(target=self._main, name="felixpy-nodestatus", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.syncer.stop(timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def failure(self) -> BaseException | None:
        """A crash of the reporter itself (its watch failing is retried, not a failure)."""
        return self.error

    def _check_syncer(self, now: float) -> None:
        """CalicoNodeStatus is not worth the agent's life: a watch that failed (the kind missing
        in Kubernetes mode, RBAC not granting it yet) is logged and started again later."""
        error = self.syncer.error
        if error is None:
            return
        if self._syncer_failed_at is None:
            self._syncer_failed_at = now
            log.warning(
                "node_status.watch_failed",
                error=repr(error),
                action=f"CalicoNodeStatus not reported; watching again in {RESTART_SECONDS:.0f}s",
            )
        elif now - self._syncer_failed_at >= RESTART_SECONDS:
            self._syncer_failed_at = None
            self.syncer.stop(timeout=1.0)
            self.syncer = self._new_syncer().start()

    def _on_updates(self, events: list[ResourceEvent]) -> None:
        with self._lock:
            for ev in events:
                obj = ev.obj if ev.type == "put" else None
                if not isinstance(obj, CalicoNodeStatus) or obj.spec.node != self.nodename:
                    for table in (self._objs, self._due, self._specs):
                        table.pop(ev.name, None)
                    continue
                self._objs[ev.name] = obj
                spec = obj.spec.model_dump()
                if self._specs.get(ev.name) != spec:
                    self._due[ev.name] = time.monotonic()  # new, or its spec changed: now

    def _main(self) -> None:
        try:
            while not self._stop.wait(self.tick):
                now = time.monotonic()
                self._check_syncer(now)
                self.write_due(now)
        except BaseException as exc:  # crash-only: the agent's main loop sees it
            self.error = exc
            log.exception("node_status.crashed")

    def write_due(self, now: float) -> int:
        """Write every resource that is due; the number written."""
        with self._lock:
            due = [(n, self._objs[n]) for n, t in self._due.items() if t is not None and t <= now]
        written = 0
        for name, obj in due:
            try:
                self._write(obj)
            except Conflict:
                log.info("node_status.conflict", name=name, action="retrying with the newer object")
                continue
            except NotFound:
                with self._lock:
                    for table in (self._objs, self._due, self._specs):
                        table.pop(name, None)
                continue
            except DatastoreError as exc:
                log.warning("node_status.write_failed", name=name, error=str(exc), action="retrying")
                continue
            except Exception as exc:  # a bug here must not take the agent down: say so, go on
                log.error("node_status.build_failed", name=name, error=repr(exc), action="retrying in 30s")
                with self._lock:
                    if name in self._due:
                        self._due[name] = now + RESTART_SECONDS
                continue
            written += 1
            period = obj.spec.update_period_seconds or 0
            with self._lock:
                if name in self._objs:
                    self._specs[name] = obj.spec.model_dump()
                    self._due[name] = now + period if period > 0 else None
        return written

    def _write(self, obj: CalicoNodeStatus) -> None:
        bgp = self.bgp
        status = build_status(
            obj.spec.classes,
            now=time.time(),
            running=bool(bgp.running),
            version=f"felixpy {_version()} (ExaBGP)",
            router_id=bgp.router_id,
            families=bgp.families or (4,),
            started=bgp.started_at,
            configured=bgp.configured_at,
            peers=bgp.status(),
            view=bgp.fresh_routes_view() if "Routes" in obj.spec.classes else None,
        )
        updated = obj.model_copy(update={"status": status})
        stored = self.backend.update(updated)
        self.writes += 1
        with self._lock:
            if obj.metadata.name in self._objs:
                self._objs[obj.metadata.name] = stored
        first = self._specs.get(obj.metadata.name) != obj.spec.model_dump()
        bgp_status = status.get("bgp", {})
        (log.info if first else log.debug)(
            "node_status.written",
            name=obj.metadata.name,
            classes=list(obj.spec.classes),
            peers=len(bgp_status.get("peersV4", [])) + len(bgp_status.get("peersV6", [])),
            reason="new or changed CalicoNodeStatus for this node"
            if first
            else "updatePeriodSeconds elapsed",
        )
