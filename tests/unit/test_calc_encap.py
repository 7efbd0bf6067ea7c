"""IPIP routes in calc, the agent's encapsulation driver and the dataplane around it (no kernel)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.updates import Encap, EncapUpdate, Route, RouteUpdate, Vtep, VtepUpdate
from felixpy.dataplane import tunnel_devices as drv
from felixpy.dataplane.encap_driver import EncapDriver, EncapSettings
from felixpy.dataplane.linux import LinuxDataplane
from felixpy.resources import IPPool, Node
from felixpy.runtime.settings import FelixParams
from felixpy.runtime.startup import pod_mtu
from tests.fixtures.calc_recorder import RecordingDataplane

ME = "node1"
BLOCKS = {"192.168.0.0/26": ME, "192.168.1.0/26": "node2", "192.168.2.0/26": "node3"}


def node(name: str, ip: str, ipip: str | None = None) -> Node:
    bgp: dict[str, Any] = {"ipv4Address": ip}
    if ipip:
        bgp["ipv4IPIPTunnelAddr"] = ipip
    return Node.model_validate({"metadata": {"name": name}, "spec": {"bgp": bgp}})


def ipip_pool(mode: str) -> IPPool:
    return IPPool.model_validate(
        {"metadata": {"name": "p"}, "spec": {"cidr": "192.168.0.0/16", "ipipMode": mode}}
    )


def graph_with(mode: str, *, ipip_routes: bool = True) -> tuple[CalcGraph, RecordingDataplane]:
    g, rec = CalcGraph(ME, ipip_routes=ipip_routes), RecordingDataplane()
    g.on_resource("Node", ("", ME), node(ME, "10.0.0.1/24", "192.168.0.1"))
    g.on_resource("Node", ("", "node2"), node("node2", "10.0.0.2/24"))
    g.on_resource("Node", ("", "node3"), node("node3", "10.0.9.3/24"))
    g.on_resource("IPPool", ("", "p"), ipip_pool(mode))
    for cidr, owner in BLOCKS.items():
        g.on_block(cidr, owner)
    rec.apply(g.flush())
    return g, rec


def ipip(dst: str, gw: str, node: str) -> Route:
    return Route(
        dst,
        "ipip",
        iface="tunl0",
        gateway=gw,
        onlink=True,
        reason=f"block of {node} (ipip pool 192.168.0.0/16)",
    )


def test_ipip_always_routes_every_remote_block_over_tunl0() -> None:
    _, rec = graph_with("Always")
    assert rec.routes["192.168.1.0/26"] == ipip("192.168.1.0/26", "10.0.0.2", "node2")
    assert rec.routes["192.168.2.0/26"] == ipip("192.168.2.0/26", "10.0.9.3", "node3")
    assert rec.routes["192.168.0.0/26"].kind == "blackhole"
    assert rec.encap.ipip and rec.encap.ipip_tunnel_addr == "192.168.0.1"


def test_ipip_crosssubnet_same_subnet_is_native() -> None:
    _, rec = graph_with("CrossSubnet")
    same = rec.routes["192.168.1.0/26"]
    assert (same.kind, same.gateway, same.iface) == ("direct", "10.0.0.2", None)
    assert rec.routes["192.168.2.0/26"] == ipip("192.168.2.0/26", "10.0.9.3", "node3")


def test_ipip_routes_left_to_bgp_when_it_programs_them() -> None:
    _, rec = graph_with("Always", ipip_routes=False)
    assert set(rec.routes) == {"192.168.0.0/26"}


def test_ipip_routes_follow_pool_and_node_changes() -> None:
    g, rec = graph_with("Always")
    g.on_resource("Node", ("", "node2"), node("node2", "10.0.0.22/24"))
    rec.apply(g.flush())
    assert rec.routes["192.168.1.0/26"].gateway == "10.0.0.22"
    g.on_resource("IPPool", ("", "p"), ipip_pool("Never"))
    rec.apply(g.flush())
    assert set(rec.routes) == {"192.168.0.0/26"} and not rec.encap.ipip
    assert rec.state() == g.state()


# ---- EncapDriver with recording callables ----------------------------------------------------
class Calls:
    def __init__(self, ipip_error: Exception | None = None) -> None:
        self.vxlan: list[drv.VxlanConfig] = []
        self.ipip: list[tuple[str, int]] = []
        self.deleted: list[str] = []
        self.vteps: list[list[drv.Vtep]] = []
        self.ipip_error = ipip_error

    def ensure_vxlan(self, cfg: drv.VxlanConfig, *, netns: str | None = None) -> int:
        self.vxlan.append(cfg)
        return 7

    def ensure_ipip(self, address: str, *, mtu: int, netns: str | None = None) -> int:
        if self.ipip_error is not None:
            raise self.ipip_error
        self.ipip.append((address, mtu))
        return 8

    def delete_device(self, name: str, *, netns: str | None = None, reason: str = "") -> bool:
        self.deleted.append(name)
        return True

    def set_vteps(self, vteps: list[drv.Vtep]) -> None:
        self.vteps.append(list(vteps))

    def apply(self) -> tuple[int, int]:
        return 0, 0


def driver(calls: Calls, **kw: Any) -> EncapDriver:
    settings = EncapSettings(parent="eth0", parent_ip="10.0.0.1", host_mtu=1500, **kw)
    return EncapDriver(
        settings,
        fdb=calls,
        ensure_vxlan=calls.ensure_vxlan,
        ensure_ipip=calls.ensure_ipip,
        delete_device=calls.delete_device,
    )


VX = Encap(vxlan=True, vxlan_tunnel_addr="192.168.0.1", vxlan_mac="66:aa:bb:cc:dd:ee", node_ip="10.0.0.1/24")


def test_vxlan_device_and_vteps_from_updates() -> None:
    calls = Calls()
    d = driver(calls)
    d.on_update(EncapUpdate(VX))
    d.on_update(VtepUpdate("node2", Vtep("node2", "192.168.1.1", "66:01:02:03:04:05", "10.0.0.2")))
    assert d.apply()
    cfg = calls.vxlan[-1]
    assert (cfg.parent, cfg.parent_ip, cfg.address, cfg.mac, cfg.mtu, cfg.vni, cfg.port) == (
        "eth0",
        "10.0.0.1",
        "192.168.0.1",
        "66:aa:bb:cc:dd:ee",
        1450,
        4096,
        4789,
    )
    assert calls.vteps[-1] == [drv.Vtep("192.168.1.1", "66:01:02:03:04:05", "10.0.0.2")]
    assert d.apply() and len(calls.vxlan) == 1 and len(calls.vteps) == 1  # nothing changed: no writes
    d.on_update(VtepUpdate("node2", None))
    assert d.apply() and calls.vteps[-1] == []
    d.on_update(EncapUpdate(Encap()))
    assert d.apply() and calls.deleted == ["vxlan.calico"]


def test_vxlan_waits_for_tunnel_address_and_honours_vxlan_mtu() -> None:
    calls = Calls()
    d = driver(calls, vxlan_mtu=1370)
    d.on_update(EncapUpdate(Encap(vxlan=True, vxlan_mac="66:aa:bb:cc:dd:ee")))
    assert d.apply() and calls.vxlan == []
    d.on_update(EncapUpdate(VX))
    assert d.apply() and calls.vxlan[-1].mtu == 1370


def test_ipip_unsupported_is_logged_once_and_routes_are_not_requested() -> None:
    calls = Calls(ipip_error=drv.EncapUnsupported("Operation not supported"))
    routes = FakeRoutes()
    dp = LinuxDataplane(routes=routes, links=None, encap=driver(calls))
    ipip_route = Route("192.168.1.0/26", "ipip", iface="tunl0", gateway="10.0.0.2", onlink=True)
    dp.apply(
        [
            EncapUpdate(Encap(ipip=True, ipip_tunnel_addr="192.168.0.1")),
            RouteUpdate(ipip_route.dst, ipip_route),
        ]
    )
    assert dp.commit()
    assert dp.encap is not None and dp.encap.ipip_usable is False
    assert "192.168.1.0/26" not in routes.desired
    dp.apply(
        [RouteUpdate("192.168.2.0/26", Route("192.168.2.0/26", "ipip", gateway="10.0.9.3", onlink=True))]
    )
    assert dp.commit() and "192.168.2.0/26" not in routes.desired


def test_ipip_tunnel_gets_its_address_and_mtu() -> None:
    calls = Calls()
    routes = FakeRoutes()
    dp = LinuxDataplane(routes=routes, links=None, encap=driver(calls))
    r = Route("192.168.1.0/26", "ipip", iface="tunl0", gateway="10.0.0.2", onlink=True)
    dp.apply([EncapUpdate(Encap(ipip=True, ipip_tunnel_addr="192.168.0.1")), RouteUpdate(r.dst, r)])
    assert dp.commit()
    assert calls.ipip == [("192.168.0.1", 1480)]
    target = routes.desired["192.168.1.0/26"]
    assert (target.gateway, target.dev, target.onlink) == ("10.0.0.2", "tunl0", True)


class FakeRoutes:
    def __init__(self) -> None:
        self.desired: dict[str, Any] = {}

    def set_route(self, dst: str, target: Any) -> None:
        self.desired[dst] = target

    def remove_route(self, dst: str) -> None:
        self.desired.pop(dst, None)

    def start(self) -> Any:
        return self.apply()

    def apply(self, *, removals_only: bool = False) -> Any:
        from felixpy.dataplane.routes import ApplyStats

        return ApplyStats()


@pytest.mark.parametrize(
    ("env", "kinds", "expected"),
    [
        ({}, set(), 1500),
        ({}, {"vxlan"}, 1450),
        ({}, {"ipip"}, 1480),
        ({}, {"ipip", "vxlan"}, 1450),
        ({"FELIX_VETHMTU": "1400"}, {"vxlan"}, 1400),
    ],
)
def test_pod_mtu(env: dict[str, str], kinds: set[str], expected: int) -> None:
    assert pod_mtu(FelixParams.resolve(env), 1500, kinds) == expected


def test_policy_calc_feeds_node_ips_to_hosts_set() -> None:
    from felixpy.calc.policy_stage import PolicyCalc
    from policy.compiler import PolicyCompiler

    class Compiler(PolicyCompiler):
        hosts: list[list[str]] = []

        def set_host_ips(self, ips: Iterable[str]) -> None:
            self.hosts.append(list(ips))
            super().set_host_ips(ips)

    c = Compiler("a")
    pc = PolicyCalc([c])
    pc.on_resource("Node", ("", "a"), node("a", "10.0.0.1/24"))
    pc.on_resource("Node", ("", "b"), node("b", "10.0.0.2/24"))
    pc.flush()
    assert c.hosts == [["10.0.0.1", "10.0.0.2"]]
    pc.on_resource("Node", ("", "a"), node("a", "10.0.0.1/24"))
    pc.flush()
    assert len(c.hosts) == 1  # unchanged: not re-rendered
    pc.on_resource("Node", ("", "b"), None)
    pc.flush()
    assert c.hosts[-1] == ["10.0.0.1"]
