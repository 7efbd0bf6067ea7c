"""IPAM against a real etcd: assignment, claiming, borrowing, exhaustion, release, GC, tunnels."""

from __future__ import annotations

import json

import pytest

from felixpy.resources.node import Node
from ipam.allocator import IPAMConfig
from ipam.errors import (
    AddressInUse,
    BlockNotEmpty,
    HandleExists,
    NodeNotFound,
    NodeStillExists,
    NoUsablePool,
    PoolExhausted,
)
from ipam.ipam import IPAM
from ipam.store import affinity_key, block_key
from ipam.tunnel import tunnel_address
from tests.integration.ipam_helpers import assert_consistent, in_net, make_node, make_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def ipam(etcd_kv, etcd_backend) -> IPAM:
    return IPAM(etcd_kv, etcd_backend, cache_seconds=0)


def test_first_assign_claims_block_and_affinity_atomically(ipam, etcd_kv, etcd_backend) -> None:
    make_pool(etcd_backend, "p", "10.10.0.0/24")
    r = ipam.auto_assign("k8s-pod-network.c1", node="n1", attrs={"pod": "a"})
    assert len(r.v4) == 1 and r.v6 == []
    block = r.blocks[r.v4[0]]
    assert in_net(r.v4[0], block) and block.endswith("/26")
    assert r.with_block_mask(r.v4[0]) == f"{r.v4[0]}/26"
    assert ipam.affine_blocks("n1") == [block]
    import ipaddress

    net = ipaddress.ip_network(block)
    doc = json.loads(etcd_kv.get(block_key(net)).value)
    assert doc["affinity"] == "host:n1" and doc["attributes"][0]["handle_id"] == "k8s-pod-network.c1"
    assert json.loads(etcd_kv.get(affinity_key("n1", net)).value)["state"] == "confirmed"
    assert etcd_kv.get("/calico/ipam/v2/handle/k8s-pod-network.c1") is not None
    a = ipam.get_assignment(r.v4[0])
    assert a is not None and a.handle_id == "k8s-pod-network.c1" and a.attrs == {"pod": "a"}
    assert ipam.assignments_for_handle("k8s-pod-network.c1") == r.v4
    assert_consistent(etcd_kv)


def test_second_assign_reuses_affine_block_then_claims_next(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "p", "10.10.0.0/24", blockSize=28)
    r1 = ipam.auto_assign("h1", node="n1", num_v4=10)
    r2 = ipam.auto_assign("h2", node="n1", num_v4=10)
    blocks = {r1.blocks[a] for a in r1.v4} | {r2.blocks[a] for a in r2.v4}
    assert len(blocks) == 2 and sorted(ipam.affine_blocks("n1")) == sorted(blocks)
    assert len(set(r1.v4 + r2.v4)) == 20
    assert_consistent(etcd_kv)


def test_dual_stack_and_release_by_handle(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "v4", "10.10.0.0/24")
    make_pool(etcd_backend, "v6", "fd00:10::/120")
    r = ipam.auto_assign("h", node="n1", num_v4=1, num_v6=1)
    assert len(r.v4) == 1 and len(r.v6) == 1 and r.blocks[r.v6[0]].endswith("/122")
    assert sorted(ipam.release_by_handle("h")) == sorted(r.v4 + r.v6)
    assert ipam.assignments_for_handle("h") == []
    assert etcd_kv.get("/calico/ipam/v2/handle/h") is None
    assert ipam.release_by_handle("h") == [], "releasing twice is not an error"
    assert ipam.get_assignment(r.v4[0]) is None
    assert_consistent(etcd_kv)


def test_new_handle_assigns_unread_and_a_repeat_changes_nothing(ipam, etcd_backend, etcd_kv) -> None:
    """A CNI ADD assigns with ``new_handle=True`` (no handle read first); a repeated ADD of the same
    container gets HandleExists and its one address stays its only one. Dual stack: the IPv6 step
    adds to the handle the IPv4 step just created."""
    make_pool(etcd_backend, "v4", "10.10.0.0/24")
    make_pool(etcd_backend, "v6", "fd00:10::/120")
    r = ipam.auto_assign("k8s-pod-network.n1", node="n1", num_v4=1, num_v6=1, new_handle=True)
    assert len(r.v4) == 1 and len(r.v6) == 1
    with pytest.raises(HandleExists):
        ipam.auto_assign("k8s-pod-network.n1", node="n1", num_v4=1, num_v6=1, new_handle=True)
    assert ipam.assignments_for_handle("k8s-pod-network.n1") == r.v4 + r.v6
    fresh = IPAM(etcd_kv, etcd_backend, cache_seconds=0)  # another agent: no cached block either
    with pytest.raises(HandleExists):
        fresh.auto_assign("k8s-pod-network.n1", node="n1", new_handle=True)
    assert ipam.assignments_for_handle("k8s-pod-network.n1") == r.v4 + r.v6
    assert_consistent(etcd_kv)


def test_full_pool_raises_pool_exhausted_and_keeps_nothing(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "tiny", "10.20.0.0/28", blockSize=29)
    got = ipam.auto_assign("a", node="n1", num_v4=8).v4 + ipam.auto_assign("b", node="n2", num_v4=8).v4
    assert len(set(got)) == 16
    with pytest.raises(PoolExhausted, match="no free IPv4 address for node 'n3'"):
        ipam.auto_assign("c", node="n3")
    with pytest.raises(PoolExhausted):
        ipam.auto_assign("d", node="n1", num_v4=1)
    ipam.release_ips([got[0]])
    with pytest.raises(PoolExhausted, match="needed 2, found 1"):
        ipam.auto_assign("e", node="n3", num_v4=2)
    assert ipam.assignments_for_handle("e") == [], "a failed request keeps nothing"
    owner = assert_consistent(etcd_kv)
    assert len(owner) == 15


