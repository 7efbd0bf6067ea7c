"""Pure block arithmetic and transitions, with hypothesis properties."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ipam.block import Attribute, Block, Handle

NET = ipaddress.ip_network("10.1.2.0/26")


def test_new_block_is_all_free_in_order() -> None:
    b = Block.new(NET, affinity="host:n1")
    assert b.size == 64 and b.free_count == 64 and b.is_empty
    assert b.unallocated == tuple(range(64))
    assert b.affine_node() == "n1"


def test_ordinal_address_round_trip_v4_and_v6() -> None:
    b = Block.new(NET, affinity=None)
    assert str(b.address(0)) == "10.1.2.0" and str(b.address(63)) == "10.1.2.63"
    assert b.ordinal("10.1.2.37") == 37
    b6 = Block.new(ipaddress.ip_network("fd00::/122"), affinity=None)
    assert b6.size == 64 and str(b6.address(5)) == "fd00::5" and b6.ordinal("fd00::3f") == 63


def test_ordinal_outside_block_refused() -> None:
    b = Block.new(NET, affinity=None)
    for bad in ("10.1.2.64", "fd00::1"):
        try:
            b.ordinal(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_assign_pops_head_and_release_appends_tail() -> None:
    b = Block.new(NET, affinity="host:n1")
    b1, ords = b.assign(3, "h1", {"pod": "a"})
    assert ords == [0, 1, 2] and b1.unallocated[0] == 3
    assert b.free_count == 64, "the input block must not change"
    b2, released = b1.release([1])
    assert released == {"h1": 1}
    assert b2.unallocated[-1] == 1 and b2.allocations[1] is None
    b3, ords2 = b2.assign(61, "h2")
    assert 1 not in ords2, "a released ordinal is reused last"
    b4, ords3 = b3.assign(5, "h3")
    assert ords3 == [1]
    assert b4.free_count == 0


def test_attributes_shared_and_compacted() -> None:
    b = Block.new(NET, affinity=None)
    b, _ = b.assign(2, "h1", {"pod": "a"})
    b, _ = b.assign(1, "h2", {"pod": "b"})
    b, _ = b.assign(1, "h1", {"pod": "a"})
    assert len(b.attributes) == 2 and b.allocations[:4] == (0, 0, 1, 0)
    b, rel = b.release_handle("h1")
    assert rel == 3
    assert b.attributes == (Attribute("h2", {"pod": "b"}),) and b.allocations[2] == 0


def test_release_of_free_address_is_a_no_op() -> None:
    b = Block.new(NET, affinity=None)
    b2, rel = b.release([5])
    assert rel == {} and b2 is b


def test_json_round_trip_uses_calico_field_names() -> None:
    b, _ = Block.new(NET, affinity="host:n1", sequence_number=7).assign(2, "h", {"node": "n1"})
    doc = json.loads(json.dumps(b.to_json()))
    assert doc["cidr"] == "10.1.2.0/26" and doc["affinity"] == "host:n1"
    assert doc["allocations"][:3] == [0, 0, None] and doc["unallocated"][0] == 2
    assert doc["attributes"] == [{"handle_id": "h", "secondary": {"node": "n1"}}]
    assert doc["sequenceNumber"] == 8 and doc["sequenceNumberForAllocation"] == {"0": 8, "1": 8}
    assert doc["deleted"] is False
    assert Block.from_json(doc) == b


def test_handle_counts() -> None:
    h = Handle("h").add("10.0.0.0/26", 2).add("10.0.0.64/26", 1)
    assert h.total == 3
    h = h.remove("10.0.0.0/26", 2)
    assert dict(h.blocks) == {"10.0.0.64/26": 1}
    assert Handle.from_json("h", h.to_json()) == h
    assert h.to_json() == {"block": {"10.0.0.64/26": 1}, "deleted": False}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.integers(1, 10), st.sampled_from(["a", "b", "c", "d"])),
        st.tuples(st.just("release_handle"), st.just(0), st.sampled_from(["a", "b", "c", "d"])),
        st.tuples(st.just("release_ord"), st.integers(0, 63), st.just("")),
    ),
    max_size=60,
)


def _check_invariants(b: Block, owners: dict[int, str]) -> None:
    free = set(b.unallocated)
    assert len(free) == len(b.unallocated), "an ordinal is free twice"
    for o, idx in enumerate(b.allocations):
        assert (idx is None) == (o in free), f"ordinal {o}: bitmap and free list disagree"
        if idx is not None:
            assert b.attributes[idx].handle_id == owners[o]
    assert set(owners) == {o for o, i in enumerate(b.allocations) if i is not None}
    referenced = {i for i in b.allocations if i is not None}
    assert referenced == set(range(len(b.attributes))), "unreferenced or dangling attribute"
    counts: dict[str, int] = {}
    for h in owners.values():
        counts[h] = counts.get(h, 0) + 1
    assert b.handle_counts() == counts


@settings(max_examples=300, deadline=None)
@given(ops)
def test_property_no_address_twice_and_bitmap_matches_handles(seq: list[tuple[str, int, str]]) -> None:
    b = Block.new(NET, affinity="host:n")
    owners: dict[int, str] = {}
    for op, n, h in seq:
        if op == "assign":
            b, got = b.assign(n, h, {"h": h})
            assert not set(got) & set(owners), "ordinal handed out twice"
            assert len(got) == min(n, 64 - len(owners))
            owners.update(dict.fromkeys(got, h))
        elif op == "release_handle":
            b, count = b.release_handle(h)
            mine = [o for o, x in owners.items() if x == h]
            assert count == len(mine)
            for o in mine:
                del owners[o]
        else:
            b, rel = b.release([n])
            assert rel == ({owners.pop(n): 1} if n in owners else {})
        _check_invariants(b, owners)
        assert Block.from_json(json.loads(json.dumps(b.to_json()))) == b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 63), unique=True, min_size=1, max_size=64))
def test_property_release_then_assign_returns_released_last(released: list[int]) -> None:
    b, _ = Block.new(NET, affinity=None).assign(64, "h")
    b, rel = b.release(released)
    assert rel == {"h": len(released)}
    assert b.unallocated == tuple(released), "released ordinals queue in release order"
    b2, got = b.assign(len(released), "h2")
    assert got == released and b2.free_count == 0
