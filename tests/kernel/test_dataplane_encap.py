"""tunl0 / vxlan.calico devices and VXLAN neighbour+FDB state in throwaway namespaces."""

from __future__ import annotations

import dataclasses

import pytest

from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.routes import RouteTable
from felixpy.dataplane.tunnel_devices import (
    Vtep,
    VxlanConfig,
    VxlanFdb,
    ensure_ipip,
    ensure_vxlan,
    vtep_mac,
)
from tests.fixtures.kernel_features import require_kernel

pytestmark = pytest.mark.kernel
NODES = {"node-a": ("192.168.90.1", "10.66.0.1"), "node-b": ("192.168.90.2", "10.66.1.1")}


def _two_nodes(netns):
    a, b = netns("node-a"), netns("node-b")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns, (ip, _) in zip((a, b), NODES.values(), strict=True):
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    return a, b


def test_vxlan_device_and_fdb_carry_traffic_between_nodes(netns):
    require_kernel("vxlan")
    a, b = _two_nodes(netns)
    for ns, name in ((a, "node-a"), (b, "node-b")):
        ip, tunnel = NODES[name]
        ensure_vxlan(VxlanConfig(parent="eth0", parent_ip=ip, address=tunnel, mac=vtep_mac(name)),
                     netns=ns.name)
        fdb = VxlanFdb(netns=ns.name)
        other = "node-b" if name == "node-a" else "node-a"
        fdb.set_vteps([Vtep(NODES[other][1], vtep_mac(other), NODES[other][0])])
        assert fdb.apply() == (2, 0)
        assert fdb.apply() == (0, 0)  # converged
        with IPRouteNetlink(ns.name) as nl:
            table = RouteTable(nl)
            table.set_desired({f"{NODES[other][1]}/32": RouteTarget.device("vxlan.calico")})
            table.apply()
    details = a.run("ip", "-d", "link", "show", "vxlan.calico")
    assert "vxlan id 4096" in details and "dstport 4789" in details and "nolearning" in details
    assert "local 192.168.90.1" in details and vtep_mac("node-a") in details
    assert "tx-checksum-ip-generic: off" in a.run("ethtool", "-k", "vxlan.calico")
    assert "10.66.0.1/32" in a.run("ip", "addr", "show", "vxlan.calico")
    assert f"{vtep_mac('node-b')} PERMANENT" in a.run("ip", "neigh", "show", "dev", "vxlan.calico")
    assert "dst 192.168.90.2" in a.run("bridge", "fdb", "show", "dev", "vxlan.calico")
    assert "1 received" in a.run("ping", "-c1", "-W2", "-I", "10.66.0.1", "10.66.1.1")


def test_vxlan_reconfigure_and_stale_vteps_removed(netns):
    require_kernel("vxlan")
    a, _ = _two_nodes(netns)
    cfg = VxlanConfig(parent="eth0", parent_ip="192.168.90.1", address="10.66.0.1", mac=vtep_mac("node-a"))
    first = ensure_vxlan(cfg, netns=a.name)
    assert ensure_vxlan(cfg, netns=a.name) == first  # idempotent: same device kept
    ensure_vxlan(dataclasses.replace(cfg, address="10.66.0.9"), netns=a.name)
    addrs = a.run("ip", "-4", "addr", "show", "vxlan.calico")
    assert "10.66.0.9/32" in addrs and "10.66.0.1/32" not in addrs
    fdb = VxlanFdb(netns=a.name)
    fdb.set_vteps([Vtep("10.66.1.1", vtep_mac("node-b"), "192.168.90.2"),
                   Vtep("10.66.2.1", vtep_mac("node-c"), "192.168.90.3")])
    fdb.apply()
    fdb.set_vteps([Vtep("10.66.2.1", vtep_mac("node-c"), "192.168.90.3")])
    assert fdb.apply() == (0, 2)
    assert "10.66.1.1" not in a.run("ip", "neigh", "show", "dev", "vxlan.calico")
    assert vtep_mac("node-b") not in a.run("bridge", "fdb", "show", "dev", "vxlan.calico")


@pytest.mark.vm
def test_ipip_tunl0_made_as_the_agent_does_and_carries_traffic(netns):
    """tunl0 from a kernel whose ipip module may not be loaded yet (the add answers EEXIST: the
    module's fallback device), its /32 and MTU, then IPIP between two nodes over onlink routes."""
    require_kernel("ipip")
    a, b = _two_nodes(netns)
    for ns, name in ((a, "node-a"), (b, "node-b")):
        ensure_ipip(NODES[name][1], mtu=1440, netns=ns.name)
        ensure_ipip(NODES[name][1], mtu=1440, netns=ns.name)  # idempotent
        other = "node-b" if name == "node-a" else "node-a"
        with IPRouteNetlink(ns.name) as nl:
            table = RouteTable(nl)
            via = RouteTarget.via(NODES[other][0], "tunl0", onlink=True)
            table.set_desired({f"{NODES[other][1]}/32": via})
            table.apply()
    out = a.run("ip", "-d", "addr", "show", "tunl0")
    assert "10.66.0.1/32" in out and "mtu 1440" in out and "ipip" in out and "UP" in out
    assert "via 192.168.90.2 dev tunl0" in a.run("ip", "route", "show", "10.66.1.1")
    assert "1 received" in a.run("ping", "-c1", "-W5", "-I", "10.66.0.1", "10.66.1.1")
    # the mtu follows a change of ipipMTU; a foreign address on tunl0 is removed
    a.run("ip", "addr", "add", "10.66.0.99/32", "dev", "tunl0")
    ensure_ipip("10.66.0.1", mtu=1400, netns=a.name)
    out = a.run("ip", "addr", "show", "tunl0")
    assert "mtu 1400" in out and "10.66.0.99" not in out


def test_wireguard_table_and_rule_converge_and_go(netns):
    """The WireGuard table and rule without WireGuard itself (a veth stands in for the device)."""
    from felixpy.dataplane.wireguard_kernel import delete_rule, ensure_rule, sync_table

    ns = netns("wgtable")
    ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    ns.run("ip", "link", "set", "eth0", "up")
    ns.run("ip", "route", "add", "10.9.0.0/24", "dev", "eth0", "table", "1")  # someone's leftover
    want = {"10.244.1.0/26": "dev", "10.244.0.0/26": "throw"}
    assert sync_table(want, device="eth0", table=1, netns=ns.name) == (2, 1)
    assert sync_table(want, device="eth0", table=1, netns=ns.name) == (0, 0)
    table = ns.run("ip", "route", "show", "table", "1")
    assert "10.244.1.0/26 dev eth0 proto 80 scope link" in table and "throw 10.244.0.0/26" in table
    assert ensure_rule(table=1, priority=99, fwmark=0x200000, netns=ns.name)
    assert not ensure_rule(table=1, priority=99, fwmark=0x200000, netns=ns.name)
    assert "99:\tnot from all fwmark 0x200000/0x200000 lookup 1" in ns.run("ip", "rule")
    ns.run("ip", "route", "del", "10.244.1.0/26", "table", "1")  # drift: repaired
    assert sync_table(want, device="eth0", table=1, netns=ns.name) == (1, 0)
    assert sync_table({}, device="eth0", table=1, netns=ns.name) == (0, 2)
    assert ns.run("ip", "route", "show", "table", "1").strip() == ""
    assert delete_rule(table=1, priority=99, netns=ns.name)
    assert "lookup 1" not in ns.run("ip", "rule")
