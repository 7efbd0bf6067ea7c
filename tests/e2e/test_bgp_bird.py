"""BGPService with BIRD 2 on the other side of route reflection, both ways round.

* BIRD 2 is the route reflector of three felixpy clients (mesh off): each client learns the
  others' blocks through BIRD, with BIRD's ORIGINATOR_ID / CLUSTER_LIST, and installs them
  with the owning node as next hop; a withdrawal travels the same way.
* Two BIRD 2 clients and one felixpy client of a felixpy reflector: a BIRD client's route
  reaches the other BIRD client and the felixpy client, and its withdrawal removes it from both.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from tests.e2e.test_bgp_exabgp import (
    POOL,
    Bird,
    Segment,
    bird_config,
    kernel_routes,
    node,
    services,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp
MESH_OFF = BGPConfiguration(
    metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False)
)


def bird_reflector_config(router_id: str, clients: list[str]) -> str:
    sessions = "".join(
        f"""protocol bgp c{i} {{
    local {router_id} as 64512;
    neighbor {address} as 64512;
    direct;
    rr client;
    rr cluster id {router_id};
    graceful restart on;
    connect retry time 1;
    ipv4 {{ import all; export all; }};
}}
"""
        for i, address in enumerate(clients)
    )
    return f"router id {router_id};\nprotocol device {{ }}\n{sessions}"


def test_bird_reflects_between_felixpy_clients(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_rr = seg.attach("r", "10.0.0.1/24")
    addresses = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    spaces = [seg.attach(f"c{i}", f"{a}/24") for i, a in enumerate(addresses)]
    nodes = [node(f"c{i}", a) for i, a in enumerate(addresses)]
    to_bird = BGPPeer(
        metadata=ObjectMeta(name="bird-rr"), spec=BGPPeerSpec(peer_ip="10.0.0.1", as_number=64512)
    )
    bird = Bird(ns_rr, tmp_path / "bird", bird_reflector_config("10.0.0.1", addresses))
    try:
        clients = [services(f"c{i}", ns) for i, ns in enumerate(spaces)]
        for i, svc in enumerate(clients):
            svc.update(
                nodes=nodes,
                bgp_configs=[MESH_OFF],
                peers=[to_bird],
                pools=[POOL],
                local_blocks=[f"10.65.{i}.0/26"],
            )
            svc.start()
        for i, ns in enumerate(spaces):
            for j, owner in enumerate(addresses):
                if i != j:
                    wait_for(
                        lambda ns=ns, j=j, owner=owner: (
                            f"10.65.{j}.0/26 via {owner} dev eth0" in kernel_routes(ns)
                        ),
                        f"c{j}'s block at c{i} through BIRD",
                    )
            assert f"10.65.{i}.0/26" not in kernel_routes(ns)  # never its own block back
        assert [(p.address, p.type, p.info) for p in clients[0].status()] == [
            ("10.0.0.1", "global", "Established")
        ]
        # what c0 learned carries BIRD's reflection attributes (RFC 4456)
        best = clients[0].engine.rib.best("10.65.1.0/26")
        assert best and best[0].attrs.originator_id == "10.0.0.3"
        assert best[0].attrs.cluster_list == ("10.0.0.1",)

        clients[1].update(nodes=nodes, bgp_configs=[MESH_OFF], peers=[to_bird], pools=[POOL], local_blocks=[])
        for ns in (spaces[0], spaces[2]):
            wait_for(lambda ns=ns: "10.65.1.0/26" not in kernel_routes(ns), "c1's withdrawal through BIRD")
        assert "10.65.2.0/26 via 10.0.0.4" in kernel_routes(spaces[0])  # the others stay
    finally:
        bird.stop()


def test_bird_clients_of_our_reflector(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_r, ns_a = seg.attach("r", "10.0.0.1/24"), seg.attach("a", "10.0.0.2/24")
    ns_b1, ns_b2 = seg.attach("b1", "10.0.0.3/24"), seg.attach("b2", "10.0.0.4/24")
    nodes = [node("r", "10.0.0.1", labels={"rr": "true"}, cluster_id="244.0.0.1"), node("a", "10.0.0.2")]
    peers = [
        BGPPeer(
            metadata=ObjectMeta(name="to-rr"),
            spec=BGPPeerSpec(node_selector="all()", peer_selector="rr == 'true'"),
        ),
        *(
            BGPPeer(
                metadata=ObjectMeta(name=f"bird{i}"), spec=BGPPeerSpec(node="r", peer_ip=ip, as_number=64512)
            )
            for i, ip in enumerate(("10.0.0.3", "10.0.0.4"))
        ),
    ]
    b1 = Bird(ns_b1, tmp_path / "b1", bird_config("10.0.0.3", "10.0.0.1", ["10.65.9.0/26"]))
    b2 = Bird(ns_b2, tmp_path / "b2", bird_config("10.0.0.4", "10.0.0.1", ["10.65.8.0/26"]))
    try:
        rr, a = services("r", ns_r), services("a", ns_a)
        rr.update(nodes=nodes, bgp_configs=[MESH_OFF], peers=peers, pools=[POOL], local_blocks=[])
        a.update(
            nodes=nodes, bgp_configs=[MESH_OFF], peers=peers, pools=[POOL], local_blocks=["10.65.0.0/26"]
        )
        rr.start()
        a.start()
        # BIRD client → our reflector → the other BIRD client, next hop kept, RFC 4456 attributes
        wait_for(lambda: "10.65.9.0/26" in b2.cli("show", "route", "protocol", "felix"), "b1's route at b2")
        detail = b2.cli("show", "route", "10.65.9.0/26", "all")
        assert "via 10.0.0.3" in detail
        assert "BGP.originator_id: 10.0.0.3" in detail and "BGP.cluster_list: 244.0.0.1" in detail
        wait_for(lambda: "10.65.8.0/26" in b1.cli("show", "route", "protocol", "felix"), "b2's route at b1")
        wait_for(lambda: "10.65.0.0/26" in b1.cli("show", "route", "protocol", "felix"), "a's block at b1")
        wait_for(lambda: "10.65.9.0/26 via 10.0.0.3" in kernel_routes(ns_a), "b1's route in a's kernel")
        assert "10.65.9.0/26" not in b1.cli("show", "route", "protocol", "felix")  # not back to its origin
        assert rr.engine.fib is None or "10.65.9.0/26" in rr.engine.fib.desired()  # the reflector routes too

        b1.cli("disable", "st")  # b1 withdraws: gone at b2 and in a's kernel
        wait_for(
            lambda: "10.65.9.0/26" not in b2.cli("show", "route", "protocol", "felix"), "withdrawn at b2"
        )
        wait_for(lambda: "10.65.9.0/26" not in kernel_routes(ns_a), "withdrawn from a's kernel")
        assert "10.65.8.0/26 via 10.0.0.4" in kernel_routes(ns_a)

        # the reflector ran in wire mode (UPDATEs as bytes) on all three iBGP sessions
        assert rr.speaker.settings.wire
        assert {p: s.wire for p, s in rr.engine.sessions.items()} == dict.fromkeys(
            ("10.0.0.2", "10.0.0.3", "10.0.0.4"), True
        )
        # ExaBGP keeps no Adj-RIB-Out for wire routes: a new session must get the table from us
        b2.cli("disable", "felix")
        wait_for(lambda: "10.65.0.0/26" not in b2.cli("show", "route", "protocol", "felix"), "b2 flushed")
        b1.cli("enable", "st")  # and a change made while b2 is away reaches it too
        wait_for(lambda: "10.65.9.0/26 via 10.0.0.3" in kernel_routes(ns_a), "b1's route back at a")
        b2.cli("enable", "felix")
        wait_for(
            lambda: all(
                p in b2.cli("show", "route", "protocol", "felix") for p in ("10.65.0.0/26", "10.65.9.0/26")
            ),
            "the whole table at b2 after its session came back",
        )
        # a reflector's ExaBGP killed: the new one gets the table again from the agent
        old_pid = rr.speaker.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: rr.speaker.pid not in (None, old_pid), "exabgp restarted")
        b1.cli("disable", "st")  # withdrawn through the new ExaBGP, in wire mode
        wait_for(
            lambda: "10.65.9.0/26" not in b2.cli("show", "route", "protocol", "felix"),
            "withdrawn after restart",
        )
        wait_for(
            lambda: "10.65.0.0/26" in b2.cli("show", "route", "protocol", "felix"), "a's block kept at b2"
        )
        wait_for(lambda: all(s.wire for s in rr.engine.sessions.values()), "wire sessions after the restart")
    finally:
        b1.stop()
        b2.stop()
