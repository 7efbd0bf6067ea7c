"""Dual-stack workloads: the real agent, etcd and felixpy-cni, pods with an IPv4 and an IPv6 address.

Same topology as test_agent_cni (node namespace with etcd and `felixpy node`, one namespace per pod),
with the default IPv6 pool from CALICO_IPV6POOL_CIDR (fd00:10:244::/48, /122 blocks) and the network
config asking for both families (``"ipam": {"assign_ipv4": "true", "assign_ipv6": "true"}``).

IPv6 pod plumbing is Calico's (reference 3.2): ``<ip>/128`` on eth0, ``default via
fe80::ecee:eeff:feee:eeee dev eth0`` (the host veth's own link-local address, so no IPv6 default route
is needed on the node), host veth with proxy_ndp/accept_dad/forwarding/accept_ra set, and the agent's
``<ip>/128 dev caliX proto 80`` plus a blackhole for the node's /122 block.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from felixpy.dataplane.iface_names import veth_name_for_workload
from tests.fixtures.netns import Netns
from tests.kernel.test_agent_cni import NodeEnv, _ns, _wait

pytestmark = pytest.mark.kernel
V6_POOL = "fd00:10:244::/48"
DUAL = {"type": "felixpy-ipam", "assign_ipv4": "true", "assign_ipv6": "true"}
V6_ONLY = {"type": "felixpy-ipam", "assign_ipv4": "false", "assign_ipv6": "true"}
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"
WEPS = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/"


@pytest.fixture(scope="module")
def env() -> Iterator[NodeEnv]:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root (network namespaces)")
    if not shutil.which("etcd"):
        pytest.skip("etcd not installed")
    if not os.path.exists("/proc/sys/net/ipv6"):
        pytest.skip("this kernel has no IPv6")
    run_dir = Path(tempfile.mkdtemp(prefix="felixpy-agent6-"))
    node = _ns("node6")
    e = NodeEnv(node, run_dir)
    try:
        e.wire_node()
        e.start_etcd()
        e.start_agent(CALICO_IPV6POOL_CIDR=V6_POOL)
        yield e
    finally:
        e.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def cni(
    env: NodeEnv, command: str, pod: Netns, name: str, *, ipam: dict | None = None, labels: str = ""
) -> tuple[int, dict | None]:
    """Run felixpy-cni in the node namespace with an ``ipam`` section (dual-stack by default)."""
    extra = f";K8S_POD_LABELS={labels}"
    return env.cni(command, pod, name, cid=f"cid6-{name}", extra_args=extra, ipam=ipam or DUAL)


def ips(result: dict) -> tuple[str, str]:
    """(IPv4, IPv6) of an ADD result, in the result's order."""
    v4, v6 = (e["address"] for e in result["ips"])
    assert v4.endswith("/32") and v6.endswith("/128"), result
    return v4.split("/")[0], v6.split("/")[0]


def pings(src: Netns, ip: str) -> bool:
    family = "-6" if ":" in ip else "-4"
    return " 1 received" in src.run("ping", family, "-c", "1", "-W", "2", ip, check=False)


def add(env: NodeEnv, name: str, *, ipam: dict | None = None, labels: str = "") -> tuple[Netns, dict]:
    pod = env.pod(name)
    rc, res = cni(env, "ADD", pod, name, ipam=ipam, labels=labels)
    assert rc == 0 and res is not None, res
    return pod, res


def test_dual_stack_pods_ping_each_other_over_both_families(env: NodeEnv) -> None:
    a, ra = add(env, "a6")
    b, rb = add(env, "b6")
    (a4, a6), (b4, b6) = ips(ra), ips(rb)
    assert a4.startswith("10.244.") and a6.startswith("fd00:10:244:") and a6 != b6
    assert {r["dst"] for r in ra["routes"]} == {"0.0.0.0/0", "::/0"}
    for src, dst in ((a, b4), (a, b6), (b, a4), (b, a6)):
        assert pings(src, dst), f"{src.name} -> {dst}"


def test_v6_plumbing_on_both_sides_and_in_the_endpoint(env: NodeEnv) -> None:
    pod, res = add(env, "c6")
    v4, v6 = ips(res)
    iface = veth_name_for_workload("default", "c6")
    assert f"{v6}/128" in pod.run("ip", "-6", "addr", "show", "dev", "eth0")
    assert f"default via {GATEWAY_V6} dev eth0" in pod.run("ip", "-6", "route", "show", "default")
    host_link = env.node.run("ip", "-6", "addr", "show", "dev", iface)
    assert f"{GATEWAY_V6}/64" in host_link, "the pod's gateway is the host veth's link-local address"
    sysctls = {"proxy_ndp": "1", "accept_dad": "0", "disable_ipv6": "0", "forwarding": "1", "accept_ra": "0"}
    for key, want in sysctls.items():
        assert env.node.run("cat", f"/proc/sys/net/ipv6/conf/{iface}/{key}").strip() == want, key
    assert env.node.run("cat", "/proc/sys/net/ipv6/conf/all/forwarding").strip() == "1"
    route = env.node.run("ip", "-6", "route", "show", f"{v6}/128")
    assert f"dev {iface}" in route and "proto 80" in route, route
    blackholes = env.node.run("ip", "-6", "route", "show", "type", "blackhole", "proto", "80")
    assert "fd00:10:244:" in blackholes and "/122" in blackholes, blackholes
    doc = json.loads(env.etcdctl("get", "--print-value-only", WEPS + "node1-k8s-c6-eth0").stdout)
    assert doc["spec"]["ipNetworks"] == [f"{v4}/32", f"{v6}/128"]
    assert cni(env, "CHECK", pod, "c6")[0] == 0


