"""bgp.topology: which sessions a node runs, as tables of (resources → sessions)."""

from __future__ import annotations

import pytest

from bgp.topology import compute_peers, parse_asn, parse_duration, peer_name, split_peer_ip
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPassword, BGPPeer, BGPPeerSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec


def node(
    name: str,
    ip: str | None,
    *,
    v6: str | None = None,
    asn: int | None = None,
    rr: str | None = None,
    labels: dict[str, str] | None = None,
) -> Node:
    bgp = NodeBGPSpec(
        ipv4_address=f"{ip}/24" if ip else None,
        ipv6_address=f"{v6}/64" if v6 else None,
        as_number=asn,
        route_reflector_cluster_id=rr,
    )
    return Node(metadata=ObjectMeta(name=name, labels=labels or {}), spec=NodeSpec(bgp=bgp))


def cfg(name: str = "default", **spec: object) -> BGPConfiguration:
    return BGPConfiguration(metadata=ObjectMeta(name=name), spec=BGPConfigurationSpec(**spec))


def peer(name: str, **spec: object) -> BGPPeer:
    return BGPPeer(metadata=ObjectMeta(name=name), spec=BGPPeerSpec(**spec))


NODES = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2"), node("n3", "10.0.0.3")]


def summary(sessions: list) -> list[tuple[str, str, bool, bool]]:
    return [(s.address, s.type, s.passive, s.rr_client) for s in sessions]


def test_full_mesh_skips_self_and_lower_address_opens() -> None:
    got = compute_peers("n2", NODES, [], [])
    assert summary(got) == [
        ("10.0.0.1", "node-to-node mesh", False, False),
        ("10.0.0.3", "node-to-node mesh", True, False),
    ]
    assert got[0].name == "Mesh_10_0_0_1"
    assert (got[0].local_as, got[0].peer_as, got[0].local_address, got[0].router_id) == (
        64512,
        64512,
        "10.0.0.2",
        "10.0.0.2",
    )


@pytest.mark.parametrize(
    ("configs", "peers", "expected"),
    [
        ([cfg(node_to_node_mesh_enabled=False)], [], []),
        (
            [cfg(node_to_node_mesh_enabled=False)],
            [peer("g", peer_ip="192.0.2.1", as_number=65000)],
            [("192.0.2.1", "global", False, False)],
        ),
        (
            [cfg(node_to_node_mesh_enabled=False)],
            [peer("x", node="n3", peer_ip="192.0.2.9", as_number=65000)],
            [],
        ),
        (
            [cfg(node_to_node_mesh_enabled=False)],
            [peer("me", node="n1", peer_ip="192.0.2.9", as_number=65000)],
            [("192.0.2.9", "node specific", False, False)],
        ),
        (
            [cfg(node_to_node_mesh_enabled=False)],
            [peer("sel", node_selector="rack == 'a'", peer_ip="192.0.2.7", as_number=65001)],
            [("192.0.2.7", "node specific", False, False)],
        ),
        # a global peer that duplicates a mesh session is not added twice
        (
            [],
            [peer("dup", peer_ip="10.0.0.2", as_number=64512)],
            [("10.0.0.2", "node-to-node mesh", True, False), ("10.0.0.3", "node-to-node mesh", True, False)],
        ),
    ],
)
def test_bgppeer_expansion(configs: list, peers: list, expected: list) -> None:
    nodes = [node("n1", "10.0.0.1", labels={"rack": "a"}), node("n2", "10.0.0.2"), node("n3", "10.0.0.3")]
    assert summary(compute_peers("n1", nodes, configs, peers)) == expected


def test_route_reflector_topology_with_reverse_peering() -> None:
    nodes = [
        node("rr1", "10.0.0.10", rr="244.0.0.1", labels={"rr": "true"}),
        node("rr2", "10.0.0.11", rr="244.0.0.1", labels={"rr": "true"}),
        node("c1", "10.0.0.1"),
        node("c2", "10.0.0.2"),
    ]
    configs = [cfg(node_to_node_mesh_enabled=False)]
    peers = [peer("rr", node_selector="all()", peer_selector="rr == 'true'")]
    # clients peer with both reflectors, never with each other; "10.0.0.1" < "10.0.0.10": c1 opens
    assert summary(compute_peers("c1", nodes, configs, peers)) == [
        ("10.0.0.10", "node specific", True, False),
        ("10.0.0.11", "node specific", True, False),
    ]
    # the reflector: same-cluster reflector is a plain iBGP peer, the rest are clients; it reverse-peers
    rr = compute_peers("rr1", nodes, configs, peers)
    assert summary(rr) == [
        ("10.0.0.11", "node specific", True, False),
        ("10.0.0.1", "node specific", False, True),
        ("10.0.0.2", "node specific", True, True),  # text order, as Calico: "10.0.0.2" > "10.0.0.10"
    ]
    assert {s.rr_cluster_id for s in rr if s.rr_client} == {"244.0.0.1"}


