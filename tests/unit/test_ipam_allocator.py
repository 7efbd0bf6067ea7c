"""Pure allocation decisions: pool filtering, candidate blocks, borrowing order, pool checks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felixpy.resources.ippool import IPPool
from ipam import allocator
from ipam.allocator import IPAMConfig, PoolView
from ipam.block import Block
from ipam.errors import NoUsablePool, PoolImmutableField, PoolInUse, PoolNotFound, PoolOverlap
from ipam.pool_selectors import matches
from ipam.pools import check_pool_create, check_pool_delete, check_pool_update, pool_view


def pv(name: str, cidr: str, bs: int = 26, **kw: object) -> PoolView:
    return PoolView(name, ipaddress.ip_network(cidr), bs, **kw)  # type: ignore[arg-type]


def pool(name: str, cidr: str, **spec: object) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def test_candidate_blocks_cover_pool_once_from_host_seeded_start() -> None:
    p = pv("p", "10.0.0.0/22")
    a = list(allocator.candidate_blocks(p, "node-a"))
    assert len(a) == 16 and len(set(a)) == 16
    assert all(c.prefixlen == 26 and c.subnet_of(p.cidr) for c in a)
    assert a[0] == allocator.block_at(p, allocator.host_start_index("node-a", 16))
    assert a == list(allocator.candidate_blocks(p, "node-a")), "deterministic per host"
    starts = {next(allocator.candidate_blocks(p, f"n{i}")) for i in range(20)}
    assert len(starts) > 5, "different hosts start at different blocks"


@given(st.integers(16, 30), st.integers(0, 3), st.text(min_size=1, max_size=20))
def test_property_block_at_and_block_for_address_agree(plen: int, extra: int, host: str) -> None:
    bs = min(plen + extra, 32)
    p = pv("p", f"10.0.0.0/{plen}", bs)
    idx = allocator.host_start_index(host, allocator.block_count(p))
    cidr = allocator.block_at(p, idx)
    assert allocator.block_for_address(p, cidr.network_address + (cidr.num_addresses - 1)) == cidr


def test_first_free_candidate_skips_existing() -> None:
    p = pv("p", "10.0.0.0/25")
    both = {"10.0.0.0/26", "10.0.0.64/26"}
    assert allocator.first_free_candidate(p, "x", both) is None
    assert str(allocator.first_free_candidate(p, "x", {"10.0.0.0/26"})) == "10.0.0.64/26"


def test_usable_pools_filters_disabled_selector_use_version() -> None:
    pools = [
        pv("dis", "10.0.0.0/24", disabled=True),
        pv("rack1", "10.1.0.0/24", node_selector="rack == 'r1'"),
        pv("tun", "10.2.0.0/24", allowed_uses=("Tunnel",)),
        pv("v6", "fd00::/120", 122),
        pv("all", "10.3.0.0/24"),
    ]
    got = allocator.usable_pools(
        pools, version=4, node_labels={"rack": "r1"}, intended_use="Workload", requested=None, matcher=matches
    )
    assert [p.name for p in got] == ["rack1", "all"]
    got = allocator.usable_pools(
        pools, version=4, node_labels={}, intended_use="Tunnel", requested=["10.2.0.0/24"], matcher=matches
    )
    assert [p.name for p in got] == ["tun"]
    with pytest.raises(PoolNotFound, match=r"10\.9\.0\.0/24"):
        allocator.usable_pools(
            pools,
            version=4,
            node_labels={},
            intended_use="Workload",
            requested=["10.9.0.0/24"],
            matcher=matches,
        )
    mixed = allocator.usable_pools(
        pools, version=6, node_labels={}, intended_use="Workload", requested=["10.3.0.0/24"], matcher=matches
    )
    assert [p.name for p in mixed] == ["v6"], "a v4-only request leaves every v6 pool a candidate"
    with pytest.raises(NoUsablePool, match="IPv4"):
        allocator.usable_pools(
            pools, version=4, node_labels={}, intended_use="Workload", requested=["dis"], matcher=matches
        )


def test_borrow_order_skips_own_full_and_foreign_pool_blocks() -> None:
    p = pv("p", "10.0.0.0/24")
    own = Block.new(ipaddress.ip_network("10.0.0.0/26"), affinity="host:me")
    full, _ = Block.new(ipaddress.ip_network("10.0.0.64/26"), affinity="host:b").assign(64, "h")
    roomy, _ = Block.new(ipaddress.ip_network("10.0.0.128/26"), affinity="host:b").assign(10, "h")
    emptier = Block.new(ipaddress.ip_network("10.0.0.192/26"), affinity="host:c")
    outside = Block.new(ipaddress.ip_network("10.9.0.0/26"), affinity="host:c")
    order = allocator.borrow_order([own, full, roomy, emptier, outside], "me", [p])
    assert [str(b.cidr) for b in order] == ["10.0.0.192/26", "10.0.0.128/26"]


def test_config_json_names_and_defaults() -> None:
    c = IPAMConfig.from_json({"strict_affinity": True, "maxBlocksPerHost": 4})
    assert c.strict_affinity and c.auto_allocate_blocks and c.block_limit == 4
    # Calico: the per-host block limit only binds with strict affinity (default 20 there).
    assert IPAMConfig().block_limit is None
    assert IPAMConfig(strict_affinity=True).block_limit == allocator.DEFAULT_MAX_BLOCKS_PER_HOST
    assert IPAMConfig(max_blocks_per_host=3).block_limit == 3
    assert IPAMConfig.from_json(c.to_json()) == c


def test_selector_fallback_and_real_parser_agree_on_simple_terms() -> None:
    assert matches("all()", {}) and matches("", {"a": "b"})
    assert matches("zone == 'a' && has(ssd)", {"zone": "a", "ssd": ""})
    assert not matches("zone == 'a' && has(ssd)", {"zone": "a"})
    assert matches("zone != 'a'", {"zone": "b"})


def test_pool_view_defaults_block_size() -> None:
    assert pool_view(pool("a", "10.0.0.0/16")).block_size == 26
    assert pool_view(pool("b", "fd00::/64")).block_size == 122


def test_check_pool_create_refuses_overlap() -> None:
    existing = [pool("a", "10.0.0.0/16"), pool("b", "fd00::/64")]
    with pytest.raises(PoolOverlap, match="overlaps IPPool 'a'"):
        check_pool_create(existing, pool("c", "10.0.128.0/20"))
    check_pool_create(existing, pool("c", "10.1.0.0/16"))
    check_pool_create(existing, pool("a", "10.0.0.0/16", disabled=True))  # same name = replace


def test_check_pool_update_immutable_when_in_use() -> None:
    old = pool("a", "10.0.0.0/16")
    with pytest.raises(PoolImmutableField, match="blockSize cannot change from 26 to 24"):
        check_pool_update([old], old, pool("a", "10.0.0.0/16", blockSize=24), in_use=3)
    with pytest.raises(PoolImmutableField, match="cidr"):
        check_pool_update([old], old, pool("a", "10.0.0.0/15"), in_use=1)
    check_pool_update([old], old, pool("a", "10.0.0.0/16", blockSize=24), in_use=0)
    check_pool_update([old], old, pool("a", "10.0.0.0/16", disabled=True), in_use=9)


def test_check_pool_delete_needs_disable_first() -> None:
    with pytest.raises(PoolInUse, match="has 5 address"):
        check_pool_delete(pool("a", "10.0.0.0/16"), in_use=5)
    check_pool_delete(pool("a", "10.0.0.0/16", disabled=True), in_use=5)
    check_pool_delete(pool("a", "10.0.0.0/16"), in_use=0)
