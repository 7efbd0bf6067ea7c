"""The Kubernetes view the collector trusts: every page of every list, or an error — never part of one.

Pods and Nodes are read raw from the API server (UIDs, nodeName, podIPs and the CNI plugin's
annotations are what the decisions need; the WorkloadEndpoint conversion would drop pods without
an address yet, which must count as live). Any failure of any page raises, so a pass that cannot
see everything frees nothing.
"""

from __future__ import annotations

from typing import Any

from felixpy.controllers.gc_plan import ClusterView, LivePod
from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.kube.convert import ANN_CONTAINER_ID, ANN_POD_IP, ANN_POD_IPS

PAGE = 500
MAX_PAGES = 100_000


def _list_all(kube: Any, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        page = kube._json("GET", path, query={"limit": PAGE, "continue": token})
        if not isinstance(page.get("items"), list):
            raise DatastoreError(f"list of {path} answered without items")
        items += page["items"]
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
    raise DatastoreError(f"list of {path} did not finish")


def _bare(ip: str) -> str:
    return ip.split("/", 1)[0].strip()


def live_pod(obj: dict[str, Any]) -> LivePod:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ann = meta.get("annotations") or {}
    ips = {_bare(p["ip"]) for p in status.get("podIPs") or [] if p.get("ip")}
    if status.get("podIP"):
        ips.add(_bare(status["podIP"]))
    for text in (ann.get(ANN_POD_IP, ""), ann.get(ANN_POD_IPS, "")):
        ips.update(_bare(t) for t in text.split(",") if t.strip())
    return LivePod(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        node=spec.get("nodeName") or "",
        ips=frozenset(ips),
        container_id=ann.get(ANN_CONTAINER_ID) or "",
        labels=dict(meta.get("labels") or {}),
        service_account=spec.get("serviceAccountName") or "",
        phase=str(status.get("phase") or ""),
        reason=str(status.get("reason") or ""),
    )


def read_view(kube: Any) -> ClusterView:
    """Pods and Nodes as the API server holds them now. Raises on any error."""
    pods = [live_pod(o) for o in _list_all(kube, "/api/v1/pods")]
    nodes = frozenset((o.get("metadata") or {}).get("name") or "" for o in _list_all(kube, "/api/v1/nodes"))
    return ClusterView(pods={(p.namespace, p.name): p for p in pods}, nodes=nodes - {""})


def node_labels(kube: Any) -> dict[str, dict[str, str]]:
    """Every Kubernetes Node's labels. Raises on any error."""
    return {
        (o.get("metadata") or {}).get("name") or "": dict((o.get("metadata") or {}).get("labels") or {})
        for o in _list_all(kube, "/api/v1/nodes")
    }


def get_pod(kube: Any, namespace: str, name: str) -> LivePod | None:
    """The pod straight from the API server (the final check before a release); raises on errors but 404."""
    try:
        return live_pod(kube._json("GET", f"/api/v1/namespaces/{namespace}/pods/{name}"))
    except NotFound:
        return None


def node_exists(kube: Any, name: str) -> bool:
    try:
        kube._json("GET", f"/api/v1/nodes/{name}")
    except NotFound:
        return False
    return True
