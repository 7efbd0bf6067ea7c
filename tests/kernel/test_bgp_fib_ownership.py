"""The BGP kernel writer never replaces, shadows or deletes the dataplane's route for a local workload
(issue 12), whatever the import filters let through: tested by bypassing them (and, for the metric
guarantee, the ``Fib`` too), against a real kernel in a throwaway namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bgp import exabgp_api as api
from bgp.engine import Engine
from bgp.fib import Fib, FibRoute, NextHop
from bgp.fib_netlink import NetlinkRouteOps
from bgp.route import PathAttrs, PeerInfo, Route
from bgp.service import build_plan
from felixpy.resources.base import ObjectMeta
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.node import Node, NodeBGPSpec, NodeSpec

pytestmark = pytest.mark.kernel

POD4, POD6 = "10.65.1.5", "fd00:65::5"


@pytest.fixture
def node(netns: Callable[..., object]) -> Iterator[tuple[object, NetlinkRouteOps]]:
    """A node with a pod behind ``cali1`` and the dataplane's (protocol 80) routes to it."""
    ns = netns("own")
    ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    ns.run("ip", "link", "add", "cali1", "type", "veth", "peer", "name", "pod1")
    for dev in ("eth0", "eth1", "cali1", "pod1"):
        ns.run("ip", "link", "set", dev, "up")
    ns.run("ip", "addr", "add", "10.0.0.1/24", "dev", "eth0")
    ns.run("ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "eth0", "nodad")
    ns.run("ip", "route", "add", f"{POD4}/32", "dev", "cali1", "scope", "link", "proto", "80")
    ns.run("ip", "-6", "route", "add", f"{POD6}/128", "dev", "cali1", "proto", "80")
    ops = NetlinkRouteOps(netns=ns.name)
    yield ns, ops
    ops.close()


def pod_routes_intact(ns: object) -> None:
    assert f"{POD4} dev cali1 scope link" in ns.run("ip", "route", "show", "proto", "80")
    assert f"{POD6} dev cali1" in ns.run("ip", "-6", "route", "show", "proto", "80")
    assert "dev cali1" in ns.run("ip", "route", "get", POD4)  # and it is the one the kernel uses
    assert "dev cali1" in ns.run("ip", "-6", "route", "get", POD6)


def learned(prefix: str, hop: str) -> Route:
    return Route(prefix, hop, source=PeerInfo(hop))


def test_writer_bypassing_fib_and_filters_cannot_replace_or_delete_a_pod_route(
    node: tuple[object, NetlinkRouteOps],
) -> None:
    ns, ops = node
    hostile = [
        FibRoute(f"{POD4}/32", (NextHop("10.0.0.2"),)),
        FibRoute(f"{POD6}/128", (NextHop("fd00:99::2"),)),
    ]
    assert ops.apply_many(hostile, []) == []  # written straight to the kernel: no filter, no Fib
    pod_routes_intact(ns)  # a replace at BGP's metric matched nothing of the dataplane's
    assert set(ops.list_routes()) == {f"{POD4}/32", f"{POD6}/128"}  # ours sit beside, and lose
    assert ops.apply_many([], [f"{POD4}/32", f"{POD6}/128"]) == []
    assert ops.apply_many([], [f"{POD4}/32", f"{POD6}/128"]) == []  # nothing of ours left: deletes stop
    pod_routes_intact(ns)
    assert ops.list_routes() == {}


def test_fib_never_installs_what_the_dataplane_owns_and_counts_it(
    node: tuple[object, NetlinkRouteOps],
) -> None:
    ns, ops = node
    fib = Fib(ops)
    fib.resync()
    fib.stage(f"{POD4}/32", [learned(f"{POD4}/32", "10.0.0.2")])  # what a peer announced, unfiltered
    fib.stage(f"{POD6}/128", [learned(f"{POD6}/128", "fd00:99::2")])
    fib.stage("10.65.2.0/26", [learned("10.65.2.0/26", "10.0.0.2")])  # an ordinary route still goes in
    fib.apply()
    assert ops.list_routes() == {"10.65.2.0/26": FibRoute("10.65.2.0/26", (NextHop("10.0.0.2"),))}
    assert fib.refused_owned == 2
    pod_routes_intact(ns)
    fib.resync()  # the periodic resync does not count the same refusals again, nor write them
    assert fib.refused_owned == 2 and f"{POD4}/32" not in ops.list_routes()


def test_route_learned_before_the_pod_gives_way_and_expiry_leaves_the_pod_routed(
    node: tuple[object, NetlinkRouteOps],
) -> None:
    ns, ops = node
    ns.run("ip", "route", "del", f"{POD4}/32", "proto", "80")  # the pod is not there yet
    fib = Fib(ops)
    fib.resync()
    fib.stage(f"{POD4}/32", [learned(f"{POD4}/32", "10.0.0.2")])  # e.g. a borrowed address of node b
    fib.apply()
    assert f"{POD4}/32" in ops.list_routes()
    # the pod is created here (CNI ADD): the dataplane's route wins at once, BGP's is still in the table
    ns.run("ip", "route", "add", f"{POD4}/32", "dev", "cali1", "scope", "link", "proto", "80")
    assert "dev cali1" in ns.run("ip", "route", "get", POD4)
    fib.resync()  # the writer sees the dataplane's route and withdraws its own
    assert f"{POD4}/32" not in ops.list_routes()
    # the stale route's timer expires (best path gone): nothing of the pod's is touched
    fib.stage(f"{POD4}/32", [])
    fib.apply()
    pod_routes_intact(ns)


def test_previous_versions_metric_0_route_is_kept_then_retired_on_rewrite(
    node: tuple[object, NetlinkRouteOps],
) -> None:
    """Routes an older felixpy installed at metric 0 stay in use across the upgrade (hitless) and are
    deleted when the route is rewritten, so two of ours never disagree for one destination."""
    ns, ops = node
    ns.run("ip", "route", "add", "10.65.9.0/26", "via", "10.0.0.9", "proto", "81")  # metric 0
    fib = Fib(ops)
    fib.resync()
    assert "10.65.9.0/26" in ops.list_routes()
    fib.stage("10.65.9.0/26", [learned("10.65.9.0/26", "10.0.0.9")])  # the same: nothing written
    fib.apply()
    assert "10.65.9.0/26 via 10.0.0.9 dev eth0 \n" in ns.run("ip", "route", "show", "proto", "81")
    fib.stage("10.65.9.0/26", [learned("10.65.9.0/26", "10.0.0.7")])  # the best path changes
    fib.apply()
    assert ns.run("ip", "route", "show", "proto", "81").splitlines() == [
        "10.65.9.0/26 via 10.0.0.7 dev eth0 metric 32 "
    ]
    fib.stage("10.65.9.0/26", [])
    fib.apply()
    assert ns.run("ip", "route", "show", "proto", "81") == ""


def _node(name: str, ip: str) -> Node:
    return Node(metadata=ObjectMeta(name=name), spec=NodeSpec(bgp=NodeBGPSpec(ipv4_address=f"{ip}/24")))


def test_graceful_restart_expiry_in_the_engine_leaves_a_pod_that_took_the_address_routed(
    node: tuple[object, NetlinkRouteOps],
) -> None:
    """The issue's sequence through the engine, with no resync to help: node b announces its pod's
    borrowed /32 (an address of our block), b's session drops without a NOTIFICATION so the route is
    kept stale, the address goes to a pod here meanwhile (the dataplane's route), and the 120 s
    timer expires: BGP's route goes, the pod's stays and is the one the kernel uses."""
    ns, ops = node
    ns.run("ip", "route", "del", f"{POD4}/32", "proto", "80")  # b's pod holds the address for now
    plan = build_plan(
        "a", nodes=[_node("a", "10.0.0.1"), _node("b", "10.0.0.2")], bgp_configs=[], peers=[],
        pools=[IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.65.0.0/16"))],
        local_blocks=["10.65.1.0/26"], workloads=[("b", POD4)],
        all_blocks=[("10.65.1.0/26", "a")],
    ).desired  # fmt: skip
    engine = Engine(lambda _: None, Fib(ops), now=0.0, wall=lambda: 1000.0)
    assert engine.fib is not None
    engine.fib.resync()
    engine.configure(plan)
    engine.handle(api.BridgeNote(0), 0)
    engine.handle(api.Open("10.0.0.2", "10.0.0.2", 64512, 120), 0)
    engine.handle(api.StateChange("10.0.0.2", "up"), 0)
    engine.handle(api.Update("10.0.0.2", 64512, PathAttrs(), (api.Announce(f"{POD4}/32", "10.0.0.2"),)), 1)
    engine.flush()
    assert f"{POD4} via 10.0.0.2 dev eth0 metric 32" in ns.run("ip", "route", "show", "proto", "81")

    engine.handle(api.StateChange("10.0.0.2", "down", "closing connection"), 10)  # no NOTIFICATION
    engine.flush()
    assert f"{POD4} via 10.0.0.2" in ns.run("ip", "route", "show", "proto", "81")  # kept stale
    ns.run("ip", "route", "add", f"{POD4}/32", "dev", "cali1", "scope", "link", "proto", "80")  # CNI ADD
    engine.tick(10 + 120 + 1)  # the graceful-restart time runs out
    engine.flush()
    assert ns.run("ip", "route", "show", "proto", "81") == ""
    pod_routes_intact(ns)
