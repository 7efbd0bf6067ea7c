"""RouteTable on the real kernel, inside a throwaway namespace."""

from __future__ import annotations

import pytest

from felixpy.dataplane.kernel_objects import RTPROT_FELIXPY, RTPROT_FELIXPY_BGP, RouteTarget
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.routes import RouteTable

pytestmark = pytest.mark.kernel


@pytest.fixture
def node(netns):
    ns = netns("rt")
    ns.run("ip", "link", "add", "cali1", "type", "veth", "peer", "name", "peer1")
    for cmd in (("link", "set", "cali1", "up"), ("link", "set", "peer1", "up"),
                ("addr", "add", "192.168.50.1/24", "dev", "peer1"),
                ("-6", "addr", "add", "fd50::1/64", "dev", "peer1", "nodad")):
        ns.run("ip", *cmd)
    with IPRouteNetlink(ns.name) as nl:
        yield ns, nl


DESIRED = {
    "10.70.0.2/32": RouteTarget.device("cali1"),
    "10.70.1.0/26": RouteTarget.blackhole(),
    "10.80.0.0/26": RouteTarget.via("192.168.60.7", "peer1", onlink=True),
    "10.90.0.0/24": RouteTarget.via("192.168.50.9", "peer1"),
    "fd70::2/128": RouteTarget.device("cali1"),
    "fd71::/122": RouteTarget.blackhole(),
}


def _ours(nl, proto=RTPROT_FELIXPY):
    return {r.dst: r.target for r in nl.list_routes(proto=proto)}


def test_apply_programs_v4_and_v6_and_reads_back_equal(node):
    ns, nl = node
    table = RouteTable(nl)
    table.set_desired(DESIRED)
    stats = table.start()
    assert stats.replaced == len(DESIRED) and not stats.failed
    assert _ours(nl) == DESIRED
    text = ns.run("ip", "route", "show", "proto", "80")
    assert "10.80.0.0/26 via 192.168.60.7 dev peer1 onlink" in text
    assert "blackhole 10.70.1.0/26" in text
    # converged: a second resync changes nothing
    assert table.resync().replaced == 0


def test_resync_restores_route_deleted_by_hand_and_leaves_others(node):
    ns, nl = node
    ns.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.50.5", "proto", "static")
    ns.run("ip", "route", "add", "10.98.0.0/24", "via", "192.168.50.5", "proto", str(RTPROT_FELIXPY_BGP))
    table = RouteTable(nl)
    table.set_desired(DESIRED)
    table.apply()
    ns.run("ip", "route", "del", "10.70.0.2/32")
    ns.run("ip", "-6", "route", "del", "fd71::/122")
    assert table.apply().replaced == 0  # no kernel read without resync: cached view says converged
    stats = table.resync()
    assert stats.replaced == 2
    assert _ours(nl) == DESIRED
    assert "10.99.0.0/24 via 192.168.50.5 dev peer1 proto static" in ns.run("ip", "route")
    assert _ours(nl, RTPROT_FELIXPY_BGP) == {"10.98.0.0/24": RouteTarget.via("192.168.50.5", "peer1")}


def test_start_removes_stale_routes_of_own_protocol_only(node):
    ns, nl = node
    ns.run("ip", "route", "add", "10.71.0.0/24", "dev", "cali1", "proto", "80")  # stale, ours
    ns.run("ip", "route", "add", "10.72.0.0/24", "dev", "cali1", "proto", "81")  # BGP's
    table = RouteTable(nl)
    table.set_desired({"10.70.0.2/32": RouteTarget.device("cali1")})
    stats = table.start()
    assert stats.deleted == 1
    assert _ours(nl) == {"10.70.0.2/32": RouteTarget.device("cali1")}
    assert "10.72.0.0/24" in _ours(nl, RTPROT_FELIXPY_BGP)


def test_bgp_table_with_proto_81_and_changed_target(node):
    _ns, nl = node
    agent = RouteTable(nl, proto=RTPROT_FELIXPY)
    agent.set_desired({"10.70.0.2/32": RouteTarget.device("cali1")})
    agent.apply()
    bgp = RouteTable(nl, proto=RTPROT_FELIXPY_BGP)
    bgp.set_route("10.80.0.0/26", RouteTarget.via("192.168.50.7", "peer1"))
    bgp.apply()
    bgp.set_route("10.80.0.0/26", RouteTarget.via("192.168.50.8", "peer1"))
    assert bgp.apply().replaced == 1
    assert _ours(nl, RTPROT_FELIXPY_BGP) == {"10.80.0.0/26": RouteTarget.via("192.168.50.8", "peer1")}
    bgp.remove_route("10.80.0.0/26")
    bgp.apply()
    assert _ours(nl, RTPROT_FELIXPY_BGP) == {}
    assert _ours(nl) == {"10.70.0.2/32": RouteTarget.device("cali1")}


def test_route_to_missing_interface_is_retried_when_it_appears(node):
    ns, nl = node
    table = RouteTable(nl)
    table.set_desired({"10.70.0.9/32": RouteTarget.device("cali9")})
    assert table.apply().failed == ["10.70.0.9/32"]
    ns.run("ip", "link", "add", "cali9", "type", "veth", "peer", "name", "peer9")
    ns.run("ip", "link", "set", "cali9", "up")
    assert table.apply().replaced == 1
    assert _ours(nl) == {"10.70.0.9/32": RouteTarget.device("cali9")}
