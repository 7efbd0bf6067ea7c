"""eBGP forwarding and IPv6 sessions, against BIRD 2.

* A node (AS 64512) between two eBGP BIRD peers (AS 65001, AS 65002): what it learns from
  one it forwards to the other with its own AS prepended (ExaBGP sends an explicit AS_PATH
  verbatim, so the agent must prepend), next hop itself; a path that already carries our AS
  is refused (loop).
* An IPv6-only session: the node announces its /122 block to BIRD and installs BIRD's /122.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, services, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp


def ebgp_bird(router_id: str, asn: int, neighbor: str, statics: list[str], path: str = "") -> str:
    routes = "\n".join(f"    route {p} blackhole;" for p in statics)
    prepend = f"bgp_path.prepend({path});" if path else ""
    return f"""router id {router_id};
protocol device {{ }}
protocol static st {{ ipv4; {routes} }}
protocol bgp felix {{
    local {router_id} as {asn};
    neighbor 10.0.0.1 as 64512;
    connect retry time 1;
    ipv4 {{ import all; export filter {{ if proto = "st" then {{ {prepend} accept; }} reject; }}; }};
}}
"""


def peer(name: str, ip: str, asn: int) -> BGPPeer:
    return BGPPeer(metadata=ObjectMeta(name=name), spec=BGPPeerSpec(peer_ip=ip, as_number=asn))


def test_ebgp_forwarding_prepends_our_as(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_n = seg.attach("n", "10.0.0.1/24")
    ns_x, ns_y = seg.attach("x", "10.0.0.2/24"), seg.attach("y", "10.0.0.3/24")
    x = Bird(ns_x, tmp_path / "x", ebgp_bird("10.0.0.2", 65001, "10.0.0.1", ["10.65.9.0/26"]))
    # Y announces one route whose path already holds 64512: the node must refuse it
    y = Bird(ns_y, tmp_path / "y", ebgp_bird("10.0.0.3", 65002, "10.0.0.1", ["10.65.8.0/26"], "64512"))
    try:
        svc = services("n", ns_n)
        peers = [peer("x", "10.0.0.2", 65001), peer("y", "10.0.0.3", 65002)]
        svc.update(
            nodes=[node("n", "10.0.0.1")],
            bgp_configs=[],
            peers=peers,
            pools=[POOL],
            local_blocks=["10.65.0.0/26"],
        )
        svc.start()
        wait_for(lambda: "10.65.9.0/26" in y.cli("show", "route", "protocol", "felix"), "X's route at Y")
        detail = y.cli("show", "route", "10.65.9.0/26", "all")
        assert "BGP.as_path: 64512 65001" in detail, detail  # our AS first, then the origin's
        assert "via 10.0.0.1" in detail  # next hop self towards eBGP
        assert "BGP.originator_id" not in detail and "BGP.cluster_list" not in detail
        # our own block is a separate announcement: awaited at Y too, not assumed with X's route
        wait_for(lambda: "10.65.0.0/26" in y.cli("show", "route", "protocol", "felix"), "our block at Y")
        own = y.cli("show", "route", "10.65.0.0/26", "all")
        assert "BGP.as_path: 64512\n" in own or own.rstrip().endswith("BGP.as_path: 64512"), own
        assert "10.65.9.0/26 via 10.0.0.2" in kernel_routes(ns_n)
        wait_for(lambda: svc.status() and all(p.routes_received for p in svc.status()), "both peers' routes")
        assert "10.65.8.0/26" not in kernel_routes(ns_n)  # AS loop: refused
        assert "10.65.8.0/26" not in x.cli("show", "route", "protocol", "felix")
    finally:
        x.stop()
        y.stop()


def test_ipv6_session_with_bird(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_n, ns_b = seg.attach("n", "10.0.0.1/24"), seg.attach("b", "10.0.0.2/24")
    for ns, address in ((ns_n, "fd99:1::1/64"), (ns_b, "fd99:1::2/64")):
        ns.run("ip", "-6", "addr", "add", address, "dev", "eth0", "nodad")
    bird = Bird(
        ns_b,
        tmp_path / "b",
        """router id 10.0.0.2;
