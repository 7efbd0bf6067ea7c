"""Namespaces and links: the fabric (bridges per rack, router between racks), etcd's link, nodes.

Links are created directly inside the lab's namespaces (``ip -n <fabric> link add ... type
veth peer name eth0 netns <node>``): no device, address or route ever exists in the root
namespace, not even for a moment. Sysctls are per namespace (``ip_forward`` in the fabric
and on nodes).
"""

from __future__ import annotations

import os

from felixpy.lab.layout import NETNS_DIR, LabNames
from felixpy.lab.plan import ETCD_ADDR, ETCD_GW, NodePlan, Plan, RackPlan
from felixpy.lab.shell import Progress, run


def _ip(netns: str, *args: str) -> None:
    run(["ip", "-n", netns, *args])


def _sysctl(netns: str, key: str, value: str) -> None:
    run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"])


def netns_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def create_netns(netns: str) -> None:
    """Create ``netns`` with loopback up (idempotent)."""
    if not netns_exists(netns):
        run(["ip", "netns", "add", netns])
    _ip(netns, "link", "set", "lo", "up")


def delete_netns(netns: str) -> None:
    run(["ip", "netns", "del", netns], check=False, timeout=15)


def lab_netns(names: LabNames) -> list[str]:
    """Every namespace whose name carries this lab's prefix."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if names.owns_netns(n))


def build_fabric(names: LabNames, plan: Plan) -> None:
    """The fabric namespace: one bridge per rack with its gateway address, forwarding on."""
    create_netns(names.fabric)
    _sysctl(names.fabric, "net.ipv4.ip_forward", "1")
    for rack in plan.racks:
        _build_rack(names.fabric, rack)


def _build_rack(fabric: str, rack: RackPlan) -> None:
    _ip(fabric, "link", "add", rack.bridge, "type", "bridge")
    _ip(fabric, "addr", "add", f"{rack.gateway}/24", "dev", rack.bridge)
    _ip(fabric, "link", "set", rack.bridge, "up")


def build_etcd_link(names: LabNames, addresses: list[str] | None = None) -> None:
    """The etcd namespace, linked to the fabric on its own /24 (one address per member)."""
    create_netns(names.etcd)
    _ip(names.fabric, "link", "add", "v-etcd", "type", "veth", "peer", "name", "eth0", "netns", names.etcd)
    _ip(names.fabric, "addr", "add", f"{ETCD_GW}/24", "dev", "v-etcd")
    _ip(names.fabric, "link", "set", "v-etcd", "up")
    for addr in addresses or [ETCD_ADDR]:
        _ip(names.etcd, "addr", "add", f"{addr}/24", "dev", "eth0")
    _ip(names.etcd, "link", "set", "eth0", "up")
    _ip(names.etcd, "route", "add", "default", "via", ETCD_GW)


def build_node(names: LabNames, plan: Plan, node: NodePlan) -> None:
    """One node namespace: ``eth0`` on its rack's bridge, its address, default via the fabric."""
    create_netns(node.netns)
    bridge = plan.racks[node.rack - 1].bridge
    fabric = names.fabric
    _ip(fabric, "link", "add", node.fabric_if, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    _ip(fabric, "link", "set", node.fabric_if, "master", bridge)
    _ip(fabric, "link", "set", node.fabric_if, "up")
    _ip(node.netns, "addr", "add", node.cidr, "dev", "eth0")
    _ip(node.netns, "link", "set", "eth0", "up")
    _ip(node.netns, "route", "add", "default", "via", node.gateway)
    _sysctl(node.netns, "net.ipv4.ip_forward", "1")


def build(names: LabNames, plan: Plan, progress: Progress) -> None:
    """Everything but processes: fabric, etcd link, every node."""
    with progress.step(f"fabric {names.fabric}: {len(plan.racks)} rack(s), forwarding on"):
        build_fabric(names, plan)
    with progress.step(f"etcd namespace {names.etcd} at {', '.join(plan.etcd_addresses)}"):
        build_etcd_link(names, plan.etcd_addresses)
    for node in plan.nodes:
        with progress.step(f"node {node.name} ({node.role}) {node.netns} {node.cidr} rack {node.rack}"):
            build_node(names, plan, node)
