"""Pure parts of the datastore: endpoint parsing, key layout, error mapping, config, mark-and-sweep."""

from __future__ import annotations

import grpc
import pytest

from felixpy.datastore.config import DatastoreConfig
from felixpy.datastore.errors import Compacted, DatastoreError, Unavailable
from felixpy.datastore.etcd import Endpoint, map_rpc_error, parse_endpoints, prefix_end
from felixpy.datastore.kv import WatchEvent
from felixpy.datastore.resources import LazyResourceEvent, decode_event, encode, parse_key, resource_key
from felixpy.datastore.syncer import Backoff, diff_snapshot
from felixpy.resources import GlobalNetworkPolicy, IPPool, WorkloadEndpoint


def test_parse_endpoints_accepts_calico_forms() -> None:
    assert parse_endpoints("http://10.0.0.1:2379, https://etcd.example:4001,127.0.0.1") == [
        Endpoint(False, "10.0.0.1", 2379),
        Endpoint(True, "etcd.example", 4001),
        Endpoint(False, "127.0.0.1", 2379),
    ]
    assert parse_endpoints(["https://[::1]:2379"])[0].target == "[::1]:2379"
    for bad in ("", "ftp://x:1", ","):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_prefix_end() -> None:
    assert prefix_end(b"/calico/") == b"/calico0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"") == b"\0"


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "connection refused", Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", Unavailable),
        (grpc.StatusCode.UNKNOWN, "etcdserver: leader changed", Unavailable),
        (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", Compacted),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed", DatastoreError),
    ],
)
def test_map_rpc_error(code: grpc.StatusCode, details: str, expected: type[DatastoreError]) -> None:
    err = map_rpc_error(code, details)
    assert type(err) is expected and details in str(err)


def test_resource_keys_follow_calico_layout_and_round_trip() -> None:
    root = "/calico/resources/v3/projectcalico.org/"
    assert resource_key(IPPool, "p1") == root + "ippools/p1"
    assert (
        resource_key(WorkloadEndpoint, "n-k8s-pod-eth0", "prod")
        == root + "workloadendpoints/prod/n-k8s-pod-eth0"
    )
    assert resource_key(WorkloadEndpoint, "x") == root + "workloadendpoints/default/x"
    assert parse_key(root + "workloadendpoints/prod/w") == (WorkloadEndpoint, "prod", "w")
    assert parse_key(root + "globalnetworkpolicies/g") == (GlobalNetworkPolicy, None, "g")
    assert parse_key(root + "ippools/too/deep") is None
    assert parse_key(root + "unknownkinds/x") is None
    assert parse_key("/calico/ipam/v2/handle/x") is None
    with pytest.raises(ValueError):
        resource_key(IPPool, "a/b")


def test_encode_drops_resource_version_and_decode_event_is_lazy() -> None:
    pool = IPPool.model_validate(
        {"metadata": {"name": "p", "resourceVersion": "9"}, "spec": {"cidr": "10.0.0.0/8"}}
    )
    key, value = encode(pool)
    assert b"resourceVersion" not in value
    ev = decode_event(WatchEvent("put", key, value, 42))
    assert isinstance(ev, LazyResourceEvent) and ev.raw == value
    assert ev._model is None  # nothing parsed or validated yet
    assert ev.data is not None and ev.data["metadata"]["resourceVersion"] == "42"
    assert ev.obj is not None and ev.obj.metadata.resource_version == "42" and ev.obj is ev.obj
    gone = decode_event(WatchEvent("delete", key, b"", 43, prev_value=value))
    assert gone is not None and gone.type == "delete" and gone.obj.spec.cidr == "10.0.0.0/8"  # type: ignore[union-attr]


def _put(name: str, rev: int) -> LazyResourceEvent:
    return LazyResourceEvent("put", IPPool, name, None, None, rev)


def test_diff_snapshot_emits_only_changes_and_sweeps_vanished_keys() -> None:
    known = {(IPPool, None, "same"): 5, (IPPool, None, "changed"): 6, (IPPool, None, "gone"): 7}
    listed = [_put("same", 5), _put("changed", 9), _put("new", 10)]
    out, fresh = diff_snapshot(known, listed, revision=12)
    assert [(e.type, e.name, e.revision) for e in out] == [
        ("put", "changed", 9),
        ("put", "new", 10),
        ("delete", "gone", 12),
    ]
    assert fresh == {(IPPool, None, "same"): 5, (IPPool, None, "changed"): 9, (IPPool, None, "new"): 10}
    assert diff_snapshot(fresh, listed, revision=13)[0] == []


def test_backoff_is_exponential_and_bounded() -> None:
    b = Backoff(0.1, 1.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 50)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_config_from_env_and_file(tmp_path: object) -> None:
    cfg = DatastoreConfig.from_env(
        {
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": "http://a:1,http://b:2",
            "ETCD_CERT_FILE": "/c",
            "ETCD_KEY_FILE": "/k",
            "ETCD_CA_CERT_FILE": "/ca",
        }
    )
    assert cfg.etcd_endpoints == "http://a:1,http://b:2" and cfg.etcd_ca_cert_file == "/ca"
    assert DatastoreConfig.from_env({}).etcd_endpoints == "http://127.0.0.1:2379"
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "CalicoAPIConfig",
        "spec": {
            "datastoreType": "kubernetes",
            "kubeconfig": "/kc",
            "etcdEndpoints": ["http://x:1", "http://y:2"],
        },
    }
    cfg2 = DatastoreConfig.from_dict(doc)
    assert cfg2.datastore_type == "kubernetes" and cfg2.etcd_endpoints == "http://x:1,http://y:2"
    with pytest.raises(ValueError):
        DatastoreConfig.from_dict({"kind": "CalicoAPIConfig", "spec": {"etcdEndpoint": "typo"}})
    with pytest.raises(ValueError):
        DatastoreConfig(datastore_type="consul")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DatastoreConfig(etcd_cert_file="/only-cert")