def test_borrowing_when_no_free_block_unless_strict(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "p", "10.30.0.0/27", blockSize=28)
    ipam.auto_assign("a", node="n1", num_v4=1)
    ipam.auto_assign("b", node="n2", num_v4=1)
    r = ipam.auto_assign("c", node="n3", num_v4=3)
    for addr in r.v4:
        blk = ipam.get_assignment(addr)
        assert blk is not None and blk.affinity in ("host:n1", "host:n2"), "borrowed from another node"
    assert ipam.affine_blocks("n3") == []
    etcd_kv.put("/calico/ipam/v2/config", json.dumps(IPAMConfig(strict_affinity=True).to_json()).encode())
    with pytest.raises(PoolExhausted, match="strictAffinity"):
        ipam.auto_assign("d", node="n3")
    assert_consistent(etcd_kv)


def test_pool_selection_disabled_selector_and_allowed_uses(ipam, etcd_backend) -> None:
    make_node(etcd_backend, "n1", {"rack": "r1"})
    make_pool(etcd_backend, "off", "10.40.0.0/24", disabled=True)
    make_pool(etcd_backend, "r2", "10.41.0.0/24", nodeSelector="rack == 'r2'")
    make_pool(etcd_backend, "r1", "10.42.0.0/24", nodeSelector="rack == 'r1'")
    make_pool(etcd_backend, "lb", "10.43.0.0/24", allowedUses=["LoadBalancer"])
    r = ipam.auto_assign("h", node="n1")
    assert in_net(r.v4[0], "10.42.0.0/24")
    with pytest.raises(NoUsablePool):
        ipam.auto_assign("h2", node="n1", pools=["off"])
    with pytest.raises(NoUsablePool):
        ipam.auto_assign("h3", node="n9")


def test_assign_ip_and_conflicts(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "p", "10.50.0.0/24")
    assert ipam.assign_ip("10.50.0.77", "h1", {"pod": "x"}, node="n1") == "10.50.0.64/26"
    with pytest.raises(AddressInUse, match="handle h1"):
        ipam.assign_ip("10.50.0.77", "h2", node="n1")
    assert ipam.affine_blocks("n1") == ["10.50.0.64/26"]
    r = ipam.auto_assign("h3", node="n1")
    assert r.v4 != ["10.50.0.77"] and in_net(r.v4[0], "10.50.0.64/26")
    assert ipam.release_ips(["10.50.0.77", "10.50.0.78"]) == ["10.50.0.77"]
    assert_consistent(etcd_kv)


def test_release_affinity_and_gc_node(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "p", "10.60.0.0/24", blockSize=28)
    make_node(etcd_backend, "gone")
    r = ipam.auto_assign("pod1", node="gone", num_v4=2, attrs={"node": "gone"})
    borrowed_block = r.blocks[r.v4[0]]
    other = ipam.assign_ip(
        str(__import__("ipaddress").ip_network(borrowed_block)[5]), "other", {"node": "n2"}, node="n2"
    )
    assert other == borrowed_block
    with pytest.raises(BlockNotEmpty):
        ipam.release_affinity(borrowed_block, "gone")
    with pytest.raises(NodeStillExists):
        ipam.gc_node("gone")
    etcd_backend.delete(Node, "gone")
    res = ipam.gc_node("gone")
    assert sorted(res.released) == sorted(r.v4) and res.blocks == [borrowed_block]
    assert ipam.affine_blocks("gone") == []
    a = ipam.get_assignment(str(__import__("ipaddress").ip_network(borrowed_block)[5]))
    assert a is not None and a.handle_id == "other" and a.affinity is None, "others' addresses survive GC"
    ipam.release_by_handle("other")
    assert etcd_kv.list("/calico/ipam/v2/assignment/")[0] == [], "an un-owned empty block is deleted"
    assert_consistent(etcd_kv)


def test_tunnel_address_recorded_on_node_and_stable(ipam, etcd_backend, etcd_kv) -> None:
    make_pool(etcd_backend, "plain", "10.70.0.0/24")
    make_pool(etcd_backend, "ipip", "10.71.0.0/24", ipipMode="Always")
    make_pool(etcd_backend, "vx", "10.72.0.0/24", vxlanMode="Always")
    make_node(etcd_backend, "n1")
    a = tunnel_address(ipam, "n1", "ipip")
    assert in_net(a, "10.71.0.0/24")
    assert tunnel_address(ipam, "n1", "ipip") == a, "idempotent"
    node = etcd_backend.get(Node, "n1")
    assert node.spec.bgp.ipv4_ipip_tunnel_addr == a
    v = tunnel_address(ipam, "n1", "vxlan")
    assert in_net(v, "10.72.0.0/24") and etcd_backend.get(Node, "n1").spec.ipv4_vxlan_tunnel_addr == v
    got = ipam.get_assignment(a)
    assert got.handle_id == "ipip-tunnel-addr-n1" and got.attrs["type"] == "ipipTunnelAddress"
    with pytest.raises(NodeNotFound):
        tunnel_address(ipam, "nope", "ipip")
    assert_consistent(etcd_kv)
