"""BGPPeer session options felixpy implements: BGPFilter (import/export rules), localASNumber,
numAllowedLocalASNumbers and ttlSecurity — validation, matching, topology, engine, ExaBGP config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp.engine import Engine
from bgp.exabgp_config import gtsm_min_ttl, render_config, render_neighbor
from bgp.fib import Fib
from bgp.filters import ImportPolicy, PoolInfo, attrs_reason
from bgp.peer_filters import FilterRule, compile_filter, export_allowed, import_reason, verdict
from bgp.reflect import LocalInfo, reflect
from bgp.route import PathAttrs, PeerInfo, Route, prefix_key
from bgp.service import build_plan
from bgp.topology import PeerSpec, compute_peers
from felixpy.resources import ResourceError
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec
from felixpy.resources.parse import parse_document
from tests.unit.test_bgp_engine import MemoryRoutes

V3 = "projectcalico.org/v3"


# --- validation -----------------------------------------------------------------------------------
def bgp_filter(name: str = "f", **spec: Any) -> BGPFilter:
    obj = parse_document({"apiVersion": V3, "kind": "BGPFilter", "metadata": {"name": name}, "spec": spec})
    assert isinstance(obj, BGPFilter)
    return obj


def rule(**fields: Any) -> dict[str, Any]:
    return {"action": "Reject", "cidr": "10.65.0.0/16", "matchOperator": "In", **fields}


def peer_doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "BGPPeer", "metadata": {"name": "p"},
            "spec": {"peerIP": "192.0.2.1", "asNumber": 65001, **spec}}  # fmt: skip


BAD = [
    # (id, spec of a BGPFilter or a whole document, field named, words in the reason)
    ("interface", {"exportV4": [rule(interface="eth 0")]}, "spec.exportV4[0].interface", "interface name"),
    ("peer-type", {"importV4": [rule(peerType="ebgp")]}, "spec.importV4[0].peerType", "'iBGP'"),
    ("communities-two", {"importV4": [rule(communities={"values": ["1:2", "3:4"]})]},
     "spec.importV4[0].communities.values", "exactly one"),
    ("communities-none", {"importV4": [rule(communities={"values": []})]},
     "spec.importV4[0].communities.values", "exactly one"),
    ("community-range", {"importV4": [rule(communities={"values": ["1:65536"]})]},
     "spec.importV4[0].communities.values[0]", "not a community"),
    ("community-shape", {"importV4": [rule(communities={"values": ["no-export"]})]},
     "spec.importV4[0].communities.values[0]", "aa:nn"),
    ("as-path-prefix-empty", {"exportV6": [{"action": "Reject", "asPathPrefix": []}]},
     "spec.exportV6[0].asPathPrefix", "at least one"),
    ("as-path-prefix-asn", {"exportV6": [{"action": "Reject", "asPathPrefix": [0]}]},
     "spec.exportV6[0].asPathPrefix[0]", "out of range"),
    ("priority-low", {"importV4": [rule(priority=0)]}, "spec.importV4[0].priority", "1"),
    ("priority-high", {"importV4": [rule(priority=2147483647)]}, "spec.importV4[0].priority", "2147483646"),
    ("operations-on-reject", {"importV4": [rule(operations=[{"addCommunity": {"value": "1:2"}}])]},
     "spec.importV4[0].operations", "only Accept"),
    ("operation-empty", {"importV4": [rule(action="Accept", operations=[{}])]},
     "spec.importV4[0].operations[0]", "exactly one"),
    ("operation-two", {"importV4": [rule(action="Accept", operations=[
        {"addCommunity": {"value": "1:2"}, "prependASPath": {"prefix": [65000]}}])]},
     "spec.importV4[0].operations[0]", "exactly one"),
    ("operation-community", {"exportV4": [rule(action="Accept", operations=[
        {"addCommunity": {"value": "x"}}])]},
     "spec.exportV4[0].operations[0].addCommunity.value", "not a community"),
    ("operation-prepend-empty", {"exportV4": [rule(action="Accept", operations=[
        {"prependASPath": {"prefix": []}}])]},
     "spec.exportV4[0].operations[0].prependASPath.prefix", "at least 1"),
    ("set-priority-zero", {"importV4": [rule(action="Accept", operations=[{"setPriority": {"value": 0}}])]},
     "spec.importV4[0].operations[0].setPriority.value", "greater than or equal to 1"),
    ("set-priority-on-reject",
     {"importV4": [rule(action="Reject", operations=[{"setPriority": {"value": 9}}])]},
     "spec.importV4[0].operations", "only Accept rules"),
    ("operation-unknown", {"importV4": [rule(action="Accept", operations=[{"setMed": {"value": 1}}])]},
     "spec.importV4[0].operations[0].setMed", "unknown field"),
    ("unknown-field", {"importV4": [rule(cdir="10.0.0.0/8")]}, "spec.importV4[0].cdir", "unknown field"),
    ("cidr-without-operator", {"importV4": [{"action": "Reject", "cidr": "10.0.0.0/8"}]},
     "spec.importV4[0].matchOperator", "both"),
    ("operator-without-cidr", {"importV4": [{"action": "Reject", "matchOperator": "In"}]},
     "spec.importV4[0].cidr", "both"),
    ("prefix-length-without-cidr", {"importV4": [{"action": "Reject", "prefixLength": {"min": 24}}]},
     "spec.importV4[0].prefixLength", "requires cidr"),
    ("prefix-length-reversed", {"importV4": [rule(prefixLength={"min": 28, "max": 24})]},
     "spec.importV4[0].prefixLength", "larger than max"),
    ("prefix-length-v4-range", {"exportV4": [rule(prefixLength={"max": 33})]},
     "spec.exportV4[0].prefixLength.max", "0..32"),
    ("v6-cidr-in-v4-list", {"importV4": [rule(cidr="fd00::/8")]}, "spec.importV4[0].cidr", "not an IPv4"),
    ("v4-cidr-in-v6-list", {"exportV6": [rule(cidr="10.0.0.0/8")]}, "spec.exportV6[0].cidr", "not an IPv6"),
    ("source-on-import", {"importV4": [rule(source="RemotePeers")]}, "spec.importV4[0].source",
     "export rules only"),
    ("source-value", {"exportV4": [rule(source="Local")]}, "spec.exportV4[0].source", "'RemotePeers'"),
    ("action", {"importV4": [rule(action="Deny")]}, "spec.importV4[0].action", "'Accept'"),
    ("action-missing", {"importV4": [{"cidr": "10.0.0.0/8", "matchOperator": "In"}]},
     "spec.importV4[0].action", "required"),
    ("operator", {"importV4": [rule(matchOperator="Contains")]}, "spec.importV4[0].matchOperator", "'NotIn'"),
    ("cidr-host-bits", {"importV4": [rule(cidr="10.65.0.1/16")]}, "spec.importV4[0].cidr", "host bits"),
    ("peer-ttl", peer_doc(ttlSecurity=256), "spec.ttlSecurity", "255"),
    ("peer-allow-local-as", peer_doc(numAllowedLocalASNumbers=-1), "spec.numAllowedLocalASNumbers", "0"),
    ("peer-local-as", peer_doc(localASNumber="65x"), "spec.localASNumber", "not an AS number"),
    ("peer-filter-name", peer_doc(filters=["ok", "Not_A_Name"]), "spec.filters[1]", "BGPFilter name"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_filters_and_peer_options_name_the_field(
    document: dict[str, Any], field: str, words: str
) -> None:
    if "kind" not in document:
        document = {"apiVersion": V3, "kind": "BGPFilter", "metadata": {"name": "f"}, "spec": document}
    with pytest.raises(ResourceError) as info:
        parse_document(document)
    assert info.value.field == field, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_calico_sample_filter_and_peer_options_parse() -> None:
    f = bgp_filter(
        exportV4=[
            {"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16", "source": "RemotePeers"}
        ],
        importV4=[rule(action="Accept", cidr="55.0.0.0/16", prefixLength={"min": 30}), {"action": "Reject"}],
        importV6=[{"action": "Accept", "matchOperator": "Equal", "cidr": "5000::0/64"}],
    )
    assert f.spec.import_v6[0].cidr == "5000::/64"
    assert f.to_dict()["spec"]["importV4"][0]["prefixLength"] == {"min": 30}
    p = parse_document(
        peer_doc(localASNumber="1.10", numAllowedLocalASNumbers=2, ttlSecurity=3, filters=["f"])
    )
    assert isinstance(p, BGPPeer)
    assert (p.spec.local_as_number, p.spec.num_allowed_local_as_numbers, p.spec.ttl_security) == (65546, 2, 3)


# --- matching -------------------------------------------------------------------------------------
def k(prefix: str) -> tuple[int, int, int]:
    return prefix_key(prefix)


def compiled(**spec: Any) -> Any:
    pf, missing = compile_filter(["f"], {"f": bgp_filter(**spec)})
    assert missing == [] and pf is not None
    return pf


@pytest.mark.parametrize(
    ("operator", "prefix", "matches"),
    [
        ("Equal", "10.65.1.0/24", True),
        ("Equal", "10.65.1.0/26", False),
        ("Equal", "10.65.0.0/16", False),
        ("NotEqual", "10.65.1.0/24", False),
        ("NotEqual", "10.65.1.0/26", True),
        ("In", "10.65.1.0/24", True),  # equal counts as inside
        ("In", "10.65.1.64/26", True),
        ("In", "10.65.2.0/26", False),
        ("In", "10.65.0.0/16", False),  # wider is not inside
        ("NotIn", "10.65.1.64/26", False),
        ("NotIn", "10.65.2.0/26", True),
        ("NotIn", "10.65.0.0/16", True),
    ],
)
def test_each_match_operator(operator: str, prefix: str, matches: bool) -> None:
    pf = compiled(importV4=[{"action": "Reject", "cidr": "10.65.1.0/24", "matchOperator": operator}])
    assert (import_reason(pf, prefix) is not None) is matches


@pytest.mark.parametrize(
    ("length", "prefix", "matches"),
    [
        ({"min": 26}, "10.65.1.0/26", True),
        ({"min": 26}, "10.65.1.0/25", False),
        ({"min": 26}, "10.65.1.7/32", True),  # max defaults to 32
        ({"max": 26}, "10.65.1.0/24", True),  # min defaults to the cidr's own length
        ({"max": 26}, "10.65.1.0/28", False),
        ({"min": 26, "max": 28}, "10.65.1.16/28", True),
        ({"min": 26, "max": 28}, "10.65.1.16/29", False),
        ({"min": 26, "max": 28}, "10.65.2.0/27", False),  # the right length, outside the cidr
    ],
)
def test_prefix_length_bounds_the_in_match(length: dict[str, int], prefix: str, matches: bool) -> None:
    pf = compiled(importV4=[rule(cidr="10.65.1.0/24", prefixLength=length)])
    assert (import_reason(pf, prefix) is not None) is matches
    # NotIn is the complement over the same bounds
    neg = compiled(importV4=[rule(cidr="10.65.1.0/24", matchOperator="NotIn", prefixLength=length)])
    assert (import_reason(neg, prefix) is not None) is not matches


def test_first_match_wins_and_no_match_leaves_the_default() -> None:
    pf = compiled(
        importV4=[
            {"action": "Accept", "cidr": "10.65.1.0/26", "matchOperator": "Equal"},
            {"action": "Reject", "cidr": "10.65.1.0/24", "matchOperator": "In"},
            {"action": "Accept"},  # no cidr: everything else of the family
        ],
        importV6=[{"action": "Reject", "cidr": "fd00::/8", "matchOperator": "In"}],
    )
    assert import_reason(pf, "10.65.1.0/26") is None  # accepted by rule 1 before rule 2 could reject
    assert import_reason(pf, "10.65.1.64/26") == "rejected by BGPFilter f: importV4[1]"
    assert import_reason(pf, "10.66.0.0/26") is None
    assert import_reason(pf, "fd00::/64") is not None and import_reason(pf, "2001:db8::/64") is None
    assert verdict(pf.import_v4, k("10.99.0.0/16")) is True
    assert verdict(pf.import_v6, k("2001:db8::/64")) is None  # no match: the default decides


def test_filters_join_in_the_peers_order_and_missing_ones_are_skipped() -> None:
    first = bgp_filter("first", exportV4=[rule(action="Accept", cidr="10.65.1.0/24")])
    second = bgp_filter("second", exportV4=[rule(cidr="10.65.0.0/16")])
    filters = {"first": first, "second": second}
    pf, missing = compile_filter(["first", "nope", "second"], filters)
    assert missing == ["nope"] and pf is not None and pf.names == ("first", "second")
    assert export_allowed(pf, "10.65.1.0/26", learned=False)  # first's Accept wins
    assert not export_allowed(pf, "10.65.2.0/26", learned=False)
    reversed_, _ = compile_filter(["second", "first"], filters)
    assert not export_allowed(reversed_, "10.65.1.0/26", learned=False)
    assert compile_filter(["nope"], filters) == (None, ["nope"])


def test_source_remote_peers_only_matches_learned_routes() -> None:
    pf = compiled(exportV4=[{"action": "Reject", "source": "RemotePeers"}])
    assert export_allowed(pf, "10.65.0.0/26", learned=False)
    assert not export_allowed(pf, "10.65.0.0/26", learned=True)
    assert FilterRule(False, remote_only=True).matches(k("10.0.0.0/8"), learned=False) is False


# --- allowed local AS -----------------------------------------------------------------------------
POLICY = ImportPolicy((PoolInfo("10.65.0.0/16"),), local_as=64512)


@pytest.mark.parametrize(
    ("path", "allowed", "local_as", "loop"),
    [
        ((65001,), 0, None, False),
        ((65001, 64512), 0, None, True),  # any occurrence is a loop by default
        ((65001, 64512), 1, None, False),
        ((65001, 64512, 64512), 1, None, True),  # more often than allowed
        ((65001, 64512, 65002, 64512), 2, None, False),
        ((65001, 64512), 0, 65100, False),  # the session presents 65100: that is "our" AS there
        ((65001, 65100), 0, 65100, True),
        ((65001, 65100), 1, 65100, False),
    ],
)
def test_allowed_local_as_counts_occurrences(
    path: tuple[int, ...], allowed: int, local_as: int | None, loop: bool
) -> None:
    reason = attrs_reason(PathAttrs(as_path=path), POLICY, local_as=local_as, allow_local_as=allowed)
    assert (reason == "AS loop") is loop


# --- topology, reflection, rendering --------------------------------------------------------------
def node(name: str, ip: str, *, asn: int | None = None, rr: str | None = None, **labels: str) -> Node:
    bgp = NodeBGPSpec(ipv4_address=f"{ip}/24", as_number=asn, route_reflector_cluster_id=rr)
    return Node(metadata=ObjectMeta(name=name, labels=labels), spec=NodeSpec(bgp=bgp))


def peer(name: str, **spec: Any) -> BGPPeer:
    return BGPPeer(metadata=ObjectMeta(name=name), spec=BGPPeerSpec(**spec))


NO_MESH = [BGPConfiguration(metadata=ObjectMeta(name="default"),
                            spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False))]  # fmt: skip


def test_local_as_decides_ebgp_and_options_reach_the_session() -> None:
    nodes = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2")]
    peers = [
        peer("ext", peer_ip="192.0.2.1", as_number=65001, local_as_number=65100, ttl_security=2,
             num_allowed_local_as_numbers=1, filters=["f", "gone"]),
        peer("same", peer_ip="192.0.2.2", as_number=65100, local_as_number=65100),
        peer("plain", peer_ip="192.0.2.3", as_number=64512),
    ]  # fmt: skip
    got = {s.address: s for s in compute_peers("n1", nodes, [], peers, bgp_filters=[bgp_filter("f")])}
    ext, same, plain, mesh = got["192.0.2.1"], got["192.0.2.2"], got["192.0.2.3"], got["10.0.0.2"]
    assert (ext.local_as, ext.peer_as, ext.ebgp) == (65100, 65001, True)
    assert (same.local_as, same.ebgp) == (65100, False)  # localASNumber equal to the peer's: iBGP
    assert (plain.local_as, plain.ebgp) == (64512, False)
    assert (ext.ttl_security, ext.allow_local_as) == (2, 1)
    assert ext.route_filter is not None and ext.route_filter.names == ("f",)
    assert (mesh.local_as, mesh.ttl_security, mesh.allow_local_as, mesh.route_filter) == (64512, 0, 0, None)
    assert build_plan("n1", nodes=nodes, bgp_configs=[], peers=peers, pools=[], local_blocks=[],
                      bgp_filters=[bgp_filter("f")]).missing_filters == ("gone",)  # fmt: skip


def test_local_as_on_a_selector_peering_and_its_reverse() -> None:
    nodes = [node("n1", "10.0.0.1"), node("rr", "10.0.0.9", rr="244.0.0.1", role="rr")]
    peers = [peer("to-rr", node_selector="!has(role)", peer_selector="role == 'rr'", local_as_number=65100)]
    (fwd,) = compute_peers("n1", nodes, NO_MESH, peers)
    (rev,) = compute_peers("rr", nodes, NO_MESH, peers)
    assert (fwd.address, fwd.local_as, fwd.peer_as, fwd.ebgp) == ("10.0.0.9", 65100, 64512, True)
    # the reflector's side expects what n1 presents, and is no longer an iBGP reflector session
    assert (rev.address, rev.local_as, rev.peer_as, rev.rr_client) == ("10.0.0.1", 64512, 65100, False)


def test_towards_ebgp_the_sessions_local_as_is_prepended() -> None:
    learned = Route("10.65.2.0/26", "10.0.0.2", PathAttrs(as_path=()), PeerInfo("10.0.0.2", "", 64512, 64512))
    to_peer = PeerInfo("192.0.2.1", "", 65001, 65100)
    out = reflect(learned, learned.source, to_peer, local=LocalInfo("10.0.0.1", 64512))
    assert out is not None and out.attrs.as_path == (65100,)


SPEC = PeerSpec("192.0.2.1", 179, 65001, 65100, "10.0.0.1", "10.0.0.1", "global", name="Global_192_0_2_1")


def test_rendered_neighbor_has_local_as_and_gtsm_ttls() -> None:
    from dataclasses import replace

    plain = render_neighbor(SPEC)
    assert "    local-as 65100;" in plain and "    peer-as 65001;" in plain
    assert "ttl" not in plain
    one_hop = render_neighbor(replace(SPEC, ttl_security=1))
    assert "    outgoing-ttl 255;" in one_hop and "    incoming-ttl 255;" in one_hop
    three = render_neighbor(replace(SPEC, ttl_security=3))
    assert "    outgoing-ttl 255;" in three and "    incoming-ttl 253;" in three
    assert [gtsm_min_ttl(h) for h in (1, 2, 255)] == [255, 254, 1]


def test_rendered_gtsm_config_is_valid_for_exabgp(tmp_path: Path) -> None:
    from dataclasses import replace

    exabgp = Path(sys.executable).with_name("exabgp")
    if not exabgp.exists() and shutil.which("exabgp") is None:
        pytest.skip("exabgp not installed")
    conf = tmp_path / "x.conf"
    conf.write_text(render_config([replace(SPEC, ttl_security=2)], run_command=["/bin/true"]))
    proc = subprocess.run(
        [str(exabgp if exabgp.exists() else "exabgp"), "validate", str(conf)],
        env={**os.environ, "exabgp_daemon_user": "root"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the engine: where filters sit relative to felixpy's own checks --------------------------------
POOLS = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16", blockSize=28))]
NODES = [node("a", "10.0.0.1"), node("b", "10.0.0.2")]
TOR = "192.0.2.1"


def make(peers: list[BGPPeer], filters: list[BGPFilter], blocks: list[str]) -> tuple[Engine, MemoryRoutes]:
    kernel = MemoryRoutes()
    engine = Engine(lambda lines: None, Fib(kernel), now=0.0, wall=lambda: 1000.0)
    engine.fib.resync()  # type: ignore[union-attr]
    engine.configure(desired(peers, filters, blocks))
    engine.handle(api.BridgeNote(0), 0)
    for address, asn in ((TOR, 65001), ("10.0.0.2", 64512)):
        engine.handle(api.Open(address, address, asn, 120), 0)
        engine.handle(api.StateChange(address, "up"), 0)
    return engine, kernel


def desired(peers: list[BGPPeer], filters: list[BGPFilter], blocks: list[str]) -> Any:
    return build_plan("a", nodes=NODES, bgp_configs=[], peers=peers, pools=POOLS, local_blocks=blocks,
                      bgp_filters=filters).desired  # fmt: skip


def from_tor(*prefixes: str, path: tuple[int, ...] = (65001,)) -> api.Update:
    return api.Update(TOR, 65001, PathAttrs(as_path=path), tuple(api.Announce(p, TOR) for p in prefixes))


def test_import_filters_run_after_the_safety_checks_and_cannot_override_them() -> None:
    tor = peer("tor", peer_ip=TOR, as_number=65001, filters=["in"])
    accept_all = bgp_filter("in", importV4=[
        {"action": "Reject", "cidr": "10.65.7.0/26", "matchOperator": "Equal"},
        {"action": "Accept", "cidr": "0.0.0.0/0", "matchOperator": "In"},
    ])  # fmt: skip
    engine, kernel = make([tor], [accept_all], ["10.65.0.0/26"])
    engine.handle(from_tor("0.0.0.0/0", "10.65.0.0/26", "192.168.1.0/24", "10.65.7.0/26", "10.65.8.0/26"), 0)
    engine.flush()
    # default route, our own block, outside the pools: refused although an Accept rule matches them
    assert list(kernel.table) == ["10.65.8.0/26"]
    # the filter goes away: what it rejected is imported from what the peer sent (no refresh needed)
    engine.configure(desired([peer("tor", peer_ip=TOR, as_number=65001)], [], ["10.65.0.0/26"]))
    assert sorted(kernel.table) == ["10.65.7.0/26", "10.65.8.0/26"]


def test_export_filters_withhold_what_felixpy_would_send() -> None:
    tor = peer("tor", peer_ip=TOR, as_number=65001, filters=["out"])
    out = bgp_filter("out", exportV4=[
        {"action": "Reject", "cidr": "10.65.0.64/26", "matchOperator": "Equal"},
        {"action": "Reject", "cidr": "10.65.0.0/16", "matchOperator": "In", "prefixLength": {"min": 28},
         "source": "RemotePeers"},
        {"action": "Accept", "cidr": "192.168.0.0/16", "matchOperator": "In"},
    ])  # fmt: skip
    engine, _ = make([tor], [out], ["10.65.0.0/26", "10.65.0.64/26"])
    # two learned routes sharing attributes (one advert group) and one outside the pools
    learned = ("10.65.2.0/26", "10.65.2.16/28", "192.168.5.0/24")
    mesh = api.Update("10.0.0.2", 64512, PathAttrs(), tuple(api.Announce(p, "10.0.0.2") for p in learned))
    engine.handle(mesh, 0)
    engine.flush()
    assert sorted(engine.adv.sent(TOR)) == ["10.65.0.0/26", "10.65.2.0/26"]  # the Accept adds nothing
    assert sorted(engine.adv.sent("10.0.0.2")) == ["10.65.0.0/26", "10.65.0.64/26"]  # mesh: no filters
    # removing the filter sends the rest (a peer set change recomputes every advert)
    engine.configure(
        desired([peer("tor", peer_ip=TOR, as_number=65001)], [], ["10.65.0.0/26", "10.65.0.64/26"])
    )
    assert sorted(engine.adv.sent(TOR)) == ["10.65.0.0/26", "10.65.0.64/26", "10.65.2.0/26", "10.65.2.16/28"]


def test_allowed_local_as_on_the_engine() -> None:
    path = (65001, 64512)  # our AS once: e.g. a route that left another part of our AS
    engine, kernel = make([peer("tor", peer_ip=TOR, as_number=65001)], [], [])
    engine.handle(from_tor("10.65.9.0/26", path=path), 0)
    engine.flush()
    assert kernel.table == {}  # a loop by default
    engine.configure(
        desired([peer("tor", peer_ip=TOR, as_number=65001, num_allowed_local_as_numbers=1)], [], [])
    )
    assert list(kernel.table) == ["10.65.9.0/26"]
    engine.handle(from_tor("10.65.9.0/26", path=(*path, 64512)), 0)
    engine.flush()
    assert kernel.table == {}  # twice is more than allowed


# --- how BGPFilters reach the BGP service ---------------------------------------------------------
def test_bgpfilter_is_a_known_kind_stored_in_calicos_etcd_layout() -> None:
    from felixpy.ctl.columns import columns_for
    from felixpy.datastore.resources import encode, parse_key
    from felixpy.resources.registry import kind_by_name

    f = bgp_filter("edge", importV4=[rule()])
    assert kind_by_name("bgpfilters") is kind_by_name("BGPFilter") is BGPFilter
    key, _ = encode(f)
    assert key == "/calico/resources/v3/projectcalico.org/bgpfilters/edge"
    assert parse_key(key) == (BGPFilter, None, "edge")
    headers, cells = columns_for(BGPFilter)
    assert (headers, cells(f, {})) == (["NAME"], ["edge"])


def test_bgpfilters_pass_through_calc_to_the_bgp_service() -> None:
    from felixpy.calc.graph import CalcGraph
    from felixpy.dataplane.bgp_sink import BGPSink

    calls: list[dict[str, Any]] = []

    class Recorder:
        def update(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    graph, sink = CalcGraph("a"), BGPSink(Recorder())
    f = bgp_filter("edge", importV4=[rule()])
    graph.on_resource("BGPFilter", ("", "edge"), f)
    sink(graph.flush())
    assert calls[-1]["bgp_filters"] == [f]
    graph.on_resource("BGPFilter", ("", "edge"), None)
    sink(graph.flush())
    assert calls[-1]["bgp_filters"] == []
