"""etcd mode: the controllers mirror Namespaces, networking.k8s.io NetworkPolicies and Pod labels from the
(stand-in) Kubernetes API into etcd; deletions propagate; a repeated pass writes nothing."""

from __future__ import annotations

from typing import Any

from felixpy.controllers.metrics import ControllerMetrics
from felixpy.controllers.sync_pass import Mirror
from felixpy.datastore.errors import NotFound
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.kube import convert
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace
from tests.fixtures import kubeapi
from tests.integration.test_controllers import add_node, add_pod, cluster_env, wait_for  # noqa: F401 - the fixture


def names(backend: Any, kind: type) -> set[str]:
    return {o.name for o in backend.list(kind)[0]}


def test_namespaces_policies_and_pod_labels_mirrored(kube_api, etcd_kv, etcd_backend) -> None:
    store = kube_api.store
    store.create("namespaces", None, {"metadata": {"name": "default"}})
    store.create("namespaces", None, {"metadata": {"name": "prod", "labels": {"env": "prod"}}})
    store.create(
        "networkpolicies.networking.k8s.io",
        "prod",
        {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    )
    etcd_backend.create(Namespace.model_validate({"metadata": {"name": "handmade"}}))
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )
    run = lambda: mirror.run_once(namespaces=True, policies=True, endpoints=True)  # noqa: E731
    assert run() == 3
    assert etcd_backend.get(Namespace, "prod").metadata.labels == {"env": "prod"}
    assert etcd_backend.get(K8sNetworkPolicy, "deny", "prod").spec.policy_types == ["Ingress"]
    assert run() == 0, "a repeated pass writes nothing"

    store.patch("namespaces", None, "prod", {"metadata": {"labels": {"env": "staging"}}})
    store.delete("networkpolicies.networking.k8s.io", "prod", "deny", None)
    assert run() == 2
    assert etcd_backend.get(Namespace, "prod").metadata.labels == {"env": "staging"}
    assert "deny" not in names(etcd_backend, K8sNetworkPolicy)
    assert "handmade" in names(etcd_backend, Namespace), "objects not mirrored from Kubernetes are left alone"
    store.delete("namespaces", None, "prod", None)
    assert run() == 1 and names(etcd_backend, Namespace) == {"default", "handmade"}
    store.delete("namespaces", None, "default", None)
    assert run() == 0, "an empty namespace list is not trusted: nothing deleted"


def test_pod_labels_reach_their_workload_endpoint(kube_api, etcd_kv, etcd_backend) -> None:
    from ipam.ipam import IPAM
    from tests.integration.ipam_helpers import make_pool

    make_pool(etcd_backend, "p", "10.84.0.0/24", blockSize=28)
    env = {"api": kube_api, "backend": etcd_backend, "ipam": IPAM(etcd_kv, etcd_backend, cache_seconds=0)}
    add_node(env, "n1")
    add_pod(env, "web", "n1", cid="c1")
    kube_api.store.patch(
        "pods",
        "default",
        "web",
        {"metadata": {"labels": {"app": "web"}}, "spec": {"serviceAccountName": "sa1"}},
    )
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )
    assert mirror.run_once(namespaces=False, policies=False, endpoints=True) == 1
    wep = etcd_backend.get(WorkloadEndpoint, convert.wep_name("n1", "k8s", "web", "eth0"), "default")
    assert wep.metadata.labels == {
        "app": "web",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "sa1",
    }
    assert mirror.run_once(namespaces=False, policies=False, endpoints=True) == 0


def test_a_failed_list_writes_nothing(kube_api, etcd_kv, etcd_backend) -> None:
    kube_api.store.create("namespaces", None, {"metadata": {"name": "prod"}})
    real = kube_api.store.list

    def failing(resource: str, ns: str | None):
        if resource == "networkpolicies.networking.k8s.io":
            raise kubeapi.ApiError(500, "InternalError", "etcdserver: request timed out")
        return real(resource, ns)

    kube_api.store.list = failing
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )
    assert mirror.run_once(namespaces=True, policies=True, endpoints=False) is None
    try:
        etcd_backend.get(Namespace, "prod")
        raise AssertionError("written from a pass whose lists failed")
    except NotFound:
        pass


