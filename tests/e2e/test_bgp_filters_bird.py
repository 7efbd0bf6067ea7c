"""BGPPeer session options against BIRD 2: BGPFilter import/export rules, numAllowedLocalASNumbers
and ttlSecurity, with a real ExaBGP and real kernel routes in throwaway namespaces.

* BIRD (AS 65001) announces three prefixes inside the pool: an importV4 Reject rule on our BGPPeer
  keeps one of them out of our kernel while the other two install; an exportV4 Reject rule keeps
  one of our two blocks from BIRD. Without the BGPFilter both go through.
* BIRD also announces a fourth prefix with our AS (64512) prepended once in its export filter:
  refused as a loop, then accepted once the BGPPeer allows one local AS.
* BIRD with ``ttl security on`` (GTSM, expects TTL 255 from a direct neighbour): the session only
  comes up when our BGPPeer has ``ttlSecurity: 1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPFilter, BGPPeer, BGPPeerSpec
from felixpy.resources.parse import parse_document
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, services, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp

OUR_AS, BIRD_AS = 64512, 65001
LOOPED = "10.65.9.0/26"  # announced by BIRD with our AS already in its path


def bird_ebgp(statics: list[str], *, ttl_security: bool = False) -> str:
    routes = "\n".join(f"    route {p} blackhole;" for p in statics)
    gtsm = "ttl security on;" if ttl_security else ""
    return f"""router id 10.0.0.3;
protocol device {{ }}
protocol static st {{
    ipv4;
{routes}
}}
protocol bgp felix {{
    local 10.0.0.3 as {BIRD_AS};
    neighbor 10.0.0.2 as {OUR_AS};
    direct;
    {gtsm}
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{
        import all;
        export filter {{
            if proto != "st" then reject;
            if net = {LOOPED} then bgp_path.prepend({OUR_AS});
            accept;
        }};
    }};
}}
"""


def bgp_filter(name: str, spec: dict[str, Any]) -> BGPFilter:
    obj = parse_document(
        {"apiVersion": "projectcalico.org/v3", "kind": "BGPFilter", "metadata": {"name": name}, "spec": spec}
    )
    assert isinstance(obj, BGPFilter)
    return obj


FILTER = bgp_filter(
    "tor-filter",
    {
        "importV4": [{"action": "Reject", "cidr": "10.65.6.0/26", "matchOperator": "Equal"}],
        "exportV4": [{"action": "Reject", "cidr": "10.65.2.0/24", "matchOperator": "In"}],
    },
)


def tor(**spec: Any) -> BGPPeer:
    return BGPPeer(
        metadata=ObjectMeta(name="tor"), spec=BGPPeerSpec(peer_ip="10.0.0.3", as_number=BIRD_AS, **spec)
    )


def test_filters_and_allowed_local_as_against_bird(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_b, ns_c = seg.attach("b", "10.0.0.2/24"), seg.attach("c", "10.0.0.3/24")
    bird = Bird(ns_c, tmp_path / "bird", bird_ebgp(["10.65.5.0/26", "10.65.6.0/26", "10.65.7.0/26", LOOPED]))
    blocks = ["10.65.1.0/26", "10.65.2.0/26"]
    nodes = [node("b", "10.0.0.2")]

    def update(svc: BGPService, peer: BGPPeer, filters: list[BGPFilter]) -> None:
        svc.update(
            nodes=nodes, bgp_configs=[], peers=[peer], pools=[POOL], local_blocks=blocks, bgp_filters=filters
        )

    try:
        b = services("b", ns_b)
        update(b, tor(filters=["tor-filter"]), [FILTER])
        b.start()
        # import: the filtered prefix stays out, the other two install
        wait_for(lambda: b.status() and b.status()[0].routes_received == 4, "all four routes received")
        wait_for(
            lambda: (
                "10.65.5.0/26 via 10.0.0.3" in kernel_routes(ns_b)
                and "10.65.7.0/26 via 10.0.0.3" in kernel_routes(ns_b)
            ),
            "BIRD's unfiltered prefixes in our kernel",
        )
        routes = kernel_routes(ns_b)
        assert "10.65.6.0/26" not in routes, routes
        # our AS once in the path: a loop while numAllowedLocalASNumbers is unset
        assert LOOPED not in routes, routes
        # export: the block inside the rejected range never reaches BIRD (both go in one UPDATE)
        at_bird = lambda: bird.cli("show", "route", "protocol", "felix")  # noqa: E731
        wait_for(lambda: "10.65.1.0/26" in at_bird(), "our block at BIRD")
        assert "10.65.2.0/26" not in at_bird()
        assert f"BGP.as_path: {OUR_AS}" in bird.cli("show", "route", "10.65.1.0/26", "all")

        # one local AS allowed: the looped route is accepted from what BIRD already sent
        update(b, tor(filters=["tor-filter"], num_allowed_local_as_numbers=1), [FILTER])
        wait_for(lambda: f"{LOOPED} via 10.0.0.3" in kernel_routes(ns_b), "the route carrying our AS once")
        assert "10.65.6.0/26" not in kernel_routes(ns_b)

        # the BGPPeer no longer names the filter: both directions go through, the session stays up
        since = b.status()[0].since
        update(b, tor(num_allowed_local_as_numbers=1), [FILTER])
        wait_for(lambda: "10.65.6.0/26 via 10.0.0.3" in kernel_routes(ns_b), "the formerly rejected prefix")
        wait_for(lambda: "10.65.2.0/26" in at_bird(), "our other block")
        assert (b.status()[0].state, b.status()[0].since) == ("up", since)
    finally:
        bird.stop()


@pytest.mark.parametrize("ttl_security", [1, 0], ids=["gtsm-on", "gtsm-off"])
def test_ttl_security_against_bird_gtsm(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path, ttl_security: int
) -> None:
    seg = Segment(netns)
    ns_b, ns_c = seg.attach("b", "10.0.0.2/24"), seg.attach("c", "10.0.0.3/24")
    bird = Bird(ns_c, tmp_path / "bird", bird_ebgp(["10.65.5.0/26"], ttl_security=True))
    try:
        b = services("b", ns_b)
        b.update(
            nodes=[node("b", "10.0.0.2")],
            bgp_configs=[],
            peers=[tor(ttl_security=ttl_security or None)],
            pools=[POOL],
            local_blocks=[],
        )
        b.start()
        if ttl_security:
            wait_for(lambda: "10.65.5.0/26 via 10.0.0.3" in kernel_routes(ns_b), "BIRD's route over GTSM")
            assert "Established" in bird.cli("show", "protocols", "felix")
            return
        # BIRD drops our packets (sent with the default TTL 64): no session for as long as we wait
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not any(p.state == "up" for p in b.status()), bird.cli("show", "protocols", "felix")
            time.sleep(0.2)
        assert "Established" not in bird.cli("show", "protocols", "felix")
    finally:
        bird.stop()
