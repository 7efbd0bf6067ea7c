"""bgp.fib_netlink + bgp.fib against a real kernel, in a throwaway namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bgp.fib import Fib, FibRoute, NextHop
from bgp.fib_netlink import NetlinkRouteOps
from bgp.route import PathAttrs, PeerInfo, Route
from felixpy.dataplane.tunnel_devices import ensure_ipip
from tests.fixtures.kernel_features import require_kernel

pytestmark = pytest.mark.kernel


@pytest.fixture
def ns_ops(netns: Callable[..., object]) -> Iterator[tuple[object, NetlinkRouteOps]]:
    ns = netns("fib")
    ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    ns.run("ip", "link", "set", "eth1", "up")
    ns.run("ip", "addr", "add", "10.0.0.1/24", "dev", "eth0")
    ns.run("ip", "link", "set", "eth0", "up")
    ops = NetlinkRouteOps(netns=ns.name)
    yield ns, ops
    ops.close()


def routes(ns: object, proto: str = "81") -> str:
    return ns.run("ip", "route", "show", "proto", proto)


def test_replace_list_delete_direct_and_multipath(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    ns, ops = ns_ops
    ns.run("ip", "route", "add", "10.65.7.0/26", "via", "10.0.0.7", "proto", "80")  # someone else's
    direct = FibRoute("10.65.0.0/26", (NextHop("10.0.0.2"),))
    multi = FibRoute("10.65.1.0/26", (NextHop("10.0.0.2"), NextHop("10.0.0.3")))
    ops.replace_route(direct)
    ops.replace_route(multi)
    ops.replace_route(direct)  # idempotent
    assert ops.list_routes() == {direct.dst: direct, multi.dst: multi}
    assert "10.65.0.0/26 via 10.0.0.2 dev eth0" in routes(ns)
    ops.del_route(direct.dst)
    ops.del_route(direct.dst)  # already gone: fine
    assert list(ops.list_routes()) == [multi.dst]
    assert "10.65.7.0/26" in routes(ns, "80")  # never touched


@pytest.mark.vm
def test_onlink_via_tunl0(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    require_kernel("ipip")
    ns, ops = ns_ops
    ensure_ipip("10.66.9.1", mtu=1440, netns=ns.name)  # tunl0 as the agent makes it
    ns.run("ip", "link", "set", "tunl0", "up")
    route = FibRoute("10.65.2.0/26", (NextHop("192.168.50.9", "tunl0", True),))
    ops.replace_route(route)
    assert "10.65.2.0/26 via 192.168.50.9 dev tunl0 metric 32 onlink" in routes(ns)
    assert ops.list_routes() == {route.dst: route}


def test_fib_repairs_drift_and_adopts_then_releases(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    ns, ops = ns_ops
    ns.run("ip", "route", "add", "10.65.9.0/26", "via", "10.0.0.9", "proto", "81")  # a previous run's
    fib = Fib(ops)
    fib.resync()
    from bgp.route import PeerInfo, Route

    fib.stage("10.65.0.0/26", [Route("10.65.0.0/26", "10.0.0.2", source=PeerInfo("10.0.0.2"))])
    fib.apply()
    assert "10.65.9.0/26" in routes(ns)  # adopted, kept
    ns.run("ip", "route", "del", "10.65.0.0/26")  # drift: deleted by hand
    fib.resync()
    assert "10.65.0.0/26 via 10.0.0.2" in routes(ns)
    fib.release_adopted()
    assert "10.65.9.0/26" not in routes(ns)


def test_batched_apply_many(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    ns, ops = ns_ops
    wanted = [FibRoute(f"10.65.{i // 4}.{(i % 4) * 64}/26", (NextHop("10.0.0.2"),)) for i in range(600)]
    unreachable = FibRoute("10.66.0.0/26", (NextHop("192.168.9.9"),))
    assert ops.apply_many([*wanted, unreachable], ["10.67.0.0/26"]) == [("10.66.0.0/26", 101)]  # ENETUNREACH
    assert ops.list_routes() == {r.dst: r for r in wanted}
    assert ops.apply_many([], [r.dst for r in wanted[:500]]) == []
    assert len(ops.list_routes()) == 100
    assert routes(ns).count("\n") == 100


def test_onlink_ipv6_and_multipath_round_trip(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    """What we pack by hand (bgp.rtnl) is what the kernel installs and what we read back."""
    ns, ops = ns_ops
    ns.run("ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "eth0", "nodad")
    onlink = FibRoute("10.65.2.0/26", (NextHop("192.168.50.9", "eth0", True),))  # off-subnet gateway
    v6 = FibRoute("fd00:65::/122", (NextHop("fd00:99::2"),))
    multi = FibRoute("10.65.3.0/26", (NextHop("10.0.0.2"), NextHop("10.0.0.3")))
    assert ops.apply_many([onlink, v6, multi], []) == []
    assert "10.65.2.0/26 via 192.168.50.9 dev eth0 metric 32 onlink" in routes(ns)
    assert "fd00:65::/122 via fd00:99::2 dev eth0" in ns.run("ip", "-6", "route", "show", "proto", "81")
    assert ops.list_routes() == {r.dst: r for r in (onlink, v6, multi)}
    ops.del_route(v6.dst)
    assert v6.dst not in ops.list_routes()


def test_ten_thousand_routes_over_many_sends(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    ns, ops = ns_ops
    wanted = [
        FibRoute(f"10.{64 + i // 1024}.{(i // 4) % 256}.{(i % 4) * 64}/26", (NextHop("10.0.0.2"),))
        for i in range(10_000)
    ]
    assert ops.apply_many(wanted, []) == []
    assert routes(ns).count("\n") == 10_000
    assert ops.list_routes() == {r.dst: r for r in wanted}
    assert ops.apply_many([], [r.dst for r in wanted]) == []
    assert routes(ns) == ""


def test_set_priority_metric_is_written_read_back_and_changed(ns_ops: tuple[object, NetlinkRouteOps]) -> None:
    """A BGPFilter setPriority's metric goes into the kernel; a change leaves one route, at the new one."""
    ns, ops = ns_ops
    fib = Fib(ops)
    fib.resync()
    hop = (NextHop("10.0.0.2"),)

    def best(priority: int | None) -> list[Route]:
        return [Route("10.65.3.0/26", "10.0.0.2", PathAttrs(priority=priority), PeerInfo("10.0.0.2"))]

    fib.stage("10.65.3.0/26", best(512))
    fib.apply()
    assert routes(ns).splitlines() == ["10.65.3.0/26 via 10.0.0.2 dev eth0 metric 512 "]
    assert ops.list_routes() == {"10.65.3.0/26": FibRoute("10.65.3.0/26", hop, 512)}
    for metric, shown in ((None, "metric 32"), (700, "metric 700")):
        fib.stage("10.65.3.0/26", best(metric))
        assert fib.apply() == 1
        assert routes(ns).splitlines() == [f"10.65.3.0/26 via 10.0.0.2 dev eth0 {shown} "]
    other = NetlinkRouteOps(netns=ns.name)  # a restarted agent adopts it at its metric
    try:
        restarted = Fib(other)
        restarted.resync()
        assert restarted.applied() == {"10.65.3.0/26": FibRoute("10.65.3.0/26", hop, 700)}
    finally:
        other.close()
    fib.stage("10.65.3.0/26", [])
    fib.apply()
    assert routes(ns) == ""
