"""VXLAN across nodes with BGP off: real agents, one etcd, pods through the real felixpy-cni.

Topology (every namespace created here, removed at teardown even on failure)::

          subnet A 10.89.1.0/24 (bridge brA)          subnet B 10.89.2.0/24 (bridge brB)
    etcd .10   node1 .1   node2 .2  ── router .254 | .254 ──  node3 .3 (CrossSubnet only)

The router namespace holds both bridges (the switches) and routes between them. Each node runs
``felixpy node`` with ``CALICO_NETWORKING_BACKEND=vxlan``: the remote-block routes, VTEP
neighbours and FDB entries come from the datastore only (block affinities, Node tunnel address).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from felixpy.calc.vxlan import vtep_mac
from tests.fixtures.kernel_features import require_kernel
from tests.fixtures.netns import Netns, delete_netns
from tests.kernel.test_agent_cni import NodeEnv, _ns, _wait

pytestmark = pytest.mark.kernel
POOL = "10.245.0.0/16"
ETCD_IP = "10.89.1.10"


class VxNode(NodeEnv):
    """A node of the VXLAN cluster: its etcd is elsewhere on the fabric."""

    @property
    def endpoints(self) -> str:
        return f"http://{ETCD_IP}:2379"


@dataclass
class Cluster:
    router: Netns
    etcd_ns: Netns
    run_dir: Path
    nodes: dict[str, VxNode] = field(default_factory=dict)
    extra: list[Netns] = field(default_factory=list)

    def attach(self, ns: Netns, bridge: str, cidr: str, gateway: str | None) -> None:
        port = f"p-{ns.name[-6:]}"
        self.router.run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        self.router.run("ip", "link", "set", port, "master", bridge, "up")
        ns.run("ip", "addr", "add", cidr, "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        if gateway:
            ns.run("ip", "route", "add", "default", "via", gateway, "dev", "eth0")

    def teardown(self) -> None:
        for n in self.nodes.values():
            n.kill_agent()
            for pod in n.pods:
                delete_netns(pod.name)
            delete_netns(n.node.name)
        for ns in (self.etcd_ns, self.router, *self.extra):
            delete_netns(ns.name)
        if not os.environ.get("FELIXPY_KEEP_RUN_DIR"):
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _fabric(run_dir: Path) -> Cluster:
    router = _ns("rt")
    cluster = Cluster(router, _ns("etcd"), run_dir)
    router.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for bridge, gw in (("brA", "10.89.1.254/24"), ("brB", "10.89.2.254/24")):
        router.run("ip", "link", "add", bridge, "type", "bridge")
        router.run("ip", "addr", "add", gw, "dev", bridge)
        router.run("ip", "link", "set", bridge, "up")
    cluster.attach(cluster.etcd_ns, "brA", f"{ETCD_IP}/24", "10.89.1.254")
    return cluster


def _start_etcd(cluster: Cluster) -> None:
    import subprocess

    url = f"http://{ETCD_IP}:2379"
    argv = [
        "ip",
        "netns",
        "exec",
        cluster.etcd_ns.name,
        "etcd",
        "--name",
        "vx",
        "--data-dir",
        str(cluster.run_dir / "etcd"),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--log-level",
        "warn",
        "--logger",
        "zap",
    ]
    with open(cluster.run_dir / "etcd.log", "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    probe = ["ip", "netns", "exec", cluster.etcd_ns.name, "etcdctl", "--endpoints", url, "endpoint", "health"]
    _wait(lambda: subprocess.run(probe, capture_output=True, timeout=10).returncode == 0, 20, "etcd healthy")


def _add_node(cluster: Cluster, name: str, bridge: str, address: str, **env: str) -> VxNode:
    ns = _ns(name)
    run_dir = cluster.run_dir / name
    run_dir.mkdir()
    node = VxNode(ns, run_dir, nodename=name)
    cluster.nodes[name] = node
    gateway = address.rsplit(".", 1)[0] + ".254"
    cluster.attach(ns, bridge, address, gateway)
    node.start_agent(IP=address, CALICO_NETWORKING_BACKEND="vxlan", CALICO_IPV4POOL_CIDR=POOL, **env)
    return node


def _cluster(mode: str, layout: list[tuple[str, str, str, dict[str, str]]]) -> Iterator[Cluster]:
    if os.geteuid() != 0 or not shutil.which("etcd"):
        print("skipping: needs root and the etcd binary")
        pytest.skip("needs root and etcd")
    require_kernel("vxlan")
    cluster = _fabric(Path(tempfile.mkdtemp(prefix="felixpy-vxlan-")))
    try:
        _start_etcd(cluster)
        for name, bridge, address, env in layout:
            _add_node(cluster, name, bridge, address, CALICO_IPV4POOL_VXLAN=mode, **env)
        yield cluster
    finally:
        for n in cluster.nodes.values():
            if (n.run_dir / "agent.log").exists():
                print(f"--- {n.nodename} agent log tail:\n{n.agent_log()[-1500:]}")
        cluster.teardown()


@pytest.fixture(scope="module")
def always() -> Iterator[Cluster]:
    yield from _cluster(
        "Always",
        [("vx1", "brA", "10.89.1.1/24", {}), ("vx2", "brA", "10.89.1.2/24", {"FELIX_VETHMTU": "1400"})],
    )


@pytest.fixture(scope="module")
def cross() -> Iterator[Cluster]:
    yield from _cluster(
        "CrossSubnet",
        [
            ("cs1", "brA", "10.89.1.1/24", {}),
            ("cs2", "brA", "10.89.1.2/24", {}),
            ("cs3", "brB", "10.89.2.3/24", {}),
        ],
    )


def _pod(node: VxNode, name: str) -> tuple[Netns, str]:
    pod = node.pod(name)
    rc, res = node.cni("ADD", pod, name)
    assert rc == 0, res
    return pod, res["ips"][0]["address"].split("/")[0]


def _tunnel_ip(node: VxNode) -> str:
    info = json.loads(node.node.run("ip", "-j", "-4", "addr", "show", "dev", "vxlan.calico"))
    return str(info[0]["addr_info"][0]["local"])


def _block_route(node: VxNode, pod_ip: str) -> str:
    """node's route towards the block holding ``pod_ip`` (a remote pod), awaited: the block's
    affinity reaches the other agents through their datastore watch."""
    lines: list[str] = []
    hits: list[str] = []

    def found() -> bool:
        nonlocal lines, hits
        lines = node.node.run("ip", "route", "show", "proto", "80").splitlines()
        hits = [r for r in lines if "blackhole" not in r and "/26" in r and _contains(r.split()[0], pod_ip)]
        return len(hits) == 1

    try:
        _wait(found, 15, f"{node.nodename}'s route to the block of {pod_ip}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {lines}") from None
    return hits[0]


def _contains(cidr: str, ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def _ping(pod: Netns, ip: str) -> None:
    _wait(lambda: "1 received" in pod.run("ping", "-c", "1", "-W", "1", ip, check=False), 15, f"ping {ip}")


def test_always_pods_ping_across_nodes_over_vxlan(always: Cluster) -> None:
    n1, n2 = always.nodes["vx1"], always.nodes["vx2"]
    pa, ip_a = _pod(n1, "va")
    pb, ip_b = _pod(n2, "vb")
    _ping(pa, ip_b)
    _ping(pb, ip_a)
    route = _block_route(n1, ip_b)
    assert f"via {_tunnel_ip(n2)} dev vxlan.calico" in route and "onlink" in route, route
    route = _block_route(n2, ip_a)
    assert f"via {_tunnel_ip(n1)} dev vxlan.calico" in route and "onlink" in route, route


def test_vxlan_device_neighbour_and_fdb(always: Cluster) -> None:
    n1, n2 = always.nodes["vx1"], always.nodes["vx2"]
    link = json.loads(n1.node.run("ip", "-d", "-j", "link", "show", "vxlan.calico"))[0]
    data = link["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"]) == (4096, 4789, "10.89.1.1")
    assert data.get("learning") is False
    assert link["address"] == vtep_mac("vx1") and link["mtu"] == 1450
    addr = json.loads(n1.node.run("ip", "-j", "-4", "addr", "show", "dev", "vxlan.calico"))[0]
    assert [a["prefixlen"] for a in addr["addr_info"]] == [32]
    assert _contains(POOL, _tunnel_ip(n1))
    # vx2's VTEP reaches vx1's agent through the datastore: awaited (this test may run alone)
    neighbour = f"{_tunnel_ip(n2)} lladdr {vtep_mac('vx2')} PERMANENT"
    _wait(lambda: neighbour in n1.node.run("ip", "neigh", "show", "dev", "vxlan.calico"), 15, neighbour)
    fdb = f"{vtep_mac('vx2')} dst 10.89.1.2 self permanent"
    _wait(lambda: fdb in n1.node.run("bridge", "fdb", "show", "dev", "vxlan.calico"), 15, fdb)
    features = n1.node.run("ethtool", "-k", "vxlan.calico")
    assert "tx-checksum-ip-generic: off" in features


def test_pod_mtu_is_host_minus_vxlan_or_felix_vethmtu(always: Cluster) -> None:
    n1, n2 = always.nodes["vx1"], always.nodes["vx2"]
    assert (n1.run_dir / "mtu").read_text().strip() == "1450"
    assert (n2.run_dir / "mtu").read_text().strip() == "1400"
    p1, _ = _pod(n1, "m1")
    p2, _ = _pod(n2, "m2")
    assert json.loads(p1.run("ip", "-j", "link", "show", "eth0"))[0]["mtu"] == 1450
    assert json.loads(p2.run("ip", "-j", "link", "show", "eth0"))[0]["mtu"] == 1400


def test_hosts_ipset_lists_every_node(always: Cluster) -> None:
    def members() -> str:
        return always.nodes["vx1"].node.run("ipset", "list", "cali40all-hosts-net")

    # vx2's Node reaches vx1's agent through the datastore: awaited (this test may run alone)
    _wait(lambda: "10.89.1.1" in members() and "10.89.1.2" in members(), 15, "both nodes in the hosts set")


def test_vxlan_route_repaired_after_manual_delete(always: Cluster) -> None:
    n1, n2 = always.nodes["vx1"], always.nodes["vx2"]
    _, ip_b = _pod(n2, "vr")
    route = _block_route(n1, ip_b)
    n1.node.run("ip", "route", "del", route.split()[0])
    n1.node.run("ip", "neigh", "del", _tunnel_ip(n2), "dev", "vxlan.calico")
    _wait(lambda: "vxlan.calico" in n1.node.run("ip", "route", "show", route.split()[0]), 10, "route repair")
    _wait(
        lambda: "PERMANENT" in n1.node.run("ip", "neigh", "show", "dev", "vxlan.calico"), 10, "neigh repair"
    )


def test_crosssubnet_same_subnet_native_other_subnet_vxlan(cross: Cluster) -> None:
    n1, n2, n3 = cross.nodes["cs1"], cross.nodes["cs2"], cross.nodes["cs3"]
    p1, ip1 = _pod(n1, "c1")
    p2, ip2 = _pod(n2, "c2")
    p3, ip3 = _pod(n3, "c3")
    native = _block_route(n1, ip2)
    assert "via 10.89.1.2 dev eth0" in native and "vxlan" not in native, native
    encap = _block_route(n1, ip3)
    assert f"via {_tunnel_ip(n3)} dev vxlan.calico" in encap and "onlink" in encap, encap
    assert "vxlan.calico" in _block_route(n3, ip1)
    _ping(p1, ip2)
    _ping(p2, ip1)
    _ping(p1, ip3)
    _ping(p3, ip2)
