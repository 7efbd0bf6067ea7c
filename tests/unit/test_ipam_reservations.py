"""The pure parts of IPReservation / IPAMConfiguration enforcement, ipam split and felixctl convert."""

from __future__ import annotations

import ipaddress

import pytest

from felixpy.resources.base import ResourceError
from felixpy.resources.convert import ConvertError, convert, k8s_selector
from felixpy.resources.parse import parse_document
from ipam.block import Block
from ipam.errors import PoolCheckError
from ipam.pools import split_cidr
from ipam.reservations import Reservations

NET = ipaddress.ip_network


def test_reserved_ordinals_of_a_block() -> None:
    r = Reservations.of([("a", "10.0.0.0/30"), ("b", "10.0.0.9"), ("c", "10.0.1.0/24"), ("v6", "fd00::/120")])
    assert r.ordinals(NET("10.0.0.0/28")) == frozenset({0, 1, 2, 3, 9})
    assert r.ordinals(NET("10.0.1.16/28")) == frozenset(range(16))
    assert r.wholly_reserved(NET("10.0.1.16/28")) and not r.wholly_reserved(NET("10.0.0.0/28"))
    assert r.ordinals(NET("10.0.2.0/28")) == frozenset()
    assert r.ordinals(NET("fd00::40/122")) == frozenset(range(64))
    # a reservation larger than the block, starting before it
    assert Reservations.of([("big", "10.0.0.0/8")]).ordinals(NET("10.9.0.64/26")) == frozenset(range(64))
    hit = r.reserving("10.0.0.9")
    assert hit is not None and hit.name == "b"
    assert r.reserving("10.0.0.10") is None and r.reserving("fd00::1") is not None
    assert not Reservations() and r


def test_block_assign_skips_reserved_ordinals_in_place() -> None:
    b = Block.new(NET("10.0.0.0/29"), affinity="host:n1")
    new, got = b.assign(3, "h", skip=frozenset({0, 1, 3}))
    assert got == [2, 4, 5]
    assert new.unallocated == (0, 1, 3, 6, 7), "reserved ordinals stay free, in their place"
    newer, more = new.assign(5, "h2", skip=frozenset({0, 1, 3}))
    assert more == [6, 7]
    _, none = newer.assign(1, "h3", skip=frozenset({0, 1, 3}))
    assert none == []


def test_allocated_inside_lists_existing_allocations() -> None:
    b = Block.new(NET("10.0.0.0/29"), affinity="host:n1")
    b, _ = b.assign(3, "old")
    r = Reservations.of([("late", "10.0.0.1/32")])
    assert r.allocated_inside([b]) == [("10.0.0.1", "late", "old")]


def test_split_cidr() -> None:
    quarters = ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"]
    assert split_cidr("10.0.0.0/24", 4, 26) == quarters
    assert split_cidr("fd00::/112", 2, 122) == ["fd00::/113", "fd00::8000/113"]
    for parts, block, message in (
        (3, 26, "power of 2"),
        (1, 26, "power of 2"),
        (0, 26, "power of 2"),
        (8, 26, "smaller than the pool's blockSize /26"),
    ):
        with pytest.raises(PoolCheckError, match=message):
            split_cidr("10.0.0.0/24", parts, block)
    with pytest.raises(PoolCheckError, match="not large enough"):
        split_cidr("10.0.0.0/31", 4, 32)


def _ipam_config(**spec: object) -> object:
    return parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"},
        "spec": spec,
    })  # fmt: skip


def test_ipam_configuration_rules() -> None:
    spec = _ipam_config().spec  # type: ignore[attr-defined]
    assert (spec.strict_affinity, spec.auto_allocate_blocks, spec.max_blocks_per_host) == (False, True, 0)
    _ipam_config(strictAffinity=True, maxBlocksPerHost=4, autoAllocateBlocks=False)
    with pytest.raises(ResourceError, match=r"field 'spec\.maxBlocksPerHost': maxBlocksPerHost can only be"):
        _ipam_config(maxBlocksPerHost=4)
    with pytest.raises(ResourceError, match="strictAffinity and autoAllocateBlocks cannot both be false"):
        _ipam_config(autoAllocateBlocks=False)
    with pytest.raises(ResourceError, match="must be 'default'"):
        parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                        "metadata": {"name": "other"}})  # fmt: skip


def test_k8s_selectors_as_calico_writes_them() -> None:
    sel = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
        ],
    }
    assert k8s_selector(sel, pods=True, where="s") == (
        "projectcalico.org/orchestrator == 'k8s' && a == '1' && b == '2' && tier in { 'web', 'api' } && "
        "env not in { 'dev' } && has(x) && ! has(y)"
    )
    assert k8s_selector({}, pods=False, where="s") == "all()"
    assert k8s_selector({}, pods=True, where="s") == "projectcalico.org/orchestrator == 'k8s'"
    with pytest.raises(ConvertError, match=r"s\.matchExpressions\[0\]\.operator"):
        k8s_selector({"matchExpressions": [{"key": "k", "operator": "Near"}]}, pods=True, where="s")


def test_k8s_policy_types_and_egress() -> None:
    doc = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "e"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    }  # fmt: skip
    out = convert(doc)
    assert out["metadata"] == {"name": "knp.default.e", "namespace": "default"}
    assert out["spec"]["types"] == ["Ingress", "Egress"]
    assert out["spec"]["egress"] == [{"action": "Allow", "destination": {"nets": ["0.0.0.0/0"]}}]
    parse_document(out)  # a valid Calico NetworkPolicy
    deny_all = convert({**doc, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    assert deny_all["spec"]["ingress"] == [] and deny_all["spec"]["types"] == ["Ingress"]


def test_v3_passes_through_and_unknown_is_named() -> None:
    v3 = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}, "spec": {}}
    assert convert(v3) is v3
    with pytest.raises(ConvertError, match="field 'apiVersion'"):
        convert({"apiVersion": "apps/v1", "kind": "Deployment"})
    with pytest.raises(ConvertError, match=r"field 'metadata\.cidr'"):
        convert({"apiVersion": "v1", "kind": "ipPool", "metadata": {}})
    with pytest.raises(ConvertError, match=r"field 'spec\.ipip\.mode': unknown mode 'sometimes'"):
        convert({"apiVersion": "v1", "kind": "ipPool", "metadata": {"cidr": "10.0.0.0/16"},
                 "spec": {"ipip": {"enabled": True, "mode": "sometimes"}}})  # fmt: skip
    with pytest.raises(ConvertError, match="a resource must be a mapping"):
        convert(["x"])


def test_cni_error_codes_for_the_new_refusals() -> None:
    from ipam import errors
    from ipam.plugin import map_exception

    locked = map_exception(errors.DatastoreLocked("the datastore is locked"))
    assert (locked.code, locked.details) == (11, "the datastore is locked")
    reserved = map_exception(errors.AddressReserved("10.0.0.1 is reserved by IPReservation 'gw'"))
    assert reserved.code == 999 and "reserved by IPReservation 'gw'" in reserved.details
    assert map_exception(errors.BlockLimitReached("at maxBlocksPerHost")).code == 100