protocol device { }
protocol static st6 { ipv6; route fd00:65:0:9::/122 blackhole; }
protocol bgp felix {
    local fd99:1::2 as 64512;
    neighbor fd99:1::1 as 64512;
    direct;
    connect retry time 1;
    ipv6 { import all; export where proto = "st6"; next hop self; };
}
""",
    )
    try:
        svc = services("n", ns_n)
        bgp = NodeBGPSpec(ipv6_address="fd99:1::1/64")
        me = Node(metadata=ObjectMeta(name="n"), spec=NodeSpec(bgp=bgp))
        pool6 = IPPool(metadata=ObjectMeta(name="v6"), spec=IPPoolSpec(cidr="fd00:65::/48"))
        svc.update(
            nodes=[me],
            bgp_configs=[],
            peers=[peer("b6", "fd99:1::2", 64512)],
            pools=[POOL, pool6],
            local_blocks=["fd00:65::/122"],
        )
        svc.start()

        def v6_routes() -> str:
            return ns_n.run("ip", "-6", "route", "show", "proto", "81")

        wait_for(lambda: "fd00:65:0:9::/122 via fd99:1::2" in v6_routes(), "BIRD's /122 in the kernel")
        wait_for(
            lambda: "fd00:65::/122" in bird.cli("show", "route", "protocol", "felix"), "our /122 at BIRD"
        )
        assert "via fd99:1::1" in bird.cli("show", "route", "fd00:65::/122", "all")
        status = svc.status()
        assert [(p.address, p.info, p.family) for p in status] == [("fd99:1::2", "Established", 6)]
    finally:
        bird.stop()


def bird_v6_client(router_id: str, address: str, statics: list[str]) -> str:
    routes = " ".join(f"route {p} blackhole;" for p in statics)
    return f"""router id {router_id};
protocol device {{ }}
protocol static st6 {{ ipv6; {routes} }}
protocol bgp felix {{
    local {address} as 64512;
    neighbor fd99:1::1 as 64512;
    direct;
    connect retry time 1;
    ipv6 {{ import all; export where proto = "st6"; next hop self; }};
}}
"""


def test_our_reflector_reflects_ipv6_between_bird_clients_in_wire_mode(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    """IPv6 over IPv6 sessions through the reflector's wire mode: MP_REACH/MP_UNREACH that the
    agent decodes and encodes itself, read by BIRD."""
    seg = Segment(netns)
    ns_r = seg.attach("r", "10.0.0.1/24")
    ns_1, ns_2 = seg.attach("b1", "10.0.0.2/24"), seg.attach("b2", "10.0.0.3/24")
    for ns, address in ((ns_r, "fd99:1::1/64"), (ns_1, "fd99:1::2/64"), (ns_2, "fd99:1::3/64")):
        ns.run("ip", "-6", "addr", "add", address, "dev", "eth0", "nodad")
    b1 = Bird(ns_1, tmp_path / "b1", bird_v6_client("10.0.0.2", "fd99:1::2", ["fd00:65:0:1::/122"]))
    b2 = Bird(ns_2, tmp_path / "b2", bird_v6_client("10.0.0.3", "fd99:1::3", ["fd00:65:0:2::/122"]))
    try:
        rr = services("r", ns_r)
        bgp = NodeBGPSpec(
            ipv4_address="10.0.0.1/24", ipv6_address="fd99:1::1/64", route_reflector_cluster_id="244.0.0.1"
        )
        me = Node(metadata=ObjectMeta(name="r"), spec=NodeSpec(bgp=bgp))
        pool6 = IPPool(metadata=ObjectMeta(name="v6"), spec=IPPoolSpec(cidr="fd00:65::/48"))
        mesh_off = BGPConfiguration(
            metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False)
        )
        peers = [peer(f"b{i}", ip, 64512) for i, ip in enumerate(("fd99:1::2", "fd99:1::3"))]
        rr.update(nodes=[me], bgp_configs=[mesh_off], peers=peers, pools=[POOL, pool6], local_blocks=[])
        rr.start()
        wait_for(
            lambda: "fd00:65:0:1::/122" in b2.cli("show", "route", "protocol", "felix"), "b1's /122 at b2"
        )
        detail = b2.cli("show", "route", "fd00:65:0:1::/122", "all")
        assert "via fd99:1::2" in detail, detail  # next hop kept: reflected, not re-originated
        assert "BGP.originator_id: 10.0.0.2" in detail and "BGP.cluster_list: 244.0.0.1" in detail
        wait_for(
            lambda: "fd00:65:0:2::/122" in b1.cli("show", "route", "protocol", "felix"), "b2's /122 at b1"
        )
        assert rr.speaker.settings.wire and all(s.wire for s in rr.engine.sessions.values())
        b1.cli("disable", "st6")  # the withdraw goes out as MP_UNREACH
        wait_for(lambda: "fd00:65:0:1::/122" not in b2.cli("show", "route", "protocol", "felix"), "withdrawn")
    finally:
        b1.stop()
        b2.stop()
