"""BGPFilter's full rule set (Calico v3.32): every match — cidr/matchOperator/prefixLength, source,
interface, peerType, communities, asPathPrefix, priority — alone and together, on import and export,
v4 and v6; the operations (addCommunity, prependASPath) and where they land; which rule decided."""

from __future__ import annotations

from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp.advertiser import outbound
from bgp.peer_filters import (
    LEARNED_PRIORITY,
    RouteFacts,
    compile_filter,
    export_rule,
    facts_of,
    first_match,
    import_decision,
    operate,
)
from bgp.reflect import NEXT_HOP_SELF, LocalInfo
from bgp.route import PathAttrs, PeerInfo, Route, prefix_key
from tests.unit.test_bgp_peer_options import TOR, bgp_filter, desired, make, peer

V4, V6 = "10.65.1.0/26", "fd00:65::/64"


def rules(direction: str = "importV4", **match: Any) -> Any:
    """The compiled session filter with one rule (``match`` + Reject) then Accept-all."""
    pf, _ = compile_filter(["f"], {"f": bgp_filter("f", **{direction: [{"action": "Reject", **match}]})})
    assert pf is not None
    return pf


def decides(pf: Any, prefix: str, facts: RouteFacts, *, export: bool = False) -> bool:
    key = prefix_key(prefix)
    return first_match(pf.rules(key, export=export), key, facts) is not None


LEARNED = RouteFacts(learned=True, ebgp=True, communities=("65001:100", "65001:1:2"), as_path=(65001, 65002),
                     priority=32, interface=lambda: "eth1")  # fmt: skip


# (id, rule fields, facts, matches)
CASES = [
    ("no-match-fields-match-all", {}, LEARNED, True),
    ("peer-type-ebgp", {"peerType": "eBGP"}, LEARNED, True),
    ("peer-type-ibgp-on-ebgp", {"peerType": "iBGP"}, LEARNED, False),
    ("peer-type-ibgp", {"peerType": "iBGP"}, RouteFacts(ebgp=False), True),
    ("community-standard", {"communities": {"values": ["65001:100"]}}, LEARNED, True),
    ("community-large", {"communities": {"values": ["65001:1:2"]}}, LEARNED, True),
    ("community-absent", {"communities": {"values": ["65001:101"]}}, LEARNED, False),
    ("community-leading-zero-normalised", {"communities": {"values": ["65001:0100"]}}, LEARNED, True),
    ("as-path-prefix-first", {"asPathPrefix": [65001]}, LEARNED, True),
    ("as-path-prefix-both", {"asPathPrefix": [65001, 65002]}, LEARNED, True),
    ("as-path-prefix-not-at-start", {"asPathPrefix": [65002]}, LEARNED, False),
    ("as-path-prefix-longer-than-path", {"asPathPrefix": [65001, 65002, 65003]}, LEARNED, False),
    ("as-path-prefix-empty-path", {"asPathPrefix": [65001]}, RouteFacts(), False),
    ("as-path-prefix-asdot", {"asPathPrefix": ["0.65001"]}, LEARNED, True),
    ("priority-learned", {"priority": 32}, LEARNED, True),
    ("priority-other", {"priority": 1024}, LEARNED, False),
    ("priority-own-export-has-none", {"priority": 32}, RouteFacts(learned=False), False),
    ("interface-exact", {"interface": "eth1"}, LEARNED, True),
    ("interface-wildcard", {"interface": "eth*"}, LEARNED, True),
    ("interface-wildcard-middle", {"interface": "e*1"}, LEARNED, True),
    ("interface-other", {"interface": "eth0"}, LEARNED, False),
    ("interface-prefix-is-not-enough", {"interface": "eth"}, LEARNED, False),
    ("interface-dot-is-literal", {"interface": "eth.1"}, RouteFacts(interface=lambda: "ethx1"), False),
    ("interface-unknown", {"interface": "*"}, RouteFacts(interface=None), False),
    ("interface-none", {"interface": "*"}, RouteFacts(interface=lambda: ""), False),
    ("all-together", {"peerType": "eBGP", "communities": {"values": ["65001:100"]}, "asPathPrefix": [65001],
                      "priority": 32, "interface": "eth*", "cidr": "10.65.0.0/16", "matchOperator": "In"},
     LEARNED, True),
    ("all-but-one", {"peerType": "eBGP", "communities": {"values": ["65001:100"]}, "asPathPrefix": [65001],
                     "priority": 32, "interface": "eth0"}, LEARNED, False),
    ("cidr-fails-others-hold", {"peerType": "eBGP", "cidr": "10.66.0.0/16", "matchOperator": "In"},
     LEARNED, False),
]  # fmt: skip