def test_reflectors_are_not_mesh_targets_and_do_not_mesh() -> None:
    nodes = [*NODES, node("rr", "10.0.0.9", rr="244.0.0.1")]
    assert [s.address for s in compute_peers("n1", nodes, [], [])] == ["10.0.0.2", "10.0.0.3"]
    assert compute_peers("rr", nodes, [], []) == []


def test_per_node_as_ebgp_and_session_options() -> None:
    nodes = [node("n1", "10.0.0.1", asn=65001), node("n2", "10.0.0.2", asn=65002)]
    configs = [
        cfg(node_mesh_password=BGPPassword(value="s3cret"), node_mesh_max_restart_time="5m"),
        cfg("node.n2", listen_port=1790),
    ]
    (s,) = compute_peers("n1", nodes, configs, [])
    assert (s.local_as, s.peer_as, s.ebgp, s.port, s.md5, s.graceful_restart_time) == (
        65001,
        65002,
        True,
        1790,
        "s3cret",
        300,
    )
    assert s.name == "Mesh_10_0_0_2_port_1790"


def test_peer_options_and_ipv6() -> None:
    nodes = [node("n1", "10.0.0.1", v6="fd00::1"), node("n2", "10.0.0.2", v6="fd00::2")]
    peers = [
        peer(
            "p",
            peer_ip="[fd00::99]:1179",
            as_number="1.10",
            password=BGPPassword(value="pw"),
            keep_original_next_hop=True,
            max_restart_time="90s",
        )
    ]
    got = compute_peers("n1", nodes, [cfg(node_to_node_mesh_enabled=True)], peers)
    assert [(s.address, s.families) for s in got] == [
        ("10.0.0.2", ("ipv4 unicast",)),
        ("fd00::2", ("ipv6 unicast",)),
        ("fd00::99", ("ipv6 unicast",)),
    ]
    ext = got[-1]
    assert (
        ext.port,
        ext.peer_as,
        ext.md5,
        ext.keep_original_next_hop,
        ext.graceful_restart_time,
        ext.local_address,
        ext.router_id,
    ) == (1179, 65546, "pw", True, 90, "fd00::1", "10.0.0.1")


def test_secret_reference_is_resolved_through_the_callback() -> None:
    from felixpy.resources.bgp import SecretKeyRef

    pw = BGPPassword(secret_key_ref=SecretKeyRef(name="bgp", key="k"))
    peers = [peer("p", peer_ip="192.0.2.1", as_number=65000, password=pw)]
    got = compute_peers(
        "n1", NODES, [cfg(node_to_node_mesh_enabled=False)], peers, resolve_secret=lambda n, k: f"{n}/{k}"
    )
    assert got[0].md5 == "bgp/k"


@pytest.mark.parametrize(("text", "value"), [(None, 7), ("64512", 64512), (65000, 65000), ("1.10", 65546)])
def test_parse_asn(text: object, value: int) -> None:
    assert parse_asn(text, 7) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "value"), [("120s", 120), ("2m", 120), ("1h30m", 5400), (None, 9), ("", 9)])
def test_parse_duration(text: str | None, value: int) -> None:
    assert parse_duration(text, 9) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10.0.0.1", ("10.0.0.1", None)),
        ("10.0.0.1:1790", ("10.0.0.1", 1790)),
        ("fd00::1", ("fd00::1", None)),
        ("[fd00::1]:179", ("fd00::1", 179)),
    ],
)
def test_split_peer_ip(text: str, value: tuple) -> None:
    assert split_peer_ip(text) == value


def test_peer_names_follow_calico() -> None:
    assert peer_name("global", "fd00::1") == "Global_fd00__1"
    assert peer_name("node specific", "10.0.0.1", 1790) == "Node_10_0_0_1_port_1790"
