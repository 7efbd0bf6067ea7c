"""The Kubernetes datastore against the stand-in API server (tests/fixtures/kubeapi.py).

No real kube-apiserver can run on this machine; the stand-in speaks the same HTTP list/watch protocol
(resourceVersion, chunked watch streams, bookmarks, 410 Gone) and the backend reaches it through the
official `kubernetes` client exactly as it would reach a real cluster.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from felixpy.datastore.errors import AlreadyExists, Compacted, Conflict, NotFound
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources import IPPool, Node, WorkloadEndpoint
from felixpy.resources.k8s import Namespace
from tests.fixtures.kubeapi import KubeAPI


@pytest.fixture
def backend(kube_api: KubeAPI) -> KubernetesBackend:
    return KubernetesBackend.for_url(kube_api.url)


def pool(name: str, cidr: str) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr}})


def pod(
    name: str,
    ns: str = "default",
    *,
    node: str = "node-a",
    ip: str | None = "10.65.0.5",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"phase": "Running", **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {})},
    }


def test_calico_kinds_are_crds_with_compare_and_swap(backend: KubernetesBackend, kube_api: KubeAPI) -> None:
    created = backend.create(pool("p1", "10.65.0.0/16"))
    assert created.metadata.resource_version
    stored = kube_api.store.get("ippools.crd.projectcalico.org", None, "p1")
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["spec"]["cidr"] == "10.65.0.0/16"
    with pytest.raises(AlreadyExists):
        backend.create(pool("p1", "10.66.0.0/16"))

    stale = created.model_copy(deep=True)
    fresh = backend.get(IPPool, "p1")
    fresh.spec.nat_outgoing = True
    backend.update(fresh)
    stale.spec.disabled = True
    with pytest.raises(Conflict):
        backend.update(stale)
    assert backend.get(IPPool, "p1").spec.nat_outgoing is True
    assert backend.get(IPPool, "p1").spec.disabled is False, "a lost CAS must change nothing"

    backend.apply(pool("p1", "10.65.0.0/16"))  # apply ignores the revision
    items, rev = backend.list(IPPool)
    assert [p.name for p in items] == ["p1"] and rev >= int(fresh.metadata.resource_version or 0)
    backend.delete(IPPool, "p1")
    with pytest.raises(NotFound):
        backend.get(IPPool, "p1")


def test_pods_are_workload_endpoints(backend: KubernetesBackend, kube_api: KubeAPI) -> None:
    kube_api.store.create("pods", "shop", pod("web-1", "shop", labels={"app": "web"}))
    kube_api.store.create("pods", "shop", pod("pending", "shop", ip=None))
    host = pod("hostnet", "shop")
    host["spec"]["hostNetwork"] = True
    kube_api.store.create("pods", "shop", host)

    weps, _ = backend.list(WorkloadEndpoint, "shop")
    assert [w.name for w in weps] == ["node--a-k8s-web--1-eth0"], "no IP or host network: not an endpoint"
    (wep,) = weps
    assert wep.spec.ip_networks == ["10.65.0.5/32"]
    assert wep.spec.interface_name.startswith("cali") and len(wep.spec.interface_name) == 15
    assert wep.metadata.labels["app"] == "web"
    assert wep.metadata.labels["projectcalico.org/namespace"] == "shop"
    assert [(p.name, p.port) for p in wep.spec.ports] == [("http", 8080)]
    assert backend.get(WorkloadEndpoint, wep.name, "shop").spec.pod == "web-1"


def test_cni_write_of_an_endpoint_patches_the_pod_annotations(
    backend: KubernetesBackend, kube_api: KubeAPI
) -> None:
    kube_api.store.create("pods", "default", pod("db", ip=None))
    wep = WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": "node--a-k8s-db-eth0", "namespace": "default"},
            "spec": {
                "node": "node-a",
                "pod": "db",
                "containerID": "abc123",
                "interfaceName": "cali0123456789a",
                "ipNetworks": ["10.65.0.9/32"],
            },
        }
    )
    got = backend.apply(wep)
    assert got.spec.ip_networks == ["10.65.0.9/32"] and got.spec.container_id == "abc123"
    ann = kube_api.store.get("pods", "default", "db")["metadata"]["annotations"]
    assert ann["cni.projectcalico.org/podIP"] == "10.65.0.9"


def test_node_bgp_fields_live_in_annotations(backend: KubernetesBackend, kube_api: KubeAPI) -> None:
    kube_api.store.create("nodes", None, {"metadata": {"name": "node-a", "labels": {"rack": "r1"}}})
    node = backend.get(Node, "node-a")
    assert node.metadata.labels == {"rack": "r1"} and node.spec.bgp is None
    node.spec = node.spec.model_validate({"bgp": {"ipv4Address": "10.99.0.2/24", "asNumber": 64512}})
    backend.update(node)
    ann = kube_api.store.get("nodes", None, "node-a")["metadata"]["annotations"]
    assert ann["projectcalico.org/IPv4Address"] == "10.99.0.2/24"
    assert ann["projectcalico.org/ASNumber"] == "64512"
    again = backend.get(Node, "node-a")
    assert again.spec.bgp is not None and again.spec.bgp.ipv4_address == "10.99.0.2/24"


def collect(watch: Any, n: int, timeout: float = 10.0) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    done = threading.Event()

    def run() -> None:
        try:
            for batch in watch:
                out.extend(batch)
                if len(out) >= n:
                    break
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(max(0.0, deadline - time.monotonic()))
    watch.close()
    return out


def test_watch_streams_changes_in_order_and_resumes_after_the_server_closes_streams(
    backend: KubernetesBackend,
    kube_api: KubeAPI,
) -> None:
    _, rev = backend.list(IPPool)
    watch = backend.watch([IPPool, Namespace], rev + 1)
    store = kube_api.store
    store.create(
        "ippools.crd.projectcalico.org", None, {"metadata": {"name": "a"}, "spec": {"cidr": "10.1.0.0/16"}}
    )
    store.create("namespaces", None, {"metadata": {"name": "x", "labels": {"ns": "x"}}})
    time.sleep(0.3)
    store.drop_watches()  # the server ends every stream; the watch must resume from the last revision
    store.patch("ippools.crd.projectcalico.org", None, "a", {"spec": {"natOutgoing": True}})
    store.delete("ippools.crd.projectcalico.org", None, "a", None)
    events = sorted(collect(watch, 4), key=lambda e: e.revision)  # Kubernetes orders events per kind only
    pools = [e.revision for e in events if e.kind is IPPool]
    assert pools == sorted(pools), "events of one kind arrive in revision order"
    summary = [(e.type, e.kind.KIND, e.name) for e in events]
    assert summary == [
        ("put", "IPPool", "a"),
        ("put", "Namespace", "x"),
        ("put", "IPPool", "a"),
        ("delete", "IPPool", "a"),
    ], "no event lost or repeated across the resume"
    assert events[2].obj.spec.nat_outgoing is True


def test_watch_from_a_compacted_revision_raises_compacted(
    backend: KubernetesBackend, kube_api: KubeAPI
) -> None:
    _, rev = backend.list(IPPool)
    kube_api.store.create(
        "ippools.crd.projectcalico.org", None, {"metadata": {"name": "a"}, "spec": {"cidr": "10.1.0.0/16"}}
    )
    kube_api.store.compact()
    watch = backend.watch([IPPool], rev + 1)
    with pytest.raises(Compacted):
        for _ in watch:
            pass


def test_list_pages_through_continue_tokens(
    backend: KubernetesBackend, kube_api: KubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("felixpy.datastore.kubernetes.LIST_PAGE", 3)
    for i in range(8):
        kube_api.store.create("pods", "default", pod(f"p{i}", ip=f"10.65.0.{i + 1}"))
    weps, _ = backend.list(WorkloadEndpoint)
    assert sorted(w.spec.pod for w in weps) == [f"p{i}" for i in range(8)]
