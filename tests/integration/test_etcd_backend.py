"""KVBackend against a real etcd: Calico's key layout, CAS on resourceVersion, watches."""

from __future__ import annotations

import json

import pytest

from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound
from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.resources import KVBackend
from felixpy.resources import IPPool, K8sNetworkPolicy, Namespace, WorkloadEndpoint

pytestmark = pytest.mark.integration


def pool(name: str = "pool-a", cidr: str = "10.65.0.0/16") -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr}})


def wep(name: str, ns: str = "default", node: str = "node1") -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"node": node, "interfaceName": "cali0123456789a", "ipNetworks": ["10.65.0.5/32"]},
        }
    )


def test_create_stores_calico_key_and_json_without_resource_version(
    etcd_backend: KVBackend, etcd_kv: EtcdKV
) -> None:
    created = etcd_backend.create(pool())
    raw = etcd_kv.get("/calico/resources/v3/projectcalico.org/ippools/pool-a")
    assert raw is not None
    doc = json.loads(raw.value)
    assert doc["kind"] == "IPPool" and doc["spec"]["cidr"] == "10.65.0.0/16"
    assert "resourceVersion" not in doc["metadata"]
    assert doc["metadata"]["uid"] and doc["metadata"]["creationTimestamp"].endswith("Z")
    assert created.metadata.resource_version == str(raw.mod_revision)


def test_namespaced_kinds_use_namespace_in_key(etcd_backend: KVBackend, etcd_kv: EtcdKV) -> None:
    etcd_backend.create(wep("pod-a", ns="prod"))
    etcd_backend.create(Namespace.model_validate({"metadata": {"name": "prod", "labels": {"env": "p"}}}))
    etcd_backend.create(
        K8sNetworkPolicy.model_validate(
            {"metadata": {"name": "deny", "namespace": "prod"}, "spec": {"podSelector": {}}}
        )
    )
    keys = [kv.key for kv in etcd_kv.list("/calico/resources/v3/projectcalico.org/")[0]]
    assert keys == [
        "/calico/resources/v3/projectcalico.org/k8snetworkpolicies/prod/deny",
        "/calico/resources/v3/projectcalico.org/namespaces/prod",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/prod/pod-a",
    ]
    got = etcd_backend.get(WorkloadEndpoint, "pod-a", "prod")
    assert isinstance(got, WorkloadEndpoint) and got.metadata.labels == {"app": "pod-a"}
    with pytest.raises(NotFound):
        etcd_backend.get(WorkloadEndpoint, "pod-a", "other")


def test_create_twice_raises_already_exists(etcd_backend: KVBackend) -> None:
    etcd_backend.create(pool())
    with pytest.raises(AlreadyExists):
        etcd_backend.create(pool(cidr="10.66.0.0/16"))
    assert etcd_backend.get(IPPool, "pool-a").spec.cidr == "10.65.0.0/16"  # type: ignore[attr-defined]


def test_update_is_cas_on_resource_version(etcd_backend: KVBackend) -> None:
    first = etcd_backend.create(pool())
    edited = first.model_copy(deep=True)
    edited.spec.nat_outgoing = True  # type: ignore[attr-defined]
    second = etcd_backend.update(edited)
    assert int(second.metadata.resource_version or 0) > int(first.metadata.resource_version or 0)
    assert second.metadata.uid == first.metadata.uid
    stale = first.model_copy(deep=True)
    stale.spec.disabled = True  # type: ignore[attr-defined]
    with pytest.raises(Conflict):
        etcd_backend.update(stale)
    now = etcd_backend.get(IPPool, "pool-a")
    assert now.spec.nat_outgoing and not now.spec.disabled  # type: ignore[attr-defined]


def test_apply_creates_then_replaces_keeping_uid(etcd_backend: KVBackend) -> None:
    a = etcd_backend.apply(pool())
    b = etcd_backend.apply(pool(cidr="10.70.0.0/16"))
    assert b.spec.cidr == "10.70.0.0/16" and b.metadata.uid == a.metadata.uid  # type: ignore[attr-defined]


def test_delete_with_stale_revision_conflicts(etcd_backend: KVBackend) -> None:
    first = etcd_backend.create(pool())
    etcd_backend.apply(pool(cidr="10.70.0.0/16"))
    with pytest.raises(Conflict):
        etcd_backend.delete(IPPool, "pool-a", revision=first.metadata.resource_version)
    gone = etcd_backend.delete(IPPool, "pool-a")
    assert gone.spec.cidr == "10.70.0.0/16"  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        etcd_backend.delete(IPPool, "pool-a")


def test_list_by_namespace_and_all(etcd_backend: KVBackend) -> None:
    for ns, name in [("a", "p1"), ("a", "p2"), ("b", "p3")]:
        etcd_backend.create(wep(name, ns=ns))
    etcd_backend.create(pool())
    in_a, _ = etcd_backend.list(WorkloadEndpoint, "a")
    everything, rev = etcd_backend.list(WorkloadEndpoint)
    assert sorted(w.name for w in in_a) == ["p1", "p2"]
    assert sorted(w.name for w in everything) == ["p1", "p2", "p3"]
    assert rev == etcd_backend.kv.revision()


def test_watch_filters_kinds_and_carries_deleted_object(etcd_backend: KVBackend) -> None:
    start = etcd_backend.kv.revision() + 1
    etcd_backend.create(pool())
    etcd_backend.create(Namespace.model_validate({"metadata": {"name": "ignored"}}))
    etcd_backend.create(wep("pod-a"))
    etcd_backend.delete(IPPool, "pool-a")
    w = etcd_backend.watch([IPPool, WorkloadEndpoint], start)
    seen = []
    try:
        for batch in w:
            seen.extend(batch)
            if len(seen) >= 3:
                break
    finally:
        w.close()
    assert [(e.type, e.kind, e.name) for e in seen] == [
        ("put", IPPool, "pool-a"),
        ("put", WorkloadEndpoint, "pod-a"),
        ("delete", IPPool, "pool-a"),
    ]
    assert seen[1].namespace == "default" and seen[1].obj.spec.node == "node1"  # type: ignore[union-attr]
    assert seen[2].obj is not None and seen[2].obj.spec.cidr == "10.65.0.0/16"  # type: ignore[attr-defined]
