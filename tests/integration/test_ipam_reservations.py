"""IPReservation and IPAMConfiguration enforced by IPAM, against a real etcd.

A reserved address is never handed out by any path (auto-assign across blocks, borrowing, tunnel
addresses, an explicit address); a block wholly reserved is never claimed; allocations made before
a reservation stay and are listed. IPAMConfiguration: strictAffinity forbids borrowing (and an
explicit address in another node's block), maxBlocksPerHost caps the blocks a node claims,
autoAllocateBlocks: false stops claiming; the datastore lock stops every assignment.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from felixpy.resources.base import ResourceError
from felixpy.resources.parse import parse_document
from ipam.errors import AddressReserved, BlockLimitReached, DatastoreLocked, IPAMError, PoolExhausted
from ipam.ipam import IPAM
from ipam.tunnel import tunnel_address
from tests.integration.ipam_helpers import assert_consistent, make_node, make_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def ipam(etcd_kv: Any, etcd_backend: Any) -> IPAM:
    return IPAM(etcd_kv, etcd_backend, cache_seconds=0)


def reserve(backend: Any, name: str, *cidrs: str) -> None:
    backend.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": name},
        "spec": {"reservedCIDRs": list(cidrs)},
    }))  # fmt: skip


def ipam_config(backend: Any, **spec: Any) -> None:
    backend.apply(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"},
        "spec": spec,
    }))  # fmt: skip


def inside(addr: str, *cidrs: str) -> bool:
    return any(ipaddress.ip_address(addr) in ipaddress.ip_network(c) for c in cidrs)


def test_reserved_addresses_never_auto_assigned(ipam: IPAM, etcd_backend: Any, etcd_kv: Any) -> None:
    # a /27 pool of /28 blocks: the first block half reserved, the second wholly reserved
    make_pool(etcd_backend, "p", "10.50.0.0/27", blockSize=28)
    reserve(etcd_backend, "edge", "10.50.0.0/29", "10.50.0.16/28")
    reserve(etcd_backend, "one", "10.50.0.9")
    got = ipam.auto_assign("h1", node="n1", num_v4=7).v4
    assert len(got) == 7 and not any(inside(a, "10.50.0.0/29", "10.50.0.16/28", "10.50.0.9/32") for a in got)
    with pytest.raises(PoolExhausted):  # 16 addresses, 9 reserved: the 8th cannot be had by anyone
        ipam.auto_assign("h2", node="n2")
    assert ipam.affine_blocks("n2") == [], "a wholly reserved block is never claimed"
    # an explicit request for a reserved address is refused, naming the reservation
    with pytest.raises(AddressReserved, match="reserved by IPReservation 'one'"):
        ipam.assign_ip("10.50.0.9", "h3", node="n1")
    # releasing makes room again, still never for a reserved address
    ipam.release_ips(got[:2])
    again = ipam.auto_assign("h4", node="n2", num_v4=2).v4  # borrowed from n1's block
    assert sorted(again) == sorted(got[:2])
    assert_consistent(etcd_kv)


def test_tunnel_address_skips_reservation(ipam: IPAM, etcd_backend: Any) -> None:
    make_node(etcd_backend, "n1")
    make_pool(etcd_backend, "t", "10.51.0.0/28", blockSize=29, ipipMode="Always")
    reserve(etcd_backend, "low", "10.51.0.0/30", "10.51.0.8/29")
    addr = tunnel_address(ipam, "n1", "ipip")
    assert inside(addr, "10.51.0.4/30"), addr


def test_existing_allocations_kept_and_listed(ipam: IPAM, etcd_backend: Any) -> None:
    make_pool(etcd_backend, "p", "10.52.0.0/28", blockSize=28)
    before = ipam.auto_assign("old", node="n1", num_v4=2).v4
    reserve(etcd_backend, "late", f"{before[0]}/32")
    assert ipam.get_assignment(before[0]) is not None, "a reservation never takes an address back"
    blocks = [b for b, _ in ipam.store.list_blocks()]
    assert ipam.reservations(fresh=True).allocated_inside(blocks) == [(before[0], "late", "old")]
    ipam.release_ips([before[0]])
    nxt = ipam.auto_assign("new", node="n1", num_v4=14).v4
    assert before[0] not in nxt and len(nxt) == 14


def test_strict_affinity_and_max_blocks(ipam: IPAM, etcd_backend: Any, etcd_kv: Any) -> None:
    make_pool(etcd_backend, "p", "10.53.0.0/26", blockSize=29)  # 8 blocks of 8
    ipam.auto_assign("a", node="n1", num_v4=8)  # n1 fills its first block
    ipam_config(etcd_backend, strictAffinity=True, maxBlocksPerHost=2)
    ipam.auto_assign("b", node="n1", num_v4=8)  # a second block: allowed
    assert len(ipam.affine_blocks("n1")) == 2
    with pytest.raises(PoolExhausted, match="strictAffinity forbids borrowing"):
        ipam.auto_assign("c", node="n1")  # a third block: over maxBlocksPerHost, and no borrowing
    assert len(ipam.affine_blocks("n1")) == 2
    # an explicit address: not in another node's block, nor in a new block past the limit
    n2 = ipam.auto_assign("d", node="n2").v4[0]
    free_in_n2 = str(ipaddress.ip_address(n2) + 1)
    with pytest.raises(IPAMError, match="strictAffinity forbids"):
        ipam.assign_ip(free_in_n2, "e", node="n1")
    with pytest.raises(BlockLimitReached, match="maxBlocksPerHost"):
        ipam.assign_ip("10.53.0.60", "e", node="n1")
    assert_consistent(etcd_kv)


def test_strict_affinity_from_the_resource_stops_borrowing(ipam: IPAM, etcd_backend: Any) -> None:
    make_pool(etcd_backend, "p", "10.56.0.0/28", blockSize=29)  # two blocks
    ipam.auto_assign("a", node="n1")
    ipam.auto_assign("b", node="n2")
    ipam_config(etcd_backend, strictAffinity=True)
    with pytest.raises(PoolExhausted, match="strictAffinity forbids borrowing"):
        ipam.auto_assign("c", node="n3")
    ipam_config(etcd_backend, strictAffinity=False)
    borrowed = ipam.auto_assign("c", node="n3").v4[0]
    assert ipam.get_assignment(borrowed).affinity in ("host:n1", "host:n2")  # type: ignore[union-attr]


def test_auto_allocate_blocks_false_claims_nothing(ipam: IPAM, etcd_backend: Any) -> None:
    make_pool(etcd_backend, "p", "10.54.0.0/28", blockSize=29)
    ipam_config(etcd_backend, strictAffinity=True, autoAllocateBlocks=False)
    with pytest.raises(PoolExhausted):
        ipam.auto_assign("a", node="n1")
    assert ipam.affine_blocks("n1") == []


def test_config_rules_and_set_config(ipam: IPAM, etcd_kv: Any) -> None:
    with pytest.raises(ResourceError, match="maxBlocksPerHost can only be set with strictAffinity"):
        ipam.set_config(max_blocks_per_host=3)
    assert ipam.config().strict_affinity is False
    got = ipam.set_config(strict_affinity=True, max_blocks_per_host=3)
    assert (got.strict_affinity, got.max_blocks_per_host, got.auto_allocate_blocks) == (True, 3, True)
    assert ipam.config() == got
    assert ipam.store.get_config() == got, "mirrored into the IPAM config key Calico's tools read"


def test_locked_datastore_assigns_nothing(ipam: IPAM, etcd_backend: Any) -> None:
    make_pool(etcd_backend, "p", "10.55.0.0/26")
    etcd_backend.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation", "metadata": {"name": "default"},
        "spec": {"datastoreReady": False},
    }))  # fmt: skip
    with pytest.raises(DatastoreLocked, match="locked"):
        ipam.auto_assign("a", node="n1")
    with pytest.raises(DatastoreLocked):
        ipam.assign_ip("10.55.0.3", "b", node="n1")


def test_kubernetes_mode_reservation_config_and_lock(kube_api: Any) -> None:
    """The same enforcement over the Kubernetes datastore (stand-in API server): IPReservation,
    IPAMConfiguration and ClusterInformation as CRDs, IPAM's records over KubeKV."""
    from felixpy.datastore.kube_kv import KubeKV
    from felixpy.datastore.kubernetes import KubernetesBackend

    backend = KubernetesBackend.for_url(kube_api.url)
    ipam = IPAM(KubeKV(backend), backend, cache_seconds=0)
    make_pool(backend, "p", "10.57.0.0/28", blockSize=29)
    reserve(backend, "low", "10.57.0.0/30")
    got = ipam.auto_assign("a", node="n1", num_v4=12).v4  # 16 addresses, 4 reserved: all the others
    assert len(set(got)) == 12 and not any(inside(a, "10.57.0.0/30") for a in got)
    with pytest.raises(AddressReserved):
        ipam.assign_ip("10.57.0.1", "b", node="n1")
    ipam.release_ips(got)
    ipam.set_config(strict_affinity=True)
    with pytest.raises(PoolExhausted, match="strictAffinity forbids borrowing"):
        ipam.auto_assign("d", node="n3")  # both blocks are n1's (and n2 has none)
    backend.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "ClusterInformation", "metadata": {"name": "default"},
        "spec": {"datastoreReady": False},
    }))  # fmt: skip
    with pytest.raises(DatastoreLocked):
        ipam.auto_assign("e", node="n1")
