"""Workload veths on the real kernel: two pods on one node reach each other through cali veths,
/32 routes (RouteTable, protocol 80) and proxy ARP."""

from __future__ import annotations

import pytest

from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.iface_names import veth_name_for_workload
from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.links import HOST_VETH_MAC, VethSpec, WorkloadLinks, delete_container_iface
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.routes import RouteTable
from felixpy.dataplane.sysctl import enable_ip_forwarding, read_sysctl

pytestmark = pytest.mark.kernel

PODS = {("default", "pod-a"): "10.65.0.2", ("default", "pod-b"): "10.65.0.3"}


def _uplink(node):
    """A node needs a route covering 169.254.1.1 (normally its default route) for proxy ARP to
    answer: the kernel proxies only for destinations routed out of another interface."""
    node.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    for cmd in (("link", "set", "up0", "up"), ("link", "set", "up1", "up"),
                ("addr", "add", "192.168.77.1/24", "dev", "up0"),
                ("route", "add", "default", "via", "192.168.77.2")):
        node.run("ip", *cmd)


def _wire(netns):
    node = netns("node")
    enable_ip_forwarding(netns=node.name, ipv6=False)
    _uplink(node)
    links = WorkloadLinks(host_netns=node.name)
    pods, routes = {}, {}
    for (ns, pod), ip in PODS.items():
        pod_ns = netns(pod)
        name = veth_name_for_workload(ns, pod)
        links.create(VethSpec(host_ifname=name, netns=pod_ns.path, addresses=(ip,), mtu=1400))
        pods[pod] = pod_ns
        routes[f"{ip}/32"] = RouteTarget.device(name)
    nl = IPRouteNetlink(node.name)
    table = RouteTable(nl)
    table.set_desired(routes)
    table.apply()
    return node, links, pods, nl


def test_two_pods_ping_through_cali_veths(netns):
    node, _links, pods, nl = _wire(netns)
    try:
        out = pods["pod-a"].run("ping", "-c1", "-W2", PODS[("default", "pod-b")])
        assert "1 received" in out
        neigh = pods["pod-a"].run("ip", "neigh", "show", "169.254.1.1")
        assert HOST_VETH_MAC in neigh  # the host answered ARP for the fake gateway
        name = veth_name_for_workload("default", "pod-a")
        assert read_sysctl(f"net/ipv4/conf/{name}/proxy_arp", netns=node.name) == "1"
        assert "mtu 1400" in pods["pod-a"].run("ip", "link", "show", "eth0")
        assert "10.65.0.2/32" in pods["pod-a"].run("ip", "-4", "addr", "show", "eth0")
        assert "default via 169.254.1.1 dev eth0" in pods["pod-a"].run("ip", "route")
    finally:
        nl.close()


def test_create_is_idempotent_and_stale_ifaces_removed(netns):
    _node, links, pods, nl = _wire(netns)
    nl.close()
    name_a = veth_name_for_workload("default", "pod-a")
    name_b = veth_name_for_workload("default", "pod-b")
    assert links.names() == sorted([name_a, name_b])
    # re-ADD of pod-a: the stale veth (and its eth0) are replaced, not duplicated
    links.create(VethSpec(host_ifname=name_a, netns=pods["pod-a"].path, addresses=("10.65.0.2",)))
    assert links.names() == sorted([name_a, name_b])
    assert links.remove_stale([name_a]) == [name_b]
    assert links.names() == [name_a]
    assert "eth0" not in pods["pod-b"].run("ip", "link")  # peer went with it
    assert delete_container_iface(pods["pod-a"].path) is True
    assert links.names() == []
    assert links.delete(name_a) is False


def test_a_refused_create_names_the_request_and_leaves_no_host_side(netns):
    """The pod already has an ``eth0`` (not ours): the kernel refuses the pair as a whole; the error
    names what was refused, and no half-made host side is left behind."""
    node, pod = netns("node"), netns("pod-taken")
    pod.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    links = WorkloadLinks(host_netns=node.name)
    with pytest.raises(DataplaneError, match=r"create veth calitaken0.*EEXIST"):
        links.create(VethSpec(host_ifname="calitaken0", netns=pod.path, addresses=("10.65.0.9",)))
    assert "calitaken0" not in node.run("ip", "link")
    assert "eth0@other0" in pod.run("ip", "link", "show", "eth0")  # the pod's own interface untouched


def test_pod_side_gets_its_v6_address_without_dad_and_a_v6_default(netns):
    node, pod = netns("node"), netns("pod-v6")
    links = WorkloadLinks(host_netns=node.name)
    spec = VethSpec(host_ifname="calisix0", netns=pod.path, addresses=("10.65.0.7", "fd00:65::7"))
    res = links.create(spec)
    assert res.addresses == ("10.65.0.7/32", "fd00:65::7/128")
    ours = [line for line in pod.run("ip", "-6", "addr", "show", "eth0").splitlines() if "fd00:65::7" in line]
    assert len(ours) == 1 and "/128" in ours[0] and "tentative" not in ours[0]
    assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in pod.run("ip", "-6", "route")
    assert res.container_mac in pod.run("ip", "link", "show", "eth0")


def test_the_start_up_sweep_on_a_prefetched_link_list_removes_the_stale_veth_only(netns):
    """The link list read early (``WorkloadLinks.prefetch``): a stale veth still goes; a veth made
    after the read (a CNI ADD meanwhile) is not in the list and stays."""
    _node, links, pods, nl = _wire(netns)
    nl.close()
    name_a = veth_name_for_workload("default", "pod-a")
    name_b = veth_name_for_workload("default", "pod-b")
    links.prefetch()
    assert links._prefetch is not None and links._prefetch._done.wait(10)
    late = netns("pod-late")
    name_late = veth_name_for_workload("default", "pod-late")
    links.create(VethSpec(host_ifname=name_late, netns=late.path, addresses=("10.65.0.9",)))
    assert links.remove_stale([name_a]) == [name_b]
    assert links.names() == sorted([name_a, name_late])
    assert "eth0" not in pods["pod-b"].run("ip", "link")
