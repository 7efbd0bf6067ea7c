"""Node registration at start-up against a real etcd (no namespaces needed): the BGP identity,
and in ``--route-reflector`` mode ROUTE_REFLECTOR_CLUSTER_ID / ROUTE_REFLECTOR_LABEL."""

from __future__ import annotations

import json

from felixpy.datastore.resources import KVBackend
from felixpy.resources import Node
from felixpy.runtime import startup
from felixpy.runtime.settings import Settings

KEY = "/calico/resources/v3/projectcalico.org/nodes/"


def _stored(backend: KVBackend, name: str) -> dict:
    items, _ = backend.kv.list(KEY + name)
    assert len(items) == 1
    return json.loads(items[0].value)  # type: ignore[no-any-return]


def test_route_reflector_registration_sets_cluster_id_and_label(etcd_backend: KVBackend) -> None:
    env = {
        "NODENAME": "rr1",
        "ROUTE_REFLECTOR_CLUSTER_ID": "224.0.0.1",
        "ROUTE_REFLECTOR_LABEL": "route-reflector",
    }
    settings = Settings.from_env(env, route_reflector=True)
    startup.register_node(etcd_backend, settings, "10.0.0.9/24")
    doc = _stored(etcd_backend, "rr1")
    assert doc["spec"]["bgp"]["routeReflectorClusterID"] == "224.0.0.1"
    assert doc["spec"]["bgp"]["ipv4Address"] == "10.0.0.9/24"
    assert doc["metadata"]["labels"]["route-reflector"] == "true"


def test_existing_node_gains_rr_identity_and_keeps_other_labels(etcd_backend: KVBackend) -> None:
    node = Node.model_validate(
        {
            "metadata": {"name": "rr2", "labels": {"rack": "r1"}},
            "spec": {"bgp": {"ipv4Address": "10.0.0.8/24"}},
        }
    )
    etcd_backend.create(node)
    env = {"NODENAME": "rr2", "ROUTE_REFLECTOR_CLUSTER_ID": "1.1.1.1", "ROUTE_REFLECTOR_LABEL": "rr"}
    settings = Settings.from_env(env, route_reflector=True)
    startup.register_node(etcd_backend, settings, "10.0.0.8/24")
    doc = _stored(etcd_backend, "rr2")
    assert doc["metadata"]["labels"] == {"rack": "r1", "rr": "true"}
    assert doc["spec"]["bgp"]["routeReflectorClusterID"] == "1.1.1.1"
    revision = etcd_backend.get(Node, "rr2").metadata.resource_version
    startup.register_node(etcd_backend, settings, "10.0.0.8/24")  # idempotent: no second write
    assert etcd_backend.get(Node, "rr2").metadata.resource_version == revision


def test_plain_node_ignores_rr_env(etcd_backend: KVBackend) -> None:
    env = {"NODENAME": "n1", "ROUTE_REFLECTOR_CLUSTER_ID": "1.1.1.1", "ROUTE_REFLECTOR_LABEL": "rr"}
    startup.register_node(etcd_backend, Settings.from_env(env), "10.0.0.1/24")
    doc = _stored(etcd_backend, "n1")
    assert "routeReflectorClusterID" not in doc["spec"]["bgp"]
    assert "rr" not in (doc["metadata"].get("labels") or {})
