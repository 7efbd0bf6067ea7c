"""One garbage-collection pass: read IPAM, endpoints and the cluster; plan (pure); release (CAS).

Order of reads: IPAM first, then the API server. An address allocated after the IPAM read is not
looked at; a pod created after it is irrelevant; so a pod is never missed for an allocation the
pass considers. Every release is re-checked against the API server just before it is made (the pod,
or the node, fetched by name), and made through ipam/ with compare-and-swap on the block, only while
the same handle still holds the address. Any read error aborts the pass before anything is freed;
an error while releasing aborts the rest of the pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from felixpy.controllers import cluster
from felixpy.controllers.gc_plan import (
    Allocation,
    ClusterView,
    Endpoint,
    Plan,
    invalid_reason,
    plan,
    terminal_reason,
)
from felixpy.controllers.metrics import ControllerMetrics
from felixpy.datastore.errors import Conflict, NotFound
from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration, BGPPeer
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.node import Node
from ipam.ipam import IPAM

log = structlog.get_logger(__name__)


def allocations_of(ipam: IPAM) -> list[Allocation]:
    return [
        Allocation(str(b.address(o)), a.handle_id or "", dict(a.secondary))
        for b, _ in ipam.store.list_blocks()
        for o in range(b.size)
        if (a := b.attribute_of(o)) is not None
    ]


class GarbageCollector:
    """Keeps the candidate clocks between passes; ``run_once`` is one pass."""

    def __init__(
        self,
        *,
        kube: Any,
        ipam: IPAM,
        backend: Any,
        metrics: ControllerMetrics,
        etcd_mode: bool,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.kube, self.ipam, self.backend, self.metrics = kube, ipam, backend, metrics
        self.etcd_mode = etcd_mode
        self.clock = clock
        self.candidates: dict[str, float] = {}

    def _read(self, *, endpoints: bool) -> tuple[list[Allocation], list[Endpoint], set[str], ClusterView]:
        allocs = allocations_of(self.ipam)
        nodes = {a.node for a in self.ipam.store.list_affinities()}
        weps: list[Endpoint] = []
        if self.etcd_mode:
            nodes |= {n.name for n in self.backend.list(Node)[0]}
            if endpoints:
                weps = [
                    Endpoint(
                        w.namespace or "default", w.name, w.spec.pod or "", w.spec.node, w.revision or ""
                    )
                    for w in self.backend.list(WorkloadEndpoint)[0]
                    if isinstance(w, WorkloadEndpoint) and w.spec.orchestrator == "k8s" and w.spec.pod
                ]
        return allocs, weps, nodes, cluster.read_view(self.kube)

    def run_once(self, *, grace: float, endpoints: bool = True) -> Plan | None:
        """One pass; None when it was aborted (a read failed): then nothing was freed."""
        try:
            allocs, weps, nodes, view = self._read(endpoints=endpoints)
        except Exception as err:
            self.metrics.passes.labels(outcome="aborted").inc()
            log.warning("gc.pass_aborted", stage="read", error=str(err), freed=0)
            return None
        p = plan(
            allocs, weps, view, candidates=self.candidates, affine_nodes=nodes, now=self.clock(), grace=grace
        )
        self.candidates = p.candidates
        self.metrics.candidates.set(len(p.candidates))
        try:
            self._apply(p, view)
        except Exception as err:
            self.metrics.passes.labels(outcome="aborted").inc()
            log.warning("gc.pass_aborted", stage="release", error=str(err))
            return None
        self.metrics.passes.labels(outcome="ok").inc()
        return p

    # -- releases ---------------------------------------------------------------------------------

    def _apply(self, p: Plan, view: ClusterView) -> None:
        owners = {a.ip: a for a in allocations_of(self.ipam)}
        for r in p.addresses:
            a = owners.get(r.what)
            if a is not None and self._still_live(a, view):
                self.candidates.pop(a.key, None)
                log.info("gc.release_skipped", ip=r.what, handle=r.handle, reason="pod exists again")
                continue
            if self.ipam.release_if_owned(r.what, r.handle):
                self.metrics.released.labels(kind="address", reason=r.reason).inc()
                log.info("gc.released", ip=r.what, handle=r.handle, reason=r.reason)
        for ep, reason in p.endpoints:
            live = cluster.get_pod(self.kube, ep.namespace, ep.pod)
            if live is not None and terminal_reason(live) is None:
                continue  # the pod exists (again) and has not finished
            try:
                self.backend.delete(WorkloadEndpoint, ep.name, ep.namespace, revision=ep.revision)
            except NotFound:
                continue
            self.metrics.released.labels(kind="endpoint", reason=reason).inc()
            log.info("gc.endpoint_deleted", endpoint=f"{ep.namespace}/{ep.name}", pod=ep.pod, reason=reason)
        for r in p.nodes:
            if not cluster.node_exists(self.kube, r.what):
                self._release_node(r.what)

    def _still_live(self, a: Allocation, view: ClusterView) -> bool:
        """Re-decide ``a`` against its pod fetched now: True when it must be kept after all."""
        ns, pod = a.attrs.get("namespace"), a.attrs.get("pod")
        if not ns or not pod:
            return False
        live = cluster.get_pod(self.kube, ns, pod)
        if live is None:
            return False
        now = ClusterView(pods={(ns, pod): live}, nodes=view.nodes)
        return invalid_reason(a, now, now.pod_ips(), now.container_ids()) is None

    def _release_node(self, node: str) -> None:
        blocks = []
        for aff in self.ipam.store.list_affinities(node):
            self.ipam.release_affinity(str(aff.cidr), node, must_be_empty=False)
            blocks.append(str(aff.cidr))
            self.metrics.released.labels(kind="affinity", reason="node-deleted").inc()
        bgp: list[str] = []
        if self.etcd_mode:
            bgp = self._release_node_bgp_state(node)
            try:
                current = self.backend.get(Node, node)
                self.backend.delete(Node, node, revision=current.revision)  # CAS: not a re-registered one
                self.metrics.released.labels(kind="node", reason="node-deleted").inc()
            except (NotFound, Conflict):
                pass
        log.info("gc.node_released", node=node, blocks=blocks, bgp_and_config=bgp, reason="node-deleted")

    def _release_node_bgp_state(self, node: str) -> list[str]:
        """etcd mode, as Calico's Node deletion: the BGPPeers that name the node in ``spec.node``, and its
        ``node.<name>`` BGPConfiguration and FelixConfiguration. Each delete is a CAS on what was read."""
        gone: list[tuple[type[Resource], str]] = [
            (BGPPeer, p.name)
            for p in self.backend.list(BGPPeer)[0]
            if isinstance(p, BGPPeer) and p.spec.node == node
        ]
        gone += [(BGPConfiguration, f"node.{node}"), (FelixConfiguration, f"node.{node}")]
        done = []
        for kind, name in gone:
            try:
                current = self.backend.get(kind, name)
                self.backend.delete(kind, name, revision=current.revision)
            except (NotFound, Conflict):
                continue
            self.metrics.released.labels(kind=kind.KIND, reason="node-deleted").inc()
            done.append(f"{kind.KIND}/{name}")
        return done
