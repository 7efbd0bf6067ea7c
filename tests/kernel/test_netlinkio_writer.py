"""The one batched route writer (felixpy.netlinkio) on the real kernel, in a throwaway namespace."""

from __future__ import annotations

import errno

import pytest

from felixpy.dataplane.sysctl import run_in_netns
from felixpy.netlinkio.messages import RTN_BLACKHOLE, RTN_THROW, RTN_UNICAST, Hop, Route
from felixpy.netlinkio.route_writer import RouteWriter, route_socket

pytestmark = pytest.mark.kernel


@pytest.fixture
def node(netns):
    ns = netns("nlio")
    ns.run("ip", "link", "add", "cali1", "type", "veth", "peer", "name", "peer1")
    for cmd in (
        ("link", "set", "cali1", "up"),
        ("link", "set", "peer1", "up"),
        ("addr", "add", "192.168.50.1/24", "dev", "peer1"),
        ("-6", "addr", "add", "fd50::1/64", "dev", "peer1", "nodad"),
    ):
        ns.run("ip", *cmd)
    writer = RouteWriter(run_in_netns(ns.name, route_socket))
    yield ns, writer
    writer.close()


def _ours(writer: RouteWriter, protocol: int = 80, table: int = 254) -> dict[str, tuple[Route, int]]:
    return {r.dst: (r, kind) for r, kind in writer.list_routes(protocol=protocol, table=table)}


def test_one_batch_reports_each_failure_and_writes_the_rest(node):
    ns, writer = node
    good = [Route(f"10.70.{i // 256}.{i % 256}/32", (Hop(dev="cali1"),), 80) for i in range(700)]
    no_device = Route("10.71.0.1/32", (Hop(dev="cali-gone"),), 80)
    unreachable = Route("10.72.0.0/24", (Hop("192.168.99.9"),), 80)  # gateway off every subnet
    failed = writer.apply(replace=[*good[:300], no_device, unreachable, *good[300:]])
    assert sorted((r.dst, code) for r, code in failed) == [
        ("10.71.0.1/32", errno.ENODEV),
        ("10.72.0.0/24", errno.ENETUNREACH),
    ]
    assert set(_ours(writer)) == {r.dst for r in good}
    assert ns.run("ip", "route", "show", "proto", "80").count("\n") == 700
    assert writer.apply(replace=good[:5]) == []  # replacing what is there is done, not an error
    assert writer.apply(delete=[*good, Route("10.99.0.0/24", protocol=80)]) == []  # a missing one: done
    assert _ours(writer) == {}


def test_blackholes_metrics_onlink_and_v6_read_back_as_written(node):
    ns, writer = node
    routes = [
        Route("10.70.1.0/26", (), 80, blackhole=True),
        Route("fd71::/122", (), 80, metric=1024, blackhole=True),
        Route("10.80.0.0/26", (Hop("192.168.60.7", "peer1", onlink=True),), 80),
        Route("10.90.0.0/24", (Hop("192.168.50.9", "peer1"),), 80, metric=20),
        Route("fd70::2/128", (Hop(dev="cali1"),), 80, metric=1024),
    ]
    assert writer.apply(replace=routes) == []
    found = _ours(writer)
    assert {dst: route for dst, (route, _kind) in found.items()} == {r.dst: r for r in routes}
    assert found["10.70.1.0/26"][1] == RTN_BLACKHOLE and found["10.90.0.0/24"][1] == RTN_UNICAST
    assert "10.80.0.0/26 via 192.168.60.7 dev peer1 onlink" in ns.run("ip", "route", "show", "proto", "80")


def test_deletes_touch_only_their_protocol_table_and_metric(node):
    ns, writer = node
    ns.run("ip", "route", "add", "10.75.0.0/24", "dev", "cali1", "proto", "81")
    ns.run("ip", "route", "add", "10.75.0.0/24", "dev", "cali1", "proto", "80", "metric", "7")
    ns.run("ip", "route", "add", "10.76.0.0/24", "dev", "cali1", "proto", "80", "table", "300")
    assert writer.apply(delete=[Route("10.75.0.0/24", protocol=80, metric=7)]) == []
    assert "10.75.0.0/24" not in _ours(writer)
    assert "10.75.0.0/24" in _ours(writer, protocol=81)
    assert list(_ours(writer, table=300)) == ["10.76.0.0/24"]
    assert writer.apply(delete=[Route("10.76.0.0/24", protocol=80, table=300)]) == []
    assert _ours(writer, table=300) == {}


def test_a_recreated_interface_is_found_by_name_again(node):
    """Names are resolved per write: a pod's veth comes back under its name with a new index."""
    ns, writer = node
    assert writer.apply(replace=[Route("10.70.0.9/32", (Hop(dev="cali1"),), 80)]) == []
    ns.run("ip", "link", "del", "cali1")  # takes the route with it
    ns.run("ip", "link", "add", "cali1", "type", "veth", "peer", "name", "peer1")
    ns.run("ip", "link", "set", "cali1", "up")
    assert writer.apply(replace=[Route("10.70.0.9/32", (Hop(dev="cali1"),), 80)]) == []
    assert _ours(writer)["10.70.0.9/32"][0].hops == (Hop(dev="cali1"),)


def test_throw_routes_in_a_dedicated_table_read_back_replace_and_go(node):
    """The WireGuard table's shapes (felixpy.dataplane.wireguard_kernel.sync_table): ``throw`` and ``dev``
    routes in their own table, both families, read back as written and deleted by the same writer."""
    ns, writer = node
    routes = [
        Route("10.244.0.0/26", (), 80, 7, throw=True),
        Route("10.244.1.0/26", (Hop(dev="cali1"),), 80, 7),
        Route("fd00:44::/122", (), 80, 7, metric=1024, throw=True),
        Route("fd00:45::/122", (Hop(dev="cali1"),), 80, 7, metric=1024),
    ]
    assert writer.apply(replace=routes) == []
    found = _ours(writer, table=7)
    assert {dst: route for dst, (route, _kind) in found.items()} == {r.dst: r for r in routes}
    assert found["10.244.0.0/26"][1] == RTN_THROW and found["fd00:44::/122"][1] == RTN_THROW
    assert "throw 10.244.0.0/26 proto 80" in ns.run("ip", "route", "show", "table", "7")
    v6 = ns.run("ip", "-6", "route", "show", "table", "7").splitlines()
    assert any(line.startswith("throw fd00:44::/122 ") and " proto 80 " in line for line in v6)  # (dev lo)
    assert _ours(writer) == {}  # nothing leaked into the main table
    # a node that stops being a peer: its dev route becomes a throw in place (one replace)
    assert writer.apply(replace=[Route("10.244.1.0/26", (), 80, 7, throw=True)]) == []
    now_throw = Route("10.244.1.0/26", (), 80, 7, throw=True)
    assert _ours(writer, table=7)["10.244.1.0/26"] == (now_throw, RTN_THROW)
    assert writer.apply(delete=[r for r, _kind in found.values()]) == []
    assert _ours(writer, table=7) == {}
    assert ns.run("ip", "route", "show", "table", "7").strip() == ""
    assert ns.run("ip", "-6", "route", "show", "table", "7").strip() == ""


def test_a_throw_route_with_a_next_hop_is_refused_without_being_sent(node):
    _ns, writer = node
    bad = Route("10.244.2.0/26", (Hop(dev="cali1"),), 80, 7, throw=True)
    assert writer.apply(replace=[bad]) == [(bad, errno.EINVAL)]
    assert _ours(writer, table=7) == {}
