"""BGPFilter ``setPriority`` against BIRD 2 (Calico renders it as BIRD's ``krt_metric = N`` in the import
filter): BIRD (AS 65001) announces two prefixes, one tagged with a community; our import rule on that
community sets priority 512, so the route is in our kernel at ``metric 512`` while the other stays at
the default BGP metric (32). Changing the filter to 700 leaves one route at 700 (the old one retired);
removing it puts the route back at 32."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bgp.service import BGPService
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, services, wait_for
from tests.e2e.test_bgp_filters_bird import BIRD_AS, bgp_filter, tor
from tests.e2e.test_bgp_filters_full_bird import felixctl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
__all__ = ["services"]  # the fixture, re-used from test_bgp_exabgp

BIRD_CONF = f"""router id 10.0.0.3;
protocol device {{ }}
protocol static st {{
    ipv4;
    route 10.65.5.0/26 blackhole;
    route 10.65.6.0/26 blackhole;
}}
protocol bgp felix {{
    local 10.0.0.3 as {BIRD_AS};
    neighbor 10.0.0.2 as 64512;
    direct;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{
        import all;
        export filter {{
            if proto != "st" then reject;
            if net = 10.65.6.0/26 then bgp_community.add(({BIRD_AS}, 100));
            accept;
        }};
    }};
}}
"""


def prio_filter(value: int) -> object:
    return bgp_filter("prio", {"importV4": [
        {"action": "Accept", "communities": {"values": [f"{BIRD_AS}:100"]},
         "operations": [{"setPriority": {"value": value}}]},
    ]})  # fmt: skip


def metrics(ns: object) -> dict[str, list[str]]:
    """prefix -> the metrics of our (proto 81) routes for it."""
    out: dict[str, list[str]] = {}
    for line in kernel_routes(ns).splitlines():
        found = re.search(r"metric (\d+)", line)
        out.setdefault(line.split()[0], []).append(found.group(1) if found else "0")
    return out


def test_set_priority_sets_the_kernel_metric_of_routes_from_bird(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    seg = Segment(netns)
    ns_b, ns_c = seg.attach("b", "10.0.0.2/24"), seg.attach("c", "10.0.0.3/24")
    bird = Bird(ns_c, tmp_path / "bird", BIRD_CONF)
    try:
        b = services("b", ns_b)

        def configure(filters: list[object]) -> None:
            b.update(nodes=[node("b", "10.0.0.2")], bgp_configs=[],
                     peers=[tor(filters=["prio"] if filters else [])], pools=[POOL],
                     local_blocks=["10.65.1.0/26"], bgp_filters=filters)  # type: ignore[arg-type]  # fmt: skip

        configure([prio_filter(512)])
        b.start()
        want = {"10.65.5.0/26": ["32"], "10.65.6.0/26": ["512"]}
        wait_for(lambda: metrics(ns_b) == want, f"the tagged route at metric 512 (got {metrics(ns_b)})")

        def shown() -> str:  # felixctl node routes, from the service's run directory
            out = felixctl("node", "routes", "--run-dir", str(tmp_path / "b"), "--prefix", "10.65.6.0/26")
            return out.stdout if out.returncode == 0 else ""

        wait_for(lambda: "512 (setPriority)" in shown(), f"node routes shows the metric (got {shown()!r})")
        configure([prio_filter(700)])
        want = {"10.65.5.0/26": ["32"], "10.65.6.0/26": ["700"]}
        wait_for(lambda: metrics(ns_b) == want, f"one route, at the new metric 700 (got {metrics(ns_b)})")
        configure([])
        want = {"10.65.5.0/26": ["32"], "10.65.6.0/26": ["32"]}
        wait_for(lambda: metrics(ns_b) == want, f"back at the default metric (got {metrics(ns_b)})")
        for _ in range(5):  # and it stays there, one route per prefix
            assert metrics(ns_b) == want
            time.sleep(0.4)
        assert b.status()[0].routes_received == 2
    finally:
        bird.stop()
