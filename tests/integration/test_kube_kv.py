"""IPAM's KV layer over Kubernetes custom resources, against the stand-in API server
(tests/fixtures/kubeapi.py; no real kube-apiserver can run here)."""

from __future__ import annotations

import json
import threading

import pytest

from felixpy.datastore.errors import AlreadyExists, Conflict
from felixpy.datastore.kube_kv import KEY_ANNOTATION, KubeKV, object_name
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.datastore.kv import TxnOp
from tests.fixtures.kubeapi import KubeAPI

BLOCK = "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
AFFINITY = "/calico/ipam/v2/host/node-a/ipv4/block/10.65.0.0-26"
HANDLE = "/calico/ipam/v2/handle/k8s-pod-network.abc123"


@pytest.fixture
def kv(kube_api: KubeAPI) -> KubeKV:
    return KubeKV(KubernetesBackend.for_url(kube_api.url))


def test_keys_map_to_calico_ipam_objects(kv: KubeKV, kube_api: KubeAPI) -> None:
    kv.create(BLOCK, json.dumps({"cidr": "10.65.0.0/26", "affinity": "host:node-a"}).encode())
    kv.create(AFFINITY, b'{"state":"confirmed"}')
    kv.create(HANDLE, b'{"block":{"10.65.0.0/26":1}}')
    block = kube_api.store.get("ipamblocks.crd.projectcalico.org", None, "10-65-0-0-26")
    assert block["kind"] == "IPAMBlock" and block["spec"]["affinity"] == "host:node-a"
    assert block["metadata"]["annotations"][KEY_ANNOTATION] == BLOCK
    assert object_name(AFFINITY) == "node-a-10-65-0-0-26"
    assert object_name(HANDLE) == "k8s-pod-network.abc123"
    assert object_name("/calico/ipam/v2/handle/Odd_Name").startswith("odd-name-")
    kvs, rev = kv.list("/calico/ipam/v2/")
    assert [k.key for k in kvs] == sorted([BLOCK, AFFINITY, HANDLE]) and rev > 0
    assert [k.key for k in kv.list("/calico/ipam/v2/host/node-a/")[0]] == [AFFINITY]
    assert json.loads(kv.get(HANDLE).value) == {"block": {"10.65.0.0/26": 1}}


def test_compare_and_swap_on_resource_version(kv: KubeKV) -> None:
    rev = kv.create(HANDLE, b'{"n":1}')
    with pytest.raises(AlreadyExists):
        kv.create(HANDLE, b'{"n":2}')
    rev2 = kv.update(HANDLE, b'{"n":2}', rev)
    with pytest.raises(Conflict):
        kv.update(HANDLE, b'{"n":3}', rev)
    with pytest.raises(Conflict):
        kv.delete(HANDLE, rev)
    assert json.loads(kv.get(HANDLE).value) == {"n": 2}
    kv.delete(HANDLE, rev2)
    assert kv.get(HANDLE) is None


def test_failed_transaction_is_rolled_back(kv: KubeKV) -> None:
    kv.create(BLOCK, b'{"cidr":"10.65.0.0/26"}')
    with pytest.raises(Conflict):
        kv.txn([TxnOp("create", AFFINITY, b'{"state":"confirmed"}'), TxnOp("create", BLOCK, b"{}")])
    assert kv.get(AFFINITY) is None, "the affinity written before the conflict is undone"
    assert json.loads(kv.get(BLOCK).value) == {"cidr": "10.65.0.0/26"}


def test_concurrent_increments_never_lose_an_update(kv: KubeKV) -> None:
    kv.create(HANDLE, b'{"n":0}')

    def bump() -> None:
        for _ in range(20):
            for _attempt in range(200):
                cur = kv.get(HANDLE)
                n = json.loads(cur.value)["n"]
                try:
                    kv.update(HANDLE, json.dumps({"n": n + 1}).encode(), cur.mod_revision)
                    break
                except Conflict:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert json.loads(kv.get(HANDLE).value)["n"] == 80


def test_watch_streams_affinity_changes_and_resumes(kv: KubeKV, kube_api: KubeAPI) -> None:
    """The agent's affinity watcher streams IPAM objects from the (stand-in) API instead of re-listing."""
    _, rev = kv.list("/calico/ipam/v2/host/")
    got: list[tuple[str, str]] = []
    done = threading.Event()

    def consume() -> None:
        for batch in kv.watch("/calico/ipam/v2/host/node-a/", rev + 1):
            got.extend((e.type, e.key) for e in batch)
            if len(got) >= 2:
                done.set()
                return

    threading.Thread(target=consume, daemon=True).start()
    kv.create("/calico/ipam/v2/host/node-b/ipv4/block/10.65.1.0-26", b'{"state":"confirmed"}')  # filtered
    kv.create(AFFINITY, b'{"state":"confirmed"}')
    kube_api.store.drop_watches()  # the stream ends; the watch resumes from the last revision
    kv.delete(AFFINITY)
    assert done.wait(10), got
    assert got == [("put", AFFINITY), ("delete", AFFINITY)]
