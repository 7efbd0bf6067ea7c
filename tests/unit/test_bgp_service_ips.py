"""Service IP advertisement (BGPConfiguration serviceClusterIPs / serviceExternalIPs /
serviceLoadBalancerIPs), as Calico does it: every node originates the configured ranges with next
hop self, only the ``default`` BGPConfiguration counts, ``prefixAdvertisements`` communities and
BGPFilter export rules apply, a node labelled ``exclude-from-external-load-balancers=true`` keeps
quiet, and no node imports anything inside those ranges."""

from __future__ import annotations

from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp.engine import Engine
from bgp.fib import Fib
from bgp.filters import EXCLUDE_LABEL, ImportPolicy, PoolInfo, prefix_reason, service_cidrs
from bgp.reflect import NEXT_HOP_SELF
from bgp.route import PathAttrs
from bgp.service import build_plan
from felixpy.resources import ResourceError
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec
from felixpy.resources.parse import parse_document
from tests.unit.test_bgp_engine import MemoryRoutes

V3 = "projectcalico.org/v3"
TOR = "192.0.2.1"
POOLS = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16"))]
SERVICES = {
    "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/112"}],
    "serviceExternalIPs": [{"cidr": "203.0.113.0/24"}, {"cidr": "198.51.100.7/32"}],
    "serviceLoadBalancerIPs": [{"cidr": "192.0.2.128/25"}],
}
V4_RANGES = ["10.96.0.0/12", "192.0.2.128/25", "198.51.100.7/32", "203.0.113.0/24"]


