"""``bgp.node_status.build_status``: CalicoNodeStatus ``status`` in Calico's shape, per class and
IP version, from the BGP service's state (pure)."""

from __future__ import annotations

from bgp.node_status import build_status
from bgp.status import PeerStatus

PEERS = [
    PeerStatus("10.0.0.2", "node-to-node mesh", "up", 1_700_000_000.0, "Established"),
    PeerStatus("10.0.0.9", "global", "start", 1_700_000_001.0, "Active Connect: connection refused"),
    PeerStatus("10.0.0.3", "node specific (RR client)", "start", 0.0, "OpenSent"),
    PeerStatus("fd00::9", "global", "up", 1_700_000_002.0, "Established"),
]
VIEW = {
    "peers": [
        {"peer": "10.0.0.2", "received": [
            {"prefix": "10.65.2.0/26", "nextHop": "10.0.0.2", "status": "best"},
            {"prefix": "10.65.3.0/26", "nextHop": "10.0.0.2", "status": "rejected"},
        ]},
        {"peer": "fd00::9", "received": [
            {"prefix": "fd00:65:0:9::/122", "nextHop": "fd00::9", "status": "best"},
        ]},
    ],
    "kernel": [{"prefix": "10.65.2.0/26", "via": ["10.0.0.2 dev eth0"], "from": ["10.0.0.2"]}],
    "exports": ["10.65.1.0/26"],
}  # fmt: skip


def build(classes: list[str], **kw: object) -> dict[str, object]:
    args: dict[str, object] = dict(now=1_700_000_100.0, running=True, version="felixpy 1 (ExaBGP)",
                                   router_id="10.0.0.1", families=(4, 6), started=1_700_000_000.0,
                                   configured=0.0, peers=PEERS, view=VIEW)  # fmt: skip
    args.update(kw)
    return build_status(classes, **args)  # type: ignore[arg-type]


def test_only_the_classes_asked_for() -> None:
    assert set(build(["BGP"])) == {"lastUpdated", "bgp"}
    assert set(build([])) == {"lastUpdated"}
    assert set(build(["Agent", "BGP", "Routes"])) == {"lastUpdated", "agent", "bgp", "routes"}
    assert build([])["lastUpdated"] == "2023-11-14T22:15:00Z"


def test_agent_per_family_and_not_ready() -> None:
    agent = build(["Agent"])["agent"]
    assert set(agent) == {"birdV4", "birdV6"}  # type: ignore[arg-type]
    assert agent["birdV4"] == {  # type: ignore[index]
        "state": "Ready", "version": "felixpy 1 (ExaBGP)", "routerID": "10.0.0.1",
        "lastBootTime": "2023-11-14T22:13:20Z", "lastReconfigurationTime": "",
    }  # fmt: skip
    down = build(["Agent"], running=False, families=(4,))["agent"]
    assert down == {"birdV4": {**agent["birdV4"], "state": "NotReady"}}  # type: ignore[index]


def test_bgp_counts_types_and_states() -> None:
    bgp = build(["BGP"])["bgp"]
    assert (bgp["numberEstablishedV4"], bgp["numberNotEstablishedV4"]) == (1, 2)  # type: ignore[index]
    assert (bgp["numberEstablishedV6"], bgp["numberNotEstablishedV6"]) == (1, 0)  # type: ignore[index]
    assert bgp["peersV4"] == [  # type: ignore[index]
        {"peerIP": "10.0.0.2", "type": "NodeMesh", "state": "Established", "since": "2023-11-14T22:13:20Z"},
        {"peerIP": "10.0.0.9", "type": "GlobalPeer", "state": "Active", "since": "2023-11-14T22:13:21Z"},
        {"peerIP": "10.0.0.3", "type": "NodePeer", "state": "OpenSent", "since": ""},
    ]
    assert "peersV6" not in build(["BGP"], peers=PEERS[:3])["bgp"]  # type: ignore[operator]


def test_routes_fib_and_rib() -> None:
    routes = build(["Routes"])["routes"]
    assert routes["routesV4"] == [  # type: ignore[index]
        {"type": "FIB", "destination": "10.65.2.0/26", "gateway": "10.0.0.2", "interface": "eth0",
         "learnedFrom": {"sourceType": "NodeMesh", "peerIP": "10.0.0.2"}},
        {"type": "RIB", "destination": "10.65.2.0/26", "gateway": "10.0.0.2", "interface": "",
         "learnedFrom": {"sourceType": "NodeMesh", "peerIP": "10.0.0.2"}},
        {"type": "RIB", "destination": "10.65.1.0/26", "gateway": "", "interface": "",
         "learnedFrom": {"sourceType": "Static"}},
    ]  # fmt: skip
    assert routes["routesV6"] == [  # type: ignore[index]
        {"type": "RIB", "destination": "fd00:65:0:9::/122", "gateway": "fd00::9", "interface": "",
         "learnedFrom": {"sourceType": "BGPPeer", "peerIP": "fd00::9"}},
    ]  # fmt: skip
    assert build(["Routes"], view=None)["routes"] == {}
