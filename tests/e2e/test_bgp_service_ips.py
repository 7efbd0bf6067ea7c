"""Service IP advertisement against BIRD 2 as a top-of-rack router, with real ExaBGP processes and
kernel routes in throwaway namespaces.

Three felixpy nodes (AS 64512, full mesh) each peer with the ToR (AS 65001). The default
BGPConfiguration has ``serviceClusterIPs: [{cidr: 10.96.0.0/12}]``:

* nodes a and b advertise 10.96.0.0/12 with themselves as next hop: BIRD holds both paths and its
  kernel protocol (``merge paths on``) installs one ECMP route over both nodes;
* node c carries ``node.kubernetes.io/exclude-from-external-load-balancers=true``: it advertises its
  pod block to the ToR but not the service range;
* every node receives the range from its mesh peers and installs none of it (it would send service
  traffic to another node instead of its own kube-proxy), while the pod blocks install;
* the range leaves the configuration: both nodes withdraw it and the ToR's route goes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.filters import EXCLUDE_LABEL
from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, ServiceCIDR
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, services, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp

SERVICE_RANGE = "10.96.0.0/12"
TOR, TOR_AS = "10.0.0.9", 65001
NODES = {
    "a": ("10.0.0.1", "10.65.0.0/26"),
    "b": ("10.0.0.2", "10.65.1.0/26"),
    "c": ("10.0.0.4", "10.65.2.0/26"),
}


def tor_config() -> str:
    neighbors = "\n".join(
        f"protocol bgp {name} from node {{ neighbor {ip} as 64512; }}" for name, (ip, _) in NODES.items()
    )
    return f"""router id {TOR};
protocol device {{ }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths on;
}}
template bgp node {{
    local {TOR} as {TOR_AS};
    direct;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{ import all; export none; }};
}}
{neighbors}
"""


def default_config(*ranges: str) -> BGPConfiguration:
    spec = BGPConfigurationSpec(service_cluster_i_ps=[ServiceCIDR(cidr=r) for r in ranges])
    return BGPConfiguration(metadata=ObjectMeta(name="default"), spec=spec)


def test_service_range_is_advertised_by_every_node_and_installed_by_none(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_tor = seg.attach("tor", f"{TOR}/24")
    spaces = {name: seg.attach(name, f"{ip}/24") for name, (ip, _) in NODES.items()}
    bird = Bird(ns_tor, tmp_path / "tor", tor_config())
    nodes = [
        node("a", NODES["a"][0]),
        node("b", NODES["b"][0]),
        node("c", NODES["c"][0], labels={EXCLUDE_LABEL: "true"}),
    ]
    tor_peer = BGPPeer(metadata=ObjectMeta(name="tor"), spec=BGPPeerSpec(peer_ip=TOR, as_number=TOR_AS))
    try:
        svcs = {name: services(name, ns) for name, ns in spaces.items()}

        def configure(*ranges: str) -> None:
            for name, svc in svcs.items():
                svc.update(
                    nodes=nodes,
                    bgp_configs=[default_config(*ranges)],
                    peers=[tor_peer],
                    pools=[POOL],
                    local_blocks=[NODES[name][1]],
                )

        configure(SERVICE_RANGE)
        for svc in svcs.values():
            svc.start()

        def at_tor(prefix: str) -> str:
            return bird.cli("show", "route", prefix, "all")

        # the ToR holds the range from a and b (two paths, next hop each node) and never from c
        wait_for(
            lambda: "via 10.0.0.1" in at_tor(SERVICE_RANGE) and "via 10.0.0.2" in at_tor(SERVICE_RANGE),
            "the service range from a and b at the ToR",
            timeout=40,
        )
        detail = at_tor(SERVICE_RANGE)
        assert "BGP.as_path: 64512" in detail, detail
        wait_for(lambda: "via 10.0.0.4" in at_tor(NODES["c"][1]), "c's pod block at the ToR")
        assert "via 10.0.0.4" not in at_tor(SERVICE_RANGE), at_tor(SERVICE_RANGE)
        # and its kernel gets one route over both nodes (ECMP)
        ecmp = lambda: ns_tor.run("ip", "route", "show", SERVICE_RANGE)  # noqa: E731
        wait_for(lambda: "nexthop via 10.0.0.1" in ecmp() and "nexthop via 10.0.0.2" in ecmp(), "ECMP")

        # every node received the range from its mesh peers and installed none of it
        def received(name: str, peer: str) -> int:
            return next((p.routes_received for p in svcs[name].status() if p.address == peer), -1)

        wait_for(lambda: received("c", "10.0.0.1") == 2 and received("c", "10.0.0.2") == 2, "c received both")
        wait_for(lambda: received("a", "10.0.0.2") == 2, "a received b's block and range")
        wait_for(lambda: received("b", "10.0.0.1") == 2, "b received a's block and range")
        for name in NODES:
            for other, (ip, block) in NODES.items():  # each mesh session delivers on its own time
                if other != name:
                    wait_for(
                        lambda name=name, ip=ip, block=block: (
                            f"{block} via {ip}" in kernel_routes(spaces[name])
                        ),
                        f"{other}'s block in {name}'s kernel",
                    )
            routes = kernel_routes(spaces[name])
            assert SERVICE_RANGE not in routes, (name, routes)

        # the range leaves the configuration: withdrawn everywhere, the pod blocks stay
        configure()
        wait_for(lambda: SERVICE_RANGE not in at_tor(SERVICE_RANGE), "the range withdrawn at the ToR")
        wait_for(lambda: ecmp() == "", "the ToR's kernel route removed")
        assert "via 10.0.0.1" in at_tor(NODES["a"][1])
    finally:
        bird.stop()