def document(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return parse_document({"apiVersion": V3, "kind": kind, "metadata": {"name": name}, "spec": spec})


def config(name: str = "default", **spec: Any) -> BGPConfiguration:
    obj = document("BGPConfiguration", name, spec)
    assert isinstance(obj, BGPConfiguration)
    return obj


def node(name: str, ip: str, **labels: str) -> Node:
    bgp = NodeBGPSpec(ipv4_address=f"{ip}/24")
    return Node(metadata=ObjectMeta(name=name, labels=labels), spec=NodeSpec(bgp=bgp))


NODES = [node("a", "10.0.0.1"), node("b", "10.0.0.2")]


def exports(configs: list[BGPConfiguration], *, nodes: list[Node] = NODES, pools: list[IPPool] = POOLS,
            blocks: tuple[str, ...] = ("10.65.0.0/26",)) -> dict[str, PathAttrs]:  # fmt: skip
    plan = build_plan("a", nodes=nodes, bgp_configs=configs, peers=[], pools=pools, local_blocks=blocks)
    return plan.desired.exports


# --- what a node originates -----------------------------------------------------------------------
def test_every_configured_range_is_exported_next_to_the_blocks() -> None:
    out = exports([config(**SERVICES)])
    assert sorted(out) == sorted(["10.65.0.0/26", *V4_RANGES, "fd00:96::/112"])
    assert out["10.96.0.0/12"] == PathAttrs(origin="igp")  # no communities unless configured
    assert sorted(exports([])) == ["10.65.0.0/26"]  # nothing configured: blocks only


def test_ranges_are_written_canonically_and_once() -> None:
    cfg = config(
        serviceClusterIPs=[{"cidr": "FD00:96:0::/112"}], serviceExternalIPs=[{"cidr": "fd00:96::/112"}]
    )
    assert service_cidrs(cfg) == ("fd00:96::/112",)
    assert list(exports([cfg], blocks=())) == ["fd00:96::/112"]


def test_only_the_default_configuration_counts() -> None:
    # Calico: the service fields are "only valid on the global default BGPConfiguration: ignored otherwise"
    own = config("node.a", serviceClusterIPs=[{"cidr": "10.100.0.0/16"}])
    assert sorted(exports([own])) == ["10.65.0.0/26"]
    assert sorted(exports([own, config(**SERVICES)])) == sorted(["10.65.0.0/26", *V4_RANGES, "fd00:96::/112"])
    # another node's override changes nothing for a
    assert "10.96.0.0/12" in exports([config("node.b", prefixAdvertisements=[]), config(**SERVICES)])


def test_prefix_advertisement_communities_apply_to_service_ranges() -> None:
    cfg = config(
        **SERVICES,
        communities=[{"name": "svc", "value": "64512:96"}],
        prefixAdvertisements=[
            {"cidr": "10.96.0.0/11", "communities": ["svc", "65000:1:2"]},  # contains the cluster range
            {"cidr": "203.0.113.0/25", "communities": ["64512:7"]},  # inside the external range: no
        ],
    )
    out = exports([cfg])
    assert out["10.96.0.0/12"] == PathAttrs(communities=("64512:96",), large_communities=("65000:1:2",))
    assert out["203.0.113.0/24"] == PathAttrs()
    # the node's own prefixAdvertisements win (Calico's per-node override), ranges still from default
    override = config("node.a", prefixAdvertisements=[{"cidr": "10.0.0.0/8", "communities": ["64512:5"]}])
    out = exports([cfg, override])
    assert out["10.96.0.0/12"].communities == ("64512:5",)
    assert out["10.65.0.0/26"].communities == ("64512:5",)


@pytest.mark.parametrize(("value", "advertises"), [("true", False), ("", True), ("false", True)])
def test_exclude_from_external_load_balancers_label(value: str, advertises: bool) -> None:
    # Calico tests the value "true"; kubeadm's control-plane label has an empty value and does not count
    nodes = [node("a", "10.0.0.1", **{EXCLUDE_LABEL: value}), node("b", "10.0.0.2")]
    out = exports([config(**SERVICES)], nodes=nodes)
    assert ("10.96.0.0/12" in out) is advertises
    assert "10.65.0.0/26" in out  # pod blocks are not affected
    # excluded or not, the node keeps refusing the ranges from others
    plan = build_plan(
        "a", nodes=nodes, bgp_configs=[config(**SERVICES)], peers=[], pools=POOLS, local_blocks=[]
    )
    assert prefix_reason("10.96.0.0/12", plan.desired.import_policy) == "service IP range"


def test_range_inside_a_pool_with_bgp_export_disabled_is_not_sent() -> None:
    quiet = IPPool(
        metadata=ObjectMeta(name="q"), spec=IPPoolSpec(cidr="10.96.0.0/12", disable_bgp_export=True)
    )
    inside = config(
        serviceClusterIPs=[{"cidr": "10.96.0.0/16"}], serviceLoadBalancerIPs=[{"cidr": "10.97.1.0/24"}]
    )
    out = exports([inside], pools=[*POOLS, quiet])
    assert sorted(out) == ["10.65.0.0/26"]


# --- import: other nodes never install them ---------------------------------------------------------
def test_import_refuses_service_ranges_even_inside_a_pool() -> None:
    pools = (PoolInfo("10.65.0.0/16"), PoolInfo("10.96.0.0/16"))
    policy = ImportPolicy(pools, service_cidrs=("10.96.0.0/12", "fd00:96::/112"))
    assert prefix_reason("10.96.0.0/12", policy) == "service IP range"
    assert prefix_reason("10.96.3.4/32", policy) == "service IP range"  # a Local service's /32 too
    assert prefix_reason("fd00:96::5/128", policy) == "service IP range"
    assert prefix_reason("10.65.1.0/26", policy) is None
    # no service ranges configured: refused all the same, as it covers a pool
    assert prefix_reason("10.96.0.0/12", ImportPolicy(pools)) == "covers IP pool: 10.96.0.0/16"


def engine_for(configs: list[BGPConfiguration], peers: list[BGPPeer] = (), filters: list[BGPFilter] = (),
               nodes: list[Node] = NODES) -> tuple[Engine, list[str], MemoryRoutes]:  # fmt: skip
    sent: list[str] = []
    kernel = MemoryRoutes()
    engine = Engine(sent.extend, Fib(kernel), now=0.0, wall=lambda: 1000.0)
    engine.fib.resync()  # type: ignore[union-attr]
    engine.configure(desired(configs, peers, filters, nodes))
    engine.handle(api.BridgeNote(0), 0)
    for peer in [p.address for p in engine.desired.peers]:  # type: ignore[union-attr]
        engine.handle(api.Open(peer, peer, 64512 if peer.startswith("10.") else 65001, 120), 0)
        engine.handle(api.StateChange(peer, "up"), 0)
    return engine, sent, kernel


def desired(
    configs: list[BGPConfiguration], peers: Any = (), filters: Any = (), nodes: list[Node] = NODES
) -> Any:
    return build_plan("a", nodes=nodes, bgp_configs=configs, peers=list(peers), pools=POOLS,
                      local_blocks=["10.65.0.0/26"], bgp_filters=list(filters)).desired  # fmt: skip


def from_b(*prefixes: str) -> api.Update:
    return api.Update("10.0.0.2", 64512, PathAttrs(), tuple(api.Announce(p, "10.0.0.2") for p in prefixes))


def test_a_node_does_not_install_its_peers_service_range() -> None:
    for configs in ([config(**SERVICES)], []):  # with the ranges configured here or not: refused
        engine, _, kernel = engine_for(configs)
        engine.handle(from_b("10.96.0.0/12", "203.0.113.0/24", "10.65.1.0/26"), 0)
        engine.flush()
        assert list(kernel.table) == ["10.65.1.0/26"]


def test_announced_with_next_hop_self_and_withdrawn_when_the_config_goes() -> None:
    engine, sent, _ = engine_for([config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])])
    assert engine.adv.sent("10.0.0.2")["10.96.0.0/12"] == (NEXT_HOP_SELF, PathAttrs())
    assert (
        "neighbor 10.0.0.2 announce attributes next-hop self origin igp nlri 10.65.0.0/26 10.96.0.0/12"
        in sent
    )
    sent.clear()
    engine.configure(desired([]))
    assert sent == ["neighbor 10.0.0.2 withdraw attributes next-hop 0.0.0.0 nlri 10.96.0.0/12"]