@pytest.mark.parametrize(("match", "facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("direction", ["importV4", "exportV4"])
def test_each_match_alone_and_together_v4(
    direction: str, match: dict[str, Any], facts: RouteFacts, expected: bool
) -> None:
    assert decides(rules(direction, **match), V4, facts, export=direction.startswith("export")) is expected


@pytest.mark.parametrize(("match", "facts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("direction", ["importV6", "exportV6"])
def test_each_match_alone_and_together_v6(
    direction: str, match: dict[str, Any], facts: RouteFacts, expected: bool
) -> None:
    if "cidr" in match:
        v6 = {"10.65.0.0/16": "fd00::/16", "10.66.0.0/16": "fd01::/16"}
        match = {**match, "cidr": v6[match["cidr"]]}
    if match.get("priority") == 32:
        match = {**match, "priority": LEARNED_PRIORITY[6]}
        facts = RouteFacts(**{**{f: getattr(facts, f) for f in RouteFacts.__slots__}, "priority": (
            LEARNED_PRIORITY[6] if facts.priority else None)})  # fmt: skip
    assert decides(rules(direction, **match), V6, facts, export=direction.startswith("export")) is expected


def test_a_v4_rule_never_decides_for_v6_and_back() -> None:
    pf = rules("importV4", peerType="eBGP")
    assert decides(pf, V4, LEARNED) and not decides(pf, V6, LEARNED)
    pf6 = rules("importV6", peerType="eBGP")
    assert decides(pf6, V6, LEARNED) and not decides(pf6, V4, LEARNED)


def test_source_remote_peers_matches_learned_routes_only() -> None:
    pf = rules("exportV4", source="RemotePeers")
    assert export_rule(pf, V4, RouteFacts(learned=True))[0] is False
    assert export_rule(pf, V4, RouteFacts(learned=False))[0] is True


def test_learned_priority_is_the_kernel_metric_routes_are_installed_at() -> None:
    from bgp.rtnl import bgp_metric

    assert {4: bgp_metric("10.0.0.0/8"), 6: bgp_metric("fd00::/8")} == LEARNED_PRIORITY
    assert facts_of(PathAttrs(), learned=True, ebgp=False, version=4).priority == 32
    assert facts_of(PathAttrs(), learned=False, ebgp=False, version=4).priority is None


def test_interface_is_only_looked_up_for_interface_rules() -> None:
    asked: list[str] = []

    def lookup() -> str:
        asked.append("x")
        return "eth1"

    facts = RouteFacts(interface=lookup)
    assert not decides(rules("importV4", peerType="eBGP"), V4, facts)
    assert asked == []
    assert decides(rules("importV4", interface="eth1"), V4, facts) and asked == ["x"]


def test_which_rule_decided_is_named_in_the_reason() -> None:
    f1 = bgp_filter("first", importV4=[{"action": "Accept", "communities": {"values": ["1:1"]}}])
    f2 = bgp_filter("second", importV4=[
        {"action": "Accept", "peerType": "iBGP"},
        {"action": "Reject", "asPathPrefix": [65001]},
    ])  # fmt: skip
    pf, _ = compile_filter(["first", "second"], {"first": f1, "second": f2})
    attrs = PathAttrs(as_path=(65001,))
    ebgp = facts_of(attrs, learned=True, ebgp=True, version=4)
    assert import_decision(pf, V4, attrs, ebgp)[0] == "rejected by BGPFilter second: importV4[1]"
    tagged = PathAttrs(as_path=(65001,), communities=("1:1",))
    assert import_decision(pf, V4, tagged, facts_of(tagged, learned=True, ebgp=True, version=4))[0] is None
    ibgp = facts_of(attrs, learned=True, ebgp=False, version=4)
    assert import_decision(pf, V4, attrs, ibgp)[0] is None


# --- operations -------------------------------------------------------------------------------------
def op_rule(*ops: dict[str, Any], direction: str = "importV4", **match: Any) -> Any:
    rule = {"action": "Accept", "operations": list(ops), **match}
    pf, _ = compile_filter(["f"], {"f": bgp_filter("f", **{direction: [rule]})})
    assert pf is not None
    return pf


def test_operations_apply_in_order_and_add_a_community_once() -> None:
    pf = op_rule(
        {"addCommunity": {"value": "65000:7"}},
        {"prependASPath": {"prefix": [65000, 65000]}},
        {"addCommunity": {"value": "65000:1:2"}},
        {"addCommunity": {"value": "65000:7"}},
    )
    attrs = PathAttrs(as_path=(65001,), communities=("1:1",))
    reason, out = import_decision(pf, V4, attrs)
    assert reason is None
    assert out.communities == ("1:1", "65000:7") and out.large_communities == ("65000:1:2",)
    assert out.as_path == (65000, 65000, 65001)


def test_a_rule_that_does_not_decide_changes_nothing() -> None:
    pf = op_rule({"addCommunity": {"value": "65000:7"}}, peerType="iBGP")
    attrs = PathAttrs(as_path=(65001,))
    facts = facts_of(attrs, learned=True, ebgp=True, version=4)
    assert import_decision(pf, V4, attrs, facts) == (None, attrs)


def test_prepend_towards_ebgp_keeps_our_as_first() -> None:
    rule = op_rule({"prependASPath": {"prefix": [64999]}}).import_v4[0]
    # a learned route's advert already has our AS first; an own export's has no AS_PATH yet
    assert operate(rule, PathAttrs(as_path=(64512, 65002)), ebgp_as=64512).as_path == (64512, 64999, 65002)
    assert operate(rule, PathAttrs(), ebgp_as=64512).as_path == (64512, 64999)
    assert operate(rule, PathAttrs(as_path=(65002,))).as_path == (64999, 65002)  # iBGP: in front


def _tor_spec(filters: list[Any], **kw: Any) -> Any:
    d = desired([peer("tor", peer_ip=TOR, as_number=65001, filters=["f"], **kw)], filters, [])
    return next(p for p in d.peers if p.address == TOR), d


def test_outbound_applies_export_operations_to_own_and_learned_routes() -> None:
    f = bgp_filter("f", exportV4=[
        {"action": "Accept", "cidr": "10.65.1.0/26", "matchOperator": "Equal",
         "operations": [{"addCommunity": {"value": "64512:9"}}, {"prependASPath": {"prefix": [64512]}}]},
        {"action": "Accept", "asPathPrefix": [65003], "operations": [{"addCommunity": {"value": "64512:3"}}]},
        {"action": "Reject", "communities": {"values": ["65003:666"]}},
    ])  # fmt: skip
    spec, d = _tor_spec([f])
    to = PeerInfo(TOR, "", 65001, 64512)
    local = LocalInfo("10.0.0.1", 64512)
    own = outbound("10.65.1.0/26", spec, to, exports={"10.65.1.0/26": PathAttrs()}, best=(), pools=d.pools,
                   local=local)  # fmt: skip
    assert own == (NEXT_HOP_SELF, PathAttrs(as_path=(64512, 64512), communities=("64512:9",)))
    src = PeerInfo("10.0.0.2", "10.0.0.2", 64512, 64512)
    learned = Route("10.65.2.0/26", "10.0.0.2", PathAttrs(as_path=(65003,)), src)
    adv = outbound("10.65.2.0/26", spec, to, exports={}, best=(learned,), pools=d.pools, local=local)
    assert adv is not None and adv[1].as_path == (64512, 65003) and adv[1].communities == ("64512:3",)
    bad = Route("10.65.3.0/26", "10.0.0.2", PathAttrs(communities=("65003:666",)), src)
    assert outbound("10.65.3.0/26", spec, to, exports={}, best=(bad,), pools=d.pools, local=local) is None


# --- the engine: import operations change the route as stored, interface rules ask the kernel ------
def test_engine_import_operations_and_interface_and_peer_type() -> None:
    f = bgp_filter("f", importV4=[
        {"action": "Reject", "interface": "bad*"},
        {"action": "Accept", "peerType": "eBGP", "cidr": "10.65.5.0/26", "matchOperator": "Equal",
         "operations": [{"addCommunity": {"value": "64512:5"}}, {"prependASPath": {"prefix": [65100]}}]},
        {"action": "Reject", "peerType": "eBGP", "communities": {"values": ["65001:666"]}},
    ])  # fmt: skip
    engine, kernel = make([peer("tor", peer_ip=TOR, as_number=65001, filters=["f"])], [f], [])
    next_hop_iface = {TOR: "eth0", "192.0.2.9": "bad0"}
    engine.interface_of = next_hop_iface.__getitem__
    announce = (api.Announce("10.65.5.0/26", TOR), api.Announce("10.65.6.0/26", TOR),
                api.Announce("10.65.8.0/26", "192.0.2.9"))  # fmt: skip
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001,)), announce), 0)
    engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001,), communities=("65001:666",)),
                             (api.Announce("10.65.7.0/26", TOR),)), 0)  # fmt: skip
    engine.flush()
    assert sorted(kernel.table) == ["10.65.5.0/26", "10.65.6.0/26"]
    best = dict(engine.rib.best_routes())
    stored = best["10.65.5.0/26"][0].attrs
    assert stored.as_path == (65100, 65001) and stored.communities == ("64512:5",)
    assert best["10.65.6.0/26"][0].attrs == PathAttrs(as_path=(65001,))  # no rule decided: unchanged
    refused = {k[2]: v for k, v in engine.counters.items() if k[0] == "refused"}
    assert refused == {"rejected by BGPFilter f": 2}
    # what the peer sent is kept as sent: the filter going away re-imports it unchanged
    engine.configure(desired([peer("tor", peer_ip=TOR, as_number=65001)], [], []))
    best = dict(engine.rib.best_routes())
    assert best["10.65.5.0/26"][0].attrs == PathAttrs(as_path=(65001,))
    assert sorted(kernel.table) == ["10.65.5.0/26", "10.65.6.0/26", "10.65.7.0/26", "10.65.8.0/26"]


def test_next_hop_interface_from_the_kernel_is_cached() -> None:
    from bgp.nexthop_iface import NextHopInterfaces

    lookup = NextHopInterfaces()
    assert lookup("127.0.0.1") == "lo"
    lookup._cache["127.0.0.1"] = (float("inf"), "cached")
    assert lookup("127.0.0.1") == "cached"  # asked once per next hop (per TTL)
    assert NextHopInterfaces(netns="felixpy-no-such-netns")("127.0.0.1") == ""  # a failed lookup: none
