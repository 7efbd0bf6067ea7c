"""etcd mode: mirror the Kubernetes API into etcd — Namespaces (namespaceSelectors), ServiceAccounts
(serviceAccountSelectors: Calico's ``ksa.<ns>.<sa>`` profiles), networking.k8s.io NetworkPolicies, and
Pod labels onto their WorkloadEndpoints. A full list-and-diff each pass
(felixpy.controllers.sync_plan), every write compare-and-swap; a lost race waits for the next pass.
Any read error skips the pass: nothing is deleted from a partial view."""

from __future__ import annotations

from typing import Any

import structlog

from felixpy.controllers import cluster, sync_plan
from felixpy.controllers.metrics import ControllerMetrics
from felixpy.controllers.sync_plan import Write, endpoint_labels, mirror
from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound
from felixpy.resources.base import Resource
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace, ServiceAccount
from felixpy.resources.node import Node

log = structlog.get_logger(__name__)


class Mirror:
    def __init__(self, *, kube: Any, backend: Any, metrics: ControllerMetrics):
        self.kube, self.backend, self.metrics = kube, backend, metrics

    def run_once(
        self,
        *,
        namespaces: bool,
        policies: bool,
        endpoints: bool,
        node_labels: bool = False,
        service_accounts: bool = False,
    ) -> int | None:
        """Writes made, or None when a read failed (then nothing was written)."""
        kinds = [
            k
            for k, on in (
                (Namespace, namespaces),
                (ServiceAccount, service_accounts),
                (K8sNetworkPolicy, policies),
            )
            if on
        ]
        try:
            plans = [(k, self._plan(k)) for k in kinds]
            view = cluster.read_view(self.kube) if endpoints else None
            weps = self.backend.list(WorkloadEndpoint)[0] if endpoints else []
            kube_nodes = cluster.node_labels(self.kube) if node_labels else {}
            nodes = self.backend.list(Node)[0] if node_labels else []
        except Exception as err:
            log.warning("sync.pass_skipped", error=str(err))
            return None
        n = sum(self._write(k, w) for k, writes in plans for w in writes)
        if view is not None:
            n += sum(self._label(w, view) for w in weps if isinstance(w, WorkloadEndpoint))
        n += sum(
            self._node(nd, kube_nodes[nd.name])
            for nd in nodes
            if isinstance(nd, Node) and nd.name in kube_nodes
        )
        return n

    def _node(self, node: Node, kube_labels: dict[str, str]) -> int:
        got = sync_plan.node_labels(node.metadata.labels, node.metadata.annotations, kube_labels)
        if got is None:
            return 0
        node.metadata.labels, node.metadata.annotations = got
        try:
            self.backend.update(node)
        except (Conflict, NotFound) as err:
            log.info("sync.write_lost", kind="Node", name=node.name, error=str(err))
            return 0
        self.metrics.synced.labels(kind="Node", op="labels").inc()
        log.info("sync.written", kind="Node", name=node.name, op="labels", labels=got[0], reason="syncLabels")
        return 1

    def _plan(self, kind: type[Resource]) -> list[Write]:
        desired = {(o.namespace or "", o.name): o.to_dict() for o in self.kube.list(kind)[0]}
        actual = {
            (o.namespace or "", o.name): (o.to_dict(), o.revision or "") for o in self.backend.list(kind)[0]
        }
        # A cluster always has Namespaces and ServiceAccounts (`default`): none listed is a broken answer.
        return mirror(desired, actual, may_be_empty=kind not in (Namespace, ServiceAccount))

    def _write(self, kind: type[Resource], w: Write) -> int:
        ns, name = w.key
        try:
            if w.op == "delete":
                self.backend.delete(kind, name, ns or None, revision=w.revision)
            else:
                obj = kind.model_validate(w.body)
                if w.op == "create":
                    self.backend.create(obj)
                else:
                    obj.metadata.resource_version = w.revision
                    self.backend.update(obj)
        except (Conflict, NotFound, AlreadyExists) as err:
            log.info(
                "sync.write_lost",
                kind=kind.KIND,
                name=f"{ns}/{name}" if ns else name,
                op=w.op,
                error=str(err),
            )
            return 0
        self.metrics.synced.labels(kind=kind.KIND, op=w.op).inc()
        log.info(
            "sync.written",
            kind=kind.KIND,
            name=f"{ns}/{name}" if ns else name,
            op=w.op,
            labels=((w.body or {}).get("metadata") or {}).get("labels", {}) if w.op != "delete" else None,
            reason="mirror of Kubernetes",
        )
        return 1

    def _label(self, wep: WorkloadEndpoint, view: Any) -> int:
        if wep.spec.orchestrator != "k8s" or not wep.spec.pod:
            return 0
        pod = view.pods.get((wep.namespace or "default", wep.spec.pod))
        if pod is None:
            return 0  # the GC's business, after its grace period
        want = endpoint_labels(
            pod.labels, namespace=wep.namespace or "default", service_account=pod.service_account
        )
        if dict(wep.metadata.labels) == want:
            return 0
        wep.metadata.labels = want
        try:
            self.backend.update(wep)
        except (Conflict, NotFound) as err:
            log.info(
                "sync.write_lost", kind="WorkloadEndpoint", name=f"{wep.namespace}/{wep.name}", error=str(err)
            )
            return 0
        self.metrics.synced.labels(kind="WorkloadEndpoint", op="labels").inc()
        log.info(
            "sync.written",
            kind="WorkloadEndpoint",
            name=f"{wep.namespace}/{wep.name}",
            op="labels",
            labels=want,
        )
        return 1