def test_bgpfilter_export_rules_apply_to_service_ranges() -> None:
    tor = BGPPeer(
        metadata=ObjectMeta(name="tor"), spec=BGPPeerSpec(peer_ip=TOR, as_number=65001, filters=["out"])
    )
    rules = [
        {"action": "Reject", "cidr": "203.0.113.0/24", "matchOperator": "Equal"},
        # RemotePeers rules are about learned routes: a node's service ranges are its own
        {"action": "Reject", "cidr": "10.0.0.0/8", "matchOperator": "In", "source": "RemotePeers"},
    ]
    out = document("BGPFilter", "out", {"exportV4": rules})
    engine, _, _ = engine_for([config(**SERVICES)], [tor], [out])
    at_tor = engine.adv.sent(TOR)
    assert sorted(at_tor) == ["10.65.0.0/26", "10.96.0.0/12", "192.0.2.128/25", "198.51.100.7/32"]
    assert at_tor["10.96.0.0/12"][0] == NEXT_HOP_SELF
    assert "203.0.113.0/24" in engine.adv.sent("10.0.0.2")  # the mesh session has no filter


# --- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}, "spec.serviceClusterIPs[0].cidr", "host bits"),
        ({"serviceExternalIPs": [{"cidr": "203.0.113.0/24"}, {"cidr": "203.0.113.9"}]},
         "spec.serviceExternalIPs[1].cidr", "prefix length is missing"),
        ({"serviceLoadBalancerIPs": [{"cidr": "fd00::/129"}]},
         "spec.serviceLoadBalancerIPs[0].cidr", "not a valid"),
        ({"serviceLoadBalancerIPs": [{}]}, "spec.serviceLoadBalancerIPs[0].cidr", "required"),
        ({"serviceClusterIPs": "10.96.0.0/12"}, "spec.serviceClusterIPs", "must be a list"),
        ({"serviceClusterIPs": [{"cidr": "10.96.0.0/12", "cird": "x"}]},
         "spec.serviceClusterIPs[0].cird", "unknown"),
    ],
)  # fmt: skip
def test_bad_service_ranges_are_refused_by_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ResourceError) as err:
        config(**spec)
    assert err.value.field == field
    assert words in str(err.value)
