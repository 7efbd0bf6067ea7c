"""Every BGPFilter match and operation against BIRD 2, seen from both sides, and through
``felixctl node routes`` / ``node status --detail`` reading the running service's run directory.

BIRD (AS 65001, the ToR) announces five prefixes; our BGPPeer's filter, on import:
* 10.65.6.0/26 carries community 65001:666 → ``communities`` Reject;
* 10.65.7.0/26 has AS_PATH 65001 65099 → ``asPathPrefix: [65001, 65099]`` Reject;
* 10.65.9.0/26 comes over eth0 → ``interface: eth*`` Reject (cidr Equal);
* 10.65.8.0/26 meets ``peerType: iBGP`` Reject only — the session is eBGP, so it goes in;
* 10.65.5.0/26 meets no rule → in.
On export, of our three blocks:
* 10.65.1.0/26: Accept with ``addCommunity 64512:77`` and ``prependASPath [64512, 64512]``;
* 10.65.2.0/26: ``peerType: eBGP`` Reject → never at BIRD;
* 10.65.3.0/26: Accept with the large community 64512:1:2.
BIRD's ``show route all`` shows the communities and the path; our kernel has exactly the two
accepted prefixes; ``felixctl node routes`` names the deciding rule of each refusal.

The same over an IPv6 session (importV6/exportV6): a large community and a cidr/prefixLength
reject on import; a peerType reject, an asPathPrefix rule that must not match our own exports, and
prependASPath on export.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPPeer, BGPPeerSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, services, wait_for
from tests.e2e.test_bgp_filters_bird import BIRD_AS, OUR_AS, bgp_filter, tor

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp

BIRD_CONF = f"""router id 10.0.0.3;
protocol device {{ }}
protocol static st {{
    ipv4;
    route 10.65.5.0/26 blackhole;
    route 10.65.6.0/26 blackhole;
    route 10.65.7.0/26 blackhole;
    route 10.65.8.0/26 blackhole;
    route 10.65.9.0/26 blackhole;
}}
protocol bgp felix {{
    local 10.0.0.3 as {BIRD_AS};
    neighbor 10.0.0.2 as {OUR_AS};
    direct;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{
        import all;
        export filter {{
            if proto != "st" then reject;
            if net = 10.65.6.0/26 then bgp_community.add(({BIRD_AS}, 666));
            if net = 10.65.7.0/26 then bgp_path.prepend(65099);
            accept;
        }};
    }};
}}
"""

FILTER = bgp_filter(
    "tor-filter",
    {
        "importV4": [
            {"action": "Reject", "communities": {"values": [f"{BIRD_AS}:666"]}},
            {"action": "Reject", "asPathPrefix": [BIRD_AS, 65099]},
            {"action": "Reject", "interface": "eth*", "cidr": "10.65.9.0/26", "matchOperator": "Equal"},
            {"action": "Reject", "peerType": "iBGP"},
        ],
        "exportV4": [
            {
                "action": "Accept",
                "cidr": "10.65.1.0/26",
                "matchOperator": "Equal",
                "operations": [
                    {"addCommunity": {"value": f"{OUR_AS}:77"}},
                    {"prependASPath": {"prefix": [OUR_AS, OUR_AS]}},
                ],
            },
            {"action": "Reject", "peerType": "eBGP", "cidr": "10.65.2.0/26", "matchOperator": "Equal"},
            {"action": "Accept", "operations": [{"addCommunity": {"value": f"{OUR_AS}:1:2"}}]},
        ],
    },
)


def felixctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "felixpy.ctl.main", *args], capture_output=True, text=True, timeout=60
    )


def test_every_match_and_operation_against_bird(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_b, ns_c = seg.attach("b", "10.0.0.2/24"), seg.attach("c", "10.0.0.3/24")
    bird = Bird(ns_c, tmp_path / "bird", BIRD_CONF)
    try:
        b = services("b", ns_b)
        b.update(
            nodes=[node("b", "10.0.0.2")],
            bgp_configs=[],
            peers=[tor(filters=["tor-filter"])],
            pools=[POOL],
            local_blocks=["10.65.1.0/26", "10.65.2.0/26", "10.65.3.0/26"],
            bgp_filters=[FILTER],
        )
        b.start()
        wait_for(lambda: b.status() and b.status()[0].routes_received == 5, "BIRD's five routes received")
        wait_for(
            lambda: "10.65.5.0/26 via" in kernel_routes(ns_b) and "10.65.8.0/26 via" in kernel_routes(ns_b),
            "the two accepted routes in our kernel",
        )
        routes = kernel_routes(ns_b)
        for refused in ("10.65.6.0/26", "10.65.7.0/26", "10.65.9.0/26"):
            assert refused not in routes, routes

        # BIRD's side: the operations' effects, and the eBGP-only reject
        at_bird = lambda *a: bird.cli("show", "route", *a)  # noqa: E731
        wait_for(lambda: "10.65.3.0/26" in at_bird("protocol", "felix"), "our third block at BIRD")
        wait_for(lambda: "10.65.1.0/26" in at_bird("protocol", "felix"), "our first block at BIRD")
        first = at_bird("10.65.1.0/26", "all")
        assert f"BGP.as_path: {OUR_AS} {OUR_AS} {OUR_AS}" in first, first
        assert f"({OUR_AS},77)" in first, first
        third = at_bird("10.65.3.0/26", "all")
        assert f"({OUR_AS}, 1, 2)" in third, third
        assert re.search(rf"BGP.as_path: {OUR_AS}$", third, re.M), third  # no prepend on this one
        assert "10.65.2.0/26" not in at_bird("protocol", "felix")

        # felixctl node routes: each refusal names its rule; the accepted ones are the best paths
        run_dir = str(tmp_path / "b")

        def view() -> dict[str, object]:
            out = felixctl("node", "routes", "--run-dir", run_dir, "-o", "json")
            return json.loads(out.stdout) if out.returncode == 0 else {}

        def received() -> dict[str, tuple[str, str]]:
            peers = view().get("peers") or []
            return {r["prefix"]: (r["status"], r["reason"]) for p in peers for r in p["received"]}  # type: ignore[index,union-attr]

        want = {
            "10.65.5.0/26": ("best", ""),
            "10.65.6.0/26": ("rejected", "rejected by BGPFilter tor-filter: importV4[0]"),
            "10.65.7.0/26": ("rejected", "rejected by BGPFilter tor-filter: importV4[1]"),
            "10.65.8.0/26": ("best", ""),
            "10.65.9.0/26": ("rejected", "rejected by BGPFilter tor-filter: importV4[2]"),
        }
        wait_for(lambda: received() == want, f"node routes shows every verdict (got {received()})")
        doc = view()
        sent = {a["prefix"]: a for p in doc["peers"] for a in p["advertised"]}  # type: ignore[attr-defined,index]
        assert sorted(sent) == ["10.65.1.0/26", "10.65.3.0/26"]
        assert sent["10.65.1.0/26"]["communities"] == [f"{OUR_AS}:77"]
        assert sorted(k["prefix"] for k in doc["kernel"]) == ["10.65.5.0/26", "10.65.8.0/26"]  # type: ignore[attr-defined]
        table = felixctl("node", "routes", "--run-dir", run_dir)
        assert table.returncode == 0 and "importV4[2]" in table.stdout, table.stdout + table.stderr
        detail = felixctl("node", "status", "--detail", "--run-dir", run_dir)
        assert detail.returncode == 0, detail.stderr
        assert "Hold time:          90s" in detail.stdout, detail.stdout  # BIRD offers 240, ours is 90
        assert re.search(r"Capabilities: .*graceful restart", detail.stdout), detail.stdout
        assert "received 5, accepted 2, rejected 3 (rejected by BGPFilter tor-filter: 3)" in detail.stdout
    finally:
        bird.stop()


BIRD6_CONF = f"""router id 10.0.0.3;
protocol device {{ }}
protocol static st6 {{
    ipv6;
    route fd00:65:0:5::/122 blackhole;
    route fd00:65:0:6::/122 blackhole;
    route fd00:65:0:7::/122 blackhole;
}}
protocol bgp felix {{
    local fd99:1::3 as {BIRD_AS};
    neighbor fd99:1::2 as {OUR_AS};
    direct;
    connect retry time 1;
    error wait time 1, 5;
    ipv6 {{
        import all;
        export filter {{
            if proto != "st6" then reject;
            if net = fd00:65:0:6::/122 then bgp_large_community.add(({BIRD_AS}, 6, 66));
            accept;
        }};
    }};
}}
"""

FILTER6 = bgp_filter(
    "tor6",
    {
        "importV6": [
            {"action": "Reject", "communities": {"values": [f"{BIRD_AS}:6:66"]}},
            {
                "action": "Reject",
                "cidr": "fd00:65:0:7::/64",
                "matchOperator": "In",
                "prefixLength": {"min": 120},
            },
        ],
        "exportV6": [
            {"action": "Reject", "peerType": "eBGP", "cidr": "fd00:65:0:1::/122", "matchOperator": "Equal"},
            {
                "action": "Accept",
                "asPathPrefix": [OUR_AS],  # never: our own exports have no AS_PATH yet
                "operations": [{"addCommunity": {"value": f"{OUR_AS}:99"}}],
            },
            {"action": "Accept", "operations": [{"prependASPath": {"prefix": [65100]}}]},
        ],
    },
)


def test_v6_rules_against_bird(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_b, ns_c = seg.attach("b", "10.0.0.2/24"), seg.attach("c", "10.0.0.3/24")
    for ns, address in ((ns_b, "fd99:1::2/64"), (ns_c, "fd99:1::3/64")):
        ns.run("ip", "-6", "addr", "add", address, "dev", "eth0", "nodad")
    bird = Bird(ns_c, tmp_path / "bird", BIRD6_CONF)
    try:
        b = services("b", ns_b)
        me = Node(metadata=ObjectMeta(name="b"), spec=NodeSpec(bgp=NodeBGPSpec(ipv6_address="fd99:1::2/64")))
        pool6 = IPPool(metadata=ObjectMeta(name="v6"), spec=IPPoolSpec(cidr="fd00:65::/48"))
        tor6 = BGPPeer(
            metadata=ObjectMeta(name="tor6"),
            spec=BGPPeerSpec(peer_ip="fd99:1::3", as_number=BIRD_AS, filters=["tor6"]),
        )
        b.update(
            nodes=[me],
            bgp_configs=[],
            peers=[tor6],
            pools=[POOL, pool6],
            local_blocks=["fd00:65::/122", "fd00:65:0:1::/122"],
            bgp_filters=[FILTER6],
        )
        b.start()

        def v6_routes() -> str:
            return ns_b.run("ip", "-6", "route", "show", "proto", "81")

        wait_for(lambda: b.status() and b.status()[0].routes_received == 3, "BIRD's three v6 routes received")
        wait_for(
            lambda: "fd00:65:0:5::/122 via fd99:1::3" in v6_routes(), "the unfiltered /122 in our kernel"
        )
        routes = v6_routes()
        assert "fd00:65:0:6::" not in routes and "fd00:65:0:7::" not in routes, routes
        wait_for(
            lambda: "fd00:65::/122" in bird.cli("show", "route", "protocol", "felix"), "our block at BIRD"
        )
        ours = bird.cli("show", "route", "fd00:65::/122", "all")
        assert f"BGP.as_path: {OUR_AS} 65100" in ours, ours  # prepended after our own AS
        assert f"({OUR_AS},99)" not in ours, ours  # the asPathPrefix rule did not match
        assert "fd00:65:0:1::/122" not in bird.cli("show", "route", "protocol", "felix")
        reasons = {s.address: s.routes_rejected for s in b.status()}
        assert reasons == {"fd99:1::3": {"rejected by BGPFilter tor6": 2}}, reasons
    finally:
        bird.stop()
