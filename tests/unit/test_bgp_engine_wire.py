"""The engine of a route reflector in wire mode: UPDATE bytes out, only to sessions that are up.

Scripted ExaBGP events in, recorded commands out; the hex in ``felixpy-wire`` commands is
decoded with ``bgp.wire`` (whose own tests check it against ExaBGP's parser).
"""

from __future__ import annotations

from bgp import exabgp_api as api
from bgp import wire
from bgp.engine import Engine
from bgp.route import PathAttrs
from bgp.service import build_plan
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec

RR, SOURCE, C1, C2, TOR = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.9"


def reflector_plan(cluster: str | None = "244.0.0.1"):
    bgp = NodeBGPSpec(ipv4_address=f"{RR}/24", route_reflector_cluster_id=cluster)
    nodes = [Node(metadata=ObjectMeta(name="rr"), spec=NodeSpec(bgp=bgp))]
    mesh_off = BGPConfiguration(
        metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False)
    )
    peers = [
        BGPPeer(metadata=ObjectMeta(name=f"b{i}"), spec=BGPPeerSpec(node="rr", peer_ip=a, as_number=64512))
        for i, a in enumerate([SOURCE, C1, C2])
    ]
    peers.append(
        BGPPeer(metadata=ObjectMeta(name="tor"), spec=BGPPeerSpec(node="rr", peer_ip=TOR, as_number=65000))
    )
    pools = [IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.64.0.0/10"))]
    return build_plan(
        "rr", nodes=nodes, bgp_configs=[mesh_off], peers=peers, pools=pools, local_blocks=[]
    ).desired


def make(cluster: str | None = "244.0.0.1") -> tuple[Engine, list[str]]:
    sent: list[str] = []
    engine = Engine(sent.extend, None, now=0.0, wall=lambda: 1000.0, wire=True)
    engine.configure(reflector_plan(cluster))
    engine.handle(api.BridgeNote(0), 0)
    return engine, sent


def up(
    engine: Engine, peer: str, *, asn4: bool = True, add_path: bool = False, negotiated: bool = True
) -> None:
    engine.handle(api.Open(peer, peer, 64512, 120), 0)
    if negotiated:
        engine.handle(api.Negotiated(peer, asn4, add_path), 0)
    engine.handle(api.StateChange(peer, "up", local=RR), 0)


def wire_targets(line: str) -> tuple[list[str], list[str]]:
    """``neighbor a [, neighbor b ...] felixpy-wire HEX ...`` → ([a, b], [HEX, ...])."""
    head, found, hexes = line.partition(" felixpy-wire ")
    if not found:
        return [], []
    words = head.replace(",", " ").split()
    assert words[0::2] == ["neighbor"] * (len(words) // 2), line[:80]
    return words[1::2], hexes.split()


def wire_updates(sent: list[str], peer: str) -> list[wire.WireUpdate]:
    out = []
    for line in sent:
        neighbors, hexes = wire_targets(line)
        if peer in neighbors:
            out += [wire.decode_update(bytes.fromhex(h)[19:]) for h in hexes]
    return out


def text_lines(sent: list[str], peer: str) -> list[str]:
    return [line for line in sent if line.startswith(f"neighbor {peer} ") and "felixpy-wire" not in line]


def learn(engine: Engine, *prefixes: str) -> None:
    attrs = PathAttrs(local_pref=100, communities=("64512:7",))
    engine.handle(api.Update(SOURCE, 64512, attrs, tuple(api.Announce(p, SOURCE) for p in prefixes)), 0)
    engine.flush()


def test_nothing_before_up_then_everything_then_eor() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    learn(engine, "10.65.0.0/26", "10.65.0.64/26")
    assert wire_updates(sent, C1) == [] and text_lines(sent, C1) == []  # C1 is not up: held back
    sent.clear()
    up(engine, C1)
    updates = wire_updates(sent, C1)
    assert sorted(p for u in updates for p in u.announce) == ["10.65.0.0/26", "10.65.0.64/26"]
    reflected = updates[0]
    assert reflected.next_hop == SOURCE
    assert reflected.attrs.originator_id == SOURCE and reflected.attrs.cluster_list == ("244.0.0.1",)
    assert reflected.attrs.communities == ("64512:7",) and reflected.attrs.local_pref == 100
    assert sent[-1] == f"neighbor {C1} announce eor ipv4 unicast"  # after the routes
    assert text_lines(sent, C1) == [sent[-1]]


def test_changes_follow_as_bytes_and_withdraws_too() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    up(engine, C1)
    sent.clear()
    learn(engine, "10.65.1.0/26")
    assert [u.announce for u in wire_updates(sent, C1)] == [("10.65.1.0/26",)]
    assert wire_updates(sent, SOURCE) == []  # never back to where it came from
    sent.clear()
    engine.handle(api.Update(SOURCE, 64512, PathAttrs(), withdraw=("10.65.1.0/26",)), 0)
    engine.flush()
    assert [u.withdraw for u in wire_updates(sent, C1)] == [("10.65.1.0/26",)]


def test_reconnect_resends_the_whole_table_and_withdraws_what_went_meanwhile() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    up(engine, C1)
    learn(engine, "10.65.2.0/26", "10.65.2.64/26")
    engine.handle(api.StateChange(C1, "down", "peer reset"), 1)
    sent.clear()
    engine.handle(api.Update(SOURCE, 64512, PathAttrs(), withdraw=("10.65.2.64/26",)), 1)
    learn(engine, "10.65.3.0/26")
    assert wire_updates(sent, C1) == []  # down: nothing goes out
    up(engine, C1)
    updates = wire_updates(sent, C1)
    assert sorted(p for u in updates for p in u.announce) == ["10.65.2.0/26", "10.65.3.0/26"]
    assert [p for u in updates for p in u.withdraw] == ["10.65.2.64/26"]


def test_sessions_without_asn4_or_with_add_path_use_text() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    learn(engine, "10.65.4.0/26")
    sent.clear()
    up(engine, C1, asn4=False)
    up(engine, C2, add_path=True)
    for peer in (C1, C2):
        assert wire_updates(sent, peer) == []
        assert any(
            "announce attributes" in line and "10.65.4.0/26" in line for line in text_lines(sent, peer)
        )


def test_an_exabgp_without_the_wire_patch_never_gets_wire_commands() -> None:
    engine, sent = make()
    up(engine, SOURCE, negotiated=False)
    up(engine, C1, negotiated=False)  # no Negotiated event: ExaBGP was not started in wire mode
    sent.clear()
    learn(engine, "10.65.5.0/26")
    assert not any("felixpy-wire" in line for line in sent)
    assert any("10.65.5.0/26" in line for line in text_lines(sent, C1))


def test_ebgp_peers_and_non_reflectors_stay_on_text() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    up(engine, TOR)
    sent.clear()
    learn(engine, "10.65.6.0/26")
    assert wire_updates(sent, TOR) == []
    plain, sent2 = make(cluster=None)
    up(plain, SOURCE)
    up(plain, C1)
    sent2.clear()
    learn(plain, "10.65.6.0/26")
    assert not any("felixpy-wire" in line for line in sent2)


def test_wire_update_events_parse_from_exabgp_packets_json() -> None:
    message = wire.encode_announce("10.0.0.2", PathAttrs(med=5), ["10.65.7.0/26"])[0]
    line = (
        '{"type": "update", "neighbor": {"address": {"local": "10.0.0.1", "peer": "10.0.0.2"}, '
        '"asn": {"local": 64512, "peer": 64512}, "direction": "receive", '
        f'"message": {{"category": 2, "header": "0x{message[:19].hex()}", '
        f'"body": "0x{message[19:].hex()}"}}}}}}'
    )
    event = api.parse_line(line)
    assert event == api.Update(
        "10.0.0.2",
        64512,
        PathAttrs(med=5, local_pref=100),
        canonical=True,
        nlri=(("10.0.0.2", ("10.65.7.0/26",)),),
    )
    assert event.announced() == [api.Announce("10.65.7.0/26", "10.0.0.2")]
    eor = wire.encode_eor("ipv4 unicast")
    line = line.replace(message[19:].hex(), eor[19:].hex())
    assert api.parse_line(line) == api.EndOfRib("10.0.0.2", "ipv4 unicast")
    broken = line.replace(f'"body": "0x{eor[19:].hex()}"', '"body": "0x00ff"')
    assert isinstance(api.parse_line(broken), api.Other)


def test_each_client_gets_what_reflection_allows_it_from_mixed_sources() -> None:
    """Routes are batched by (attributes, next hop, source): the per-peer rules still hold per route."""
    engine, sent = make()
    for peer in (SOURCE, C1, C2):
        up(engine, peer)
    sent.clear()
    learn(engine, "10.65.10.0/26")  # from SOURCE
    engine.handle(api.Update(C1, 64512, PathAttrs(), (api.Announce("10.65.11.0/26", C1),)), 0)
    looped = PathAttrs(originator_id=C2)  # came around from C2 through another reflector
    engine.handle(api.Update(SOURCE, 64512, looped, (api.Announce("10.65.12.0/26", SOURCE),)), 0)
    engine.flush()

    def got(peer: str) -> dict[str, str | None]:
        return {p: u.attrs.originator_id for u in wire_updates(sent, peer) for p in u.announce}

    assert got(C1) == {"10.65.10.0/26": SOURCE, "10.65.12.0/26": C2}  # not its own route back
    assert got(C2) == {"10.65.10.0/26": SOURCE, "10.65.11.0/26": C1}  # not the one it originated
    assert got(SOURCE) == {"10.65.11.0/26": C1}


def test_decoder_seeds_prefix_keys_equal_to_computed_ones() -> None:
    import ipaddress

    from bgp import route

    prefixes = ["10.65.13.0/26", "10.0.0.0/8", "0.0.0.0/0", "fd00:13::/64", "2001:db8::1:0/112"]
    v4 = wire.encode_announce("10.0.0.2", PathAttrs(), prefixes[:3])
    v6 = wire.encode_announce("fd00::2", PathAttrs(), prefixes[3:])
    route._KEYS.clear()
    wire._prefix_text.cache_clear()  # decoded before in this process: nothing would be seeded
    for message in v4 + v6:
        wire.decode_update(message[19:])
    for prefix in prefixes:
        net = ipaddress.ip_network(prefix)
        assert route._KEYS[prefix] == (net.version, int(net.network_address), net.prefixlen)


def test_route_refresh_on_a_wire_session_resends_the_table() -> None:
    engine, sent = make()
    up(engine, SOURCE)
    up(engine, C1)
    learn(engine, "10.65.14.0/26")
    sent.clear()
    engine.handle(api.RouteRefresh(C1), 0)
    assert [u.announce for u in wire_updates(sent, C1)] == [("10.65.14.0/26",)]
    line = '{"type": "felixpy-refresh", "neighbor": {"address": {"local": "10.0.0.1", "peer": "10.0.0.3"}}}'
    assert api.parse_line(line) == api.RouteRefresh(C1)


def test_clients_with_the_same_updates_share_one_command() -> None:
    """A reflector encodes once; ExaBGP gets one command naming every client that gets the same
    messages (``neighbor a , neighbor b felixpy-wire ...``), not one copy per client."""
    engine, sent = make()
    for peer in (SOURCE, C1, C2):
        up(engine, peer)
    sent.clear()
    learn(engine, "10.65.20.0/26", "10.65.20.64/26")
    wired = [line for line in sent if " felixpy-wire " in line]
    assert len(wired) == 1, wired
    assert wire_targets(wired[0])[0] == [C1, C2]
    for client in (C1, C2):
        assert sorted(p for u in wire_updates(sent, client) for p in u.announce) == [
            "10.65.20.0/26",
            "10.65.20.64/26",
        ]
    assert wire_updates(sent, SOURCE) == []  # never back to where it came from


def test_merge_keeps_each_peers_order_and_separates_different_payloads() -> None:
    a = ["neighbor 10.0.0.3 felixpy-wire AA BB", "neighbor 10.0.0.3 felixpy-wire CC"]
    b = ["neighbor 10.0.0.4 felixpy-wire AA BB", "neighbor 10.0.0.4 felixpy-wire CC"]
    c = ["neighbor 10.0.0.5 felixpy-wire DD"]
    merged = api.merge_wire_commands([("10.0.0.3", a), ("10.0.0.4", b), ("10.0.0.5", c)])
    assert merged == [
        "neighbor 10.0.0.3 , neighbor 10.0.0.4 felixpy-wire AA BB",
        "neighbor 10.0.0.3 , neighbor 10.0.0.4 felixpy-wire CC",
        "neighbor 10.0.0.5 felixpy-wire DD",
    ]
    assert wire_targets(merged[0]) == (["10.0.0.3", "10.0.0.4"], ["AA", "BB"])
    text = ["neighbor 10.0.0.6 announce route 10.0.0.0/8 next-hop self"]
    assert api.merge_wire_commands([("10.0.0.6", text), ("10.0.0.5", c)]) == [*text, *c]


def test_a_table_withdrawn_at_once_reaches_every_client_and_falls_back_where_another_path_exists() -> None:
    """The bulk withdraw path: prefixes left with no path are withdrawn from every client in
    one go; a prefix another client also sent goes on, now reflected from that client."""
    engine, sent = make()
    for peer in (SOURCE, C1, C2):
        up(engine, peer)
    table = [f"10.65.{i // 4}.{(i % 4) * 64}/26" for i in range(40)]
    learn(engine, *table)
    engine.handle(api.Update(C2, 64512, PathAttrs(local_pref=50), (api.Announce(table[7], C2),)), 0)
    engine.flush()
    sent.clear()
    engine.handle(api.Update(SOURCE, 64512, PathAttrs(), withdraw=tuple(table)), 0)
    engine.flush()
    assert sorted(p for u in wire_updates(sent, C1) for p in u.withdraw) == sorted(set(table) - {table[7]})
    assert [(u.announce, u.attrs.originator_id) for u in wire_updates(sent, C1) if u.announce] == [
        ((table[7],), C2)
    ]
    assert all(not u.withdraw for u in wire_updates(sent, SOURCE))  # it never had them from us
    assert engine.adv.count(C1) == 1 and engine.adv.count(C2) == 0