def test_resync_after_a_broken_connection_loses_and_repeats_nothing(kube_api, etcd_kv, etcd_backend) -> None:
    """The API server unreachable for a while (every list fails) while objects change: nothing is written
    meanwhile, the first pass after it writes each change exactly once, the next pass writes nothing."""
    store = kube_api.store
    store.create("namespaces", None, {"metadata": {"name": "prod", "labels": {"env": "prod"}}})
    store.create("namespaces", None, {"metadata": {"name": "old"}})
    store.create("namespaces", None, {"metadata": {"name": "default"}})
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )

    def run() -> int | None:
        return mirror.run_once(namespaces=True, policies=True, endpoints=False)

    assert run() == 3 and run() == 0
    real = store.list

    def broken(resource: str, ns: str | None):
        raise kubeapi.ApiError(503, "ServiceUnavailable", "the connection was broken")

    store.list = broken
    try:
        assert run() is None
        store.patch("namespaces", None, "prod", {"metadata": {"labels": {"env": "staging"}}})
        store.delete("namespaces", None, "old", None)
        store.create(
            "networkpolicies.networking.k8s.io",
            "prod",
            {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        )
        assert run() is None
        assert etcd_backend.get(Namespace, "prod").metadata.labels == {"env": "prod"}, "written while broken"
        assert "old" in names(etcd_backend, Namespace)
    finally:
        store.list = real
    assert run() == 3, "each change made during the break written once (label, delete, create)"
    assert etcd_backend.get(Namespace, "prod").metadata.labels == {"env": "staging"}
    assert names(etcd_backend, Namespace) == {"default", "prod"}
    assert names(etcd_backend, K8sNetworkPolicy) == {"deny"}
    assert run() == 0, "nothing repeated"


def test_node_labels_synced_onto_calico_nodes(kube_api, etcd_kv, etcd_backend) -> None:
    from felixpy.resources.node import Node
    from tests.integration.ipam_helpers import make_node

    kube_api.store.create("nodes", None, {"metadata": {"name": "n1", "labels": {"zone": "a"}}})
    make_node(etcd_backend, "n1", {"route-reflector": "true"})
    make_node(etcd_backend, "etcd-only")
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )

    def run() -> int | None:
        return mirror.run_once(namespaces=False, policies=False, endpoints=False, node_labels=True)

    assert run() == 1
    assert etcd_backend.get(Node, "n1").metadata.labels == {"route-reflector": "true", "zone": "a"}
    assert run() == 0
    kube_api.store.patch("nodes", None, "n1", {"metadata": {"labels": {"zone": None, "rack": "r1"}}})
    assert run() == 1
    assert etcd_backend.get(Node, "n1").metadata.labels == {"route-reflector": "true", "rack": "r1"}
    assert etcd_backend.get(Node, "etcd-only").metadata.labels == {}


def test_service_accounts_mirrored_with_their_labels(kube_api, etcd_kv, etcd_backend) -> None:
    """ServiceAccounts (Calico's ``ksa.<ns>.<sa>`` profiles): name and labels, never their secrets."""
    from felixpy.resources.k8s import ServiceAccount

    store = kube_api.store
    store.create("serviceaccounts", "x", {"metadata": {"name": "default"}})
    store.create(
        "serviceaccounts",
        "x",
        {"metadata": {"name": "builder", "labels": {"team": "blue"}}, "secrets": [{"name": "builder-token"}]},
    )
    mirror = Mirror(
        kube=KubernetesBackend.for_url(kube_api.url), backend=etcd_backend, metrics=ControllerMetrics()
    )

    def run() -> int | None:
        return mirror.run_once(namespaces=False, policies=False, endpoints=False, service_accounts=True)

    assert run() == 2
    got = etcd_backend.get(ServiceAccount, "builder", "x")
    assert got.metadata.labels == {"team": "blue"} and "secrets" not in got.to_dict()
    assert run() == 0, "a repeated pass writes nothing"
    store.patch("serviceaccounts", "x", "builder", {"metadata": {"labels": {"team": "red"}}})
    assert run() == 1 and etcd_backend.get(ServiceAccount, "builder", "x").metadata.labels == {"team": "red"}
    store.delete("serviceaccounts", "x", "builder", None)
    assert run() == 1 and names(etcd_backend, ServiceAccount) == {"default"}
    assert mirror.run_once(namespaces=False, policies=False, endpoints=False) == 0, "off unless asked"
    store.delete("serviceaccounts", "x", "default", None)
    assert run() == 0, "an empty ServiceAccount list is not trusted: nothing deleted"