def test_ipv6_only_pod(env: NodeEnv) -> None:
    client, dual = add(env, "d6")
    pod, res = add(env, "e6", ipam=V6_ONLY)
    assert [e["address"].endswith("/128") for e in res["ips"]] == [True], res
    assert [r["dst"] for r in res["routes"]] == ["::/0"]
    v6 = res["ips"][0]["address"].split("/")[0]
    assert "inet " not in pod.run("ip", "-4", "addr", "show", "dev", "eth0")
    assert pings(client, v6) and pings(pod, ips(dual)[1])


def test_policy_applies_over_ipv6(env: NodeEnv) -> None:
    client, rc_ = add(env, "f6", labels="role=client")
    other, _o = add(env, "o6")
    _, res = add(env, "g6", labels="role=v6db")
    (v4, v6), client_v6 = ips(res), ips(rc_)[1]
    iface = veth_name_for_workload("default", "g6")
    rules6 = env.node.run("ip6tables-save", "-t", "filter")
    assert f"cali-tw-{iface}" in rules6 and "-j cali-FORWARD" in rules6, "ip6tables programmed"
    assert pings(other, v6) and pings(other, v4)
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db6", "namespace": "default"},
        "spec": {
            "selector": "role == 'v6db'",
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "source": {"selector": "role == 'client'"}}],
        },
    }
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/default/db6"
    env.etcdctl("put", key, json.dumps(policy))
    try:
        _wait(lambda: not pings(other, v6), 15, "the policy to drop IPv6 from an unselected pod")
        assert not pings(other, v4)
        assert pings(client, v6) and pings(client, v4), "the selected source is allowed in both families"
        sets = env.node.run("ipset", "save")
        assert any(
            line.startswith("create cali60s:") and "family inet6" in line for line in sets.splitlines()
        )
        assert f" {client_v6}" in sets, "the source selector's cali60 set holds the client's IPv6 address"
    finally:
        env.etcdctl("del", key)
    _wait(lambda: pings(other, v6), 15, "policy removal to restore IPv6")


def test_del_removes_both_families(env: NodeEnv) -> None:
    pod, res = add(env, "h6")
    v4, v6 = ips(res)
    iface = veth_name_for_workload("default", "h6")
    rc, out = cni(env, "DEL", pod, "h6")
    assert rc == 0 and out is None, out
    assert env.node.run("ip", "-6", "route", "show", f"{v6}/128") == ""
    assert env.node.run("ip", "route", "show", f"{v4}/32") == ""
    assert env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid6-h6") == []
    assert not any(k.endswith("node1-k8s-h6-eth0") for k in env.keys(WEPS))
    # the host veth goes right after the answer (the agent's link reaper, a background thread)
    _wait(lambda: env.node.run("ip", "link", "show", iface, check=False) == "", 10, f"{iface} deleted")
    _wait(
        lambda: f"cali-tw-{iface}" not in env.node.run("ip6tables-save", "-t", "filter"),
        10,
        "the deleted pod's ip6tables chains to go",
    )
    assert cni(env, "DEL", pod, "h6")[0] == 0, "a repeated DEL succeeds"


def test_egress_policy_keeps_neighbour_discovery_to_the_gateway(env: NodeEnv) -> None:
    _, target = add(env, "q6", labels="role=q6")
    pod, _p = add(env, "p6", labels="role=egress6")
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "egress6", "namespace": "default"},
        "spec": {
            "selector": "role == 'egress6'",
            "types": ["Egress"],
            "egress": [{"action": "Allow", "destination": {"selector": "role == 'q6'"}}],
        },
    }
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/default/egress6"
    env.etcdctl("put", key, json.dumps(policy))
    try:
        _wait(lambda: "egress6" in env.node.run("ip6tables-save", "-t", "filter"), 10, "the policy")
        pod.run("ip", "-6", "neigh", "flush", "dev", "eth0")
        assert pings(pod, ips(target)[0]), "IPv4: the gateway is answered by proxy ARP outside policy"
        assert pings(pod, ips(target)[1]), "IPv6: the allowed destination is reachable"
    finally:
        env.etcdctl("del", key)
