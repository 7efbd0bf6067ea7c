"""WireGuard's pure parts: peers, allowed IPs, the routing plan, the device config, MTU, calc."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from pydantic import ValidationError

from felixpy.calc.graph import CalcGraph
from felixpy.calc.updates import WgNode, WireguardUpdate
from felixpy.calc.wireguard import WireguardConfig, device_mtu, plan, render_config, valid_key
from felixpy.resources import FelixConfiguration, Node
from felixpy.runtime.settings import FelixParams
from felixpy.runtime.startup import pod_mtu

K1, K2, K3 = (base64.b64encode(bytes([i]) * 32).decode() for i in (1, 2, 3))
CFG = WireguardConfig(enabled=True)
BLOCKS = (("10.244.0.0/26", "node1"), ("10.244.1.0/26", "node2"), ("10.244.1.64/26", "node2"),
          ("10.244.2.0/26", "node3"))


def snap(*nodes: WgNode) -> WireguardUpdate:
    return WireguardUpdate(nodes=nodes, blocks=BLOCKS)


def test_a_peer_per_keyed_node_with_its_blocks_and_interface_address() -> None:
    p = plan("node1", snap(WgNode("node1", "10.99.1.10", K1), WgNode("node2", "10.99.1.11", K2, "10.244.1.1"),
                           WgNode("node3", "10.99.2.10", K3)), CFG)
    assert [(x.node, x.public_key, x.endpoint, x.allowed_ips) for x in p.peers] == [
        ("node2", K2, "10.99.1.11:51820", ("10.244.1.0/26", "10.244.1.1/32", "10.244.1.64/26")),
        ("node3", K3, "10.99.2.10:51820", ("10.244.2.0/26",)),
    ]
    assert p.routes == {"10.244.0.0/26": "throw", "10.244.1.0/26": "dev", "10.244.1.1/32": "dev",
                        "10.244.1.64/26": "dev", "10.244.2.0/26": "dev"}


def test_node_without_wireguard_is_reached_unencrypted() -> None:
    p = plan("node1", snap(WgNode("node1", "10.99.1.10", K1), WgNode("node2", "10.99.1.11", K2),
                           WgNode("node3", "10.99.2.10", None)), CFG)
    assert [x.node for x in p.peers] == ["node2"]
    assert p.routes["10.244.2.0/26"] == "throw"  # main table: plain routing / IPIP / VXLAN


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode(),
                                 base64.b64encode(bytes(32)).decode()])
def test_invalid_keys_program_no_peer(bad: str) -> None:
    assert not valid_key(bad)
    p = plan("node1", snap(WgNode("node2", "10.99.1.11", bad)), CFG)
    assert p.peers == () and p.routes["10.244.1.0/26"] == "throw"


def test_a_key_two_nodes_claim_programs_neither() -> None:
    p = plan("node1", snap(WgNode("node2", "10.99.1.11", K2), WgNode("node3", "10.99.2.10", K2)), CFG)
    assert p.peers == ()
    assert {p.routes[c] for c in ("10.244.1.0/26", "10.244.2.0/26")} == {"throw"}


def test_node_without_address_programs_no_peer() -> None:
    assert plan("node1", snap(WgNode("node2", None, K2)), CFG).peers == ()


def test_host_encryption_adds_the_node_address_and_options_reach_the_config() -> None:
    cfg = WireguardConfig(enabled=True, host_encryption=True, keepalive=25, listening_port=51999)
    p = plan("node1", snap(WgNode("node2", "10.99.1.11", K2)), cfg)
    assert "10.99.1.11/32" in p.peers[0].allowed_ips and p.routes["10.99.1.11/32"] == "dev"
    text = render_config("PRIVATE", p, cfg)
    assert text.splitlines()[:4] == ["[Interface]", "PrivateKey = PRIVATE", "ListenPort = 51999",
                                     "FwMark = 0x200000"]
    assert f"PublicKey = {K2}" in text and "Endpoint = 10.99.1.11:51999" in text
    assert "PersistentKeepalive = 25" in text
    assert "AllowedIPs = 10.244.1.0/26, 10.244.1.64/26, 10.99.1.11/32" in text


def test_mtu_accounting() -> None:
    assert device_mtu(CFG, 1500) == 1440 and device_mtu(WireguardConfig(mtu=1380), 1500) == 1380
    wg = FelixParams(wireguardEnabled=True)
    assert pod_mtu(wg, 1500, set()) == 1440
    assert pod_mtu(wg, 1500, {"ipip"}) == 1440 and pod_mtu(wg, 1500, {"vxlan"}) == 1440
    assert pod_mtu(FelixParams(), 1500, {"ipip"}) == 1480 and pod_mtu(FelixParams(), 1500, {"vxlan"}) == 1450
    assert pod_mtu(FelixParams(ipipMTU=1440), 1500, {"ipip"}) == 1440  # ipipMTU honoured
    assert pod_mtu(FelixParams(wireguardEnabled=True, wireguardMTU=1400), 9000, {"vxlan"}) == 1400
    assert pod_mtu(FelixParams(), 1500, set()) == 1500


def node(name: str, ip: str, key: str | None = None) -> Node:
    doc: dict = {"metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": f"{ip}/24"}}}
    if key:
        doc["status"] = {"wireguardPublicKey": key}
    return Node.model_validate(doc)


def test_calc_emits_a_snapshot_only_when_wireguard_inputs_change() -> None:
    g = CalcGraph("node1", wireguard=True)
    g.on_resource("Node", ("", "node1"), node("node1", "10.99.1.10", K1))
    g.on_resource("Node", ("", "node2"), node("node2", "10.99.1.11"))
    g.on_block("10.244.1.0/26", "node2")
    (u,) = [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    assert u.nodes == (WgNode("node1", "10.99.1.10", K1), WgNode("node2", "10.99.1.11", None))
    assert u.blocks == (("10.244.1.0/26", "node2"),)
    assert not [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    g.on_resource("Node", ("", "node2"), node("node2", "10.99.1.11", K2))  # node2 publishes its key
    (u,) = [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    assert [p.node for p in plan("node1", u, CFG).peers] == ["node2"]
    g.on_resource("Node", ("", "node2"), None)
    (u,) = [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    assert plan("node1", u, CFG).peers == ()
    assert not [x for x in CalcGraph("node1").flush() if isinstance(x, WireguardUpdate)]  # off by default


@pytest.mark.parametrize(("field", "value"), [
    ("wireguardListeningPort", 70000), ("wireguardListeningPort", 0), ("wireguardRoutingRulePriority", 40000),
    ("wireguardMTU", -1)])
def test_felixconfiguration_rejects_bad_wireguard_values(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as info:
        FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": {field: value}})
    assert field in str(info.value)


def test_felixconfiguration_wireguard_fields_resolve_to_params() -> None:
    spec = {"wireguardEnabled": True, "wireguardKeepAlive": "25s", "wireguardMTU": 1400,
            "wireguardInterfaceName": "wg.test", "wireguardRoutingRulePriority": 98}
    fc = FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": spec})
    params = FelixParams.resolve({}, None, fc.spec.model_dump(by_alias=True, exclude_none=True))
    assert (params.wireguardEnabled, params.wireguardKeepAlive, params.wireguardMTU) == (True, 25.0, 1400)
    assert (params.wireguardInterfaceName, params.wireguardRoutingRulePriority) == ("wg.test", 98)
    defaults = FelixParams()
    assert (defaults.wireguardListeningPort, defaults.wireguardInterfaceName) == (51820, "wireguard.cali")


def test_ipv6_device_calicos_defaults_its_own_family_bracketed_endpoints() -> None:
    """wg-v6.cali (wireguardEnabledV6): port 51821, MTU host - 80, only IPv6 blocks, [ip]:port endpoints,
    /128 host and interface addresses; the IPv4 device leaves the IPv6 blocks out as well."""
    v6 = WireguardConfig.v6(enabled=True, host_encryption=True)
    assert (v6.interface_name, v6.listening_port, v6.ipv6, v6.table) == ("wg-v6.cali", 51821, True, 2)
    assert device_mtu(v6, 1500) == 1420 and device_mtu(CFG, 1500) == 1440
    mixed = WireguardUpdate(
        nodes=(WgNode("node1", None, None, ip6="fd00:99::10", public_key_v6=K1),
               WgNode("node2", None, None, ip6="fd00:99::11", public_key_v6=K2,
                      interface_addr_v6="fd00:244:0:1::1")),
        blocks=(("10.244.0.0/26", "node1"), ("fd00:244::/122", "node1"), ("10.244.1.0/26", "node2"),
                ("fd00:244:0:1::/122", "node2")))
    p = plan("node1", mixed, v6)
    assert [(x.endpoint, x.allowed_ips) for x in p.peers] == [
        ("[fd00:99::11]:51821", ("fd00:244:0:1::/122", "fd00:244:0:1::1/128", "fd00:99::11/128"))]
    assert p.routes == {"fd00:244::/122": "throw", "fd00:244:0:1::/122": "dev", "fd00:244:0:1::1/128": "dev",
                        "fd00:99::11/128": "dev"}
    assert "Endpoint = [fd00:99::11]:51821" in render_config("cHJpdg==", p, v6)
    nodes_v4 = (WgNode("node1", "10.99.1.10", K1), WgNode("node2", "10.99.1.11", K2))
    v4 = plan("node1", WireguardUpdate(nodes=nodes_v4, blocks=mixed.blocks), CFG)
    assert set(v4.routes) == {"10.244.0.0/26", "10.244.1.0/26"}


def dual_node(name: str, ip: str, ip6: str, key: str | None = None, key6: str | None = None,
              wg6: str | None = None) -> Node:
    doc: dict = {"metadata": {"name": name},
                 "spec": {"bgp": {"ipv4Address": f"{ip}/24", "ipv6Address": f"{ip6}/64"}}, "status": {}}
    if key:
        doc["status"]["wireguardPublicKey"] = key
    if key6:
        doc["status"]["wireguardPublicKeyV6"] = key6
    if wg6:
        doc["spec"]["wireguard"] = {"interfaceIPv6Address": wg6}
    return Node.model_validate(doc)


DUAL_BLOCKS = (("10.244.0.0/26", "node1"), ("fd00:244::/122", "node1"), ("10.244.1.0/26", "node2"),
               ("fd00:244:0:1::/122", "node2"), ("10.244.2.0/26", "node3"), ("fd00:244:0:2::/122", "node3"))


def test_calc_tracks_each_nodes_ipv6_address_and_wireguard_public_key_v6() -> None:
    """wireguardEnabledV6: calc carries every Node's IPv6 address, status.wireguardPublicKeyV6 and
    spec.wireguard.interfaceIPv6Address; wg-v6.cali peers on those, wireguard.cali on the IPv4 ones.
    Each family has its own key: a node with only an IPv4 key is reached unencrypted over IPv6."""
    g = CalcGraph("node1", wireguard=True)
    g.on_resource("Node", ("", "node1"), dual_node("node1", "10.99.1.10", "fd00:99::10", K1, K2))
    k4, k5 = (base64.b64encode(bytes([i]) * 32).decode() for i in (4, 5))
    g.on_resource("Node", ("", "node2"), dual_node("node2", "10.99.1.11", "fd00:99::11", K3, k4,
                                                   wg6="fd00:245::2"))
    g.on_resource("Node", ("", "node3"), dual_node("node3", "10.99.2.10", "fd00:99::12", k5))
    for cidr, owner in DUAL_BLOCKS:
        g.on_block(cidr, owner)
    (u,) = [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    n2 = next(n for n in u.nodes if n.name == "node2")
    assert (n2.ip, n2.ip6, n2.public_key, n2.public_key_v6, n2.interface_addr_v6) == (
        "10.99.1.11", "fd00:99::11", K3, k4, "fd00:245::2")
    v6 = plan("node1", u, WireguardConfig.v6(enabled=True))
    assert [(p.node, p.public_key, p.endpoint, p.allowed_ips) for p in v6.peers] == [
        ("node2", k4, "[fd00:99::11]:51821", ("fd00:244:0:1::/122", "fd00:245::2/128"))]
    assert v6.routes == {"fd00:244::/122": "throw", "fd00:244:0:1::/122": "dev", "fd00:245::2/128": "dev",
                         "fd00:244:0:2::/122": "throw"}  # node3 has no IPv6 key: main table
    v4 = plan("node1", u, CFG)
    assert [(p.node, p.endpoint) for p in v4.peers] == [("node2", "10.99.1.11:51820"),
                                                        ("node3", "10.99.2.10:51820")]
    assert all(":" not in cidr for cidr in v4.routes)
    # node2 clears its IPv6 key (its wireguardEnabledV6 turned off): one snapshot, no IPv6 peer left
    g.on_resource("Node", ("", "node2"), dual_node("node2", "10.99.1.11", "fd00:99::11", K3))
    (u,) = [x for x in g.flush() if isinstance(x, WireguardUpdate)]
    assert plan("node1", u, WireguardConfig.v6(enabled=True)).peers == ()
    assert [p.node for p in plan("node1", u, CFG).peers] == ["node2", "node3"]


def test_a_key_claim_counts_within_its_family() -> None:
    """Calico programs no peer for a key two nodes claim; an IPv6 key equal to another node's IPv4 key
    is no claim conflict (the devices are separate), two IPv6 keys alike are."""
    nodes = (WgNode("node1", "10.99.1.10", K1, ip6="fd00:99::10", public_key_v6=K2),
             WgNode("node2", "10.99.1.11", K2, ip6="fd00:99::11", public_key_v6=K3),
             WgNode("node3", "10.99.2.10", K3, ip6="fd00:99::12", public_key_v6=K3))
    u = WireguardUpdate(nodes=nodes, blocks=DUAL_BLOCKS)
    assert [p.node for p in plan("node1", u, CFG).peers] == ["node2", "node3"]
    assert plan("node1", u, WireguardConfig.v6(enabled=True)).peers == ()  # K3 claimed twice over IPv6


def test_felixconfiguration_wireguard_v6_fields_resolve_to_params_and_are_validated() -> None:
    spec = {"wireguardEnabledV6": True, "wireguardListeningPortV6": 51999,
            "wireguardInterfaceNameV6": "wg6.test", "wireguardMTUV6": 1380}
    fc = FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": spec})
    params = FelixParams.resolve({}, None, fc.spec.model_dump(by_alias=True, exclude_none=True))
    assert (params.wireguardEnabledV6, params.wireguardListeningPortV6, params.wireguardInterfaceNameV6,
            params.wireguardMTUV6) == (True, 51999, "wg6.test", 1380)
    assert params.wireguardEnabled is False  # the IPv4 device is a separate switch
    d = FelixParams()
    assert (d.wireguardEnabledV6, d.wireguardListeningPortV6, d.wireguardInterfaceNameV6,
            d.wireguardMTUV6) == (False, 51821, "wg-v6.cali", 0)
    env = FelixParams.resolve({"FELIX_WIREGUARDENABLEDV6": "true"})
    assert env.wireguardEnabledV6 is True
    for field, value in (("wireguardListeningPortV6", 0), ("wireguardMTUV6", -1),
                         ("wireguardInterfaceNameV6", "x" * 16)):
        with pytest.raises(ValidationError) as info:
            FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": {field: value}})
        assert field in str(info.value)


def test_pod_mtu_with_ipv6_wireguard_takes_its_80_bytes() -> None:
    """Calico: WireGuard over IPv6 costs 80 bytes (1500 -> 1420); with several encapsulations, the
    smallest."""
    assert pod_mtu(FelixParams(wireguardEnabledV6=True), 1500, set()) == 1420
    assert pod_mtu(FelixParams(wireguardEnabled=True, wireguardEnabledV6=True), 9000, {"ipip"}) == 8920
    assert pod_mtu(FelixParams(wireguardEnabledV6=True, wireguardMTUV6=1300), 1500, {"vxlan"}) == 1300


def test_crosssubnet_two_racks_wireguard_peers_on_both_racks_ipip_only_for_nodes_without_it() -> None:
    """IPIP CrossSubnet and WireGuard both on, two racks (Calico's shape, reference wave 2 §2.3/§2.5):
    the main table keeps the CrossSubnet routes (same rack direct on eth0, other rack via tunl0 onlink),
    and the WireGuard table, consulted first by the ``not fwmark`` rule, sends every WireGuard peer's
    blocks over the device whichever rack it is in; only a node without a key (here in the other rack)
    is thrown back to the main table, so its traffic is IPIP, unencrypted. The encrypted UDP goes to
    node addresses, which no pool route covers: it is routed plainly, never IPIP in IPIP. Pod MTU:
    the smallest of IPIP's and WireGuard's (1440)."""
    from felixpy.resources import IPPool
    from tests.fixtures.calc_recorder import RecordingDataplane

    g, rec = CalcGraph("node1", ipip_routes=True, wireguard=True), RecordingDataplane()
    for name, ip, key in (("node1", "10.0.0.1", K1), ("node2", "10.0.0.2", K2),  # rack 1
                          ("node3", "10.0.9.3", K3), ("node4", "10.0.9.4", None)):  # rack 2
        doc: dict = {"metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": f"{ip}/24"}}}
        if key:
            doc["status"] = {"wireguardPublicKey": key}
        g.on_resource("Node", ("", name), Node.model_validate(doc))
    g.on_resource("IPPool", ("", "p"), IPPool.model_validate(
        {"metadata": {"name": "p"}, "spec": {"cidr": "192.168.0.0/16", "ipipMode": "CrossSubnet"}}))
    blocks = {"192.168.0.0/26": "node1", "192.168.1.0/26": "node2", "192.168.3.0/26": "node3",
              "192.168.4.0/26": "node4"}
    for cidr, owner in blocks.items():
        g.on_block(cidr, owner)
    batch = g.flush()
    rec.apply(batch)
    (u,) = [x for x in batch if isinstance(x, WireguardUpdate)]
    main = {dst: (r.kind, r.iface, r.gateway, r.onlink) for dst, r in rec.routes.items()}
    assert main["192.168.1.0/26"] == ("direct", None, "10.0.0.2", False)  # same rack: native
    assert main["192.168.3.0/26"] == ("ipip", "tunl0", "10.0.9.3", True)  # other rack: IPIP
    assert main["192.168.4.0/26"] == ("ipip", "tunl0", "10.0.9.4", True)
    p = plan("node1", u, CFG)
    assert [(x.node, x.endpoint) for x in p.peers] == [("node2", "10.0.0.2:51820"),
                                                       ("node3", "10.0.9.3:51820")]
    assert p.routes == {"192.168.0.0/26": "throw",  # our own pods: main table
                        "192.168.1.0/26": "dev",  # same rack: encrypted, not native
                        "192.168.3.0/26": "dev",  # other rack: encrypted, not IPIP
                        "192.168.4.0/26": "throw"}  # no key: main table's tunl0 route, unencrypted
    endpoints = [ipaddress.ip_address(x.endpoint.split(":")[0]) for x in p.peers]
    assert not any(e in ipaddress.ip_network(dst) for e in endpoints for dst in [*main, *p.routes])
    assert pod_mtu(FelixParams(wireguardEnabled=True), 1500, {"ipip"}) == 1440
    assert device_mtu(CFG, 1500) == 1440
