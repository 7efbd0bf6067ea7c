"""Chaining as a runtime does it: the conflist install-cni writes (felixpy, then portmap), executed
plugin by plugin from the installed bin directory, with runtimeConfig.portMappings as a runtime
passes a pod's hostPorts; and the IPAM plugin path (``felixpy-ipam``, served by the agent).

Topology (created here, removed even on failure): the node namespace of test_agent_cni's harness
(etcd, the real agent, eth0 10.77.0.1/24) whose eth0 peer is moved into a client namespace
(10.77.0.2/24) standing for another machine on the node's network; one pod namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from felixpy.kube.install_cni import install
from tests.fixtures.cniruntime import Runtime
from tests.fixtures.netns import Netns, delete_netns
from tests.kernel.test_agent_cni import NodeEnv, _ns, running_node

pytestmark = pytest.mark.kernel
HOST_PORT, POD_PORT = 18080, 8080


def _conflist(run_dir: Path) -> dict:
    return {
        "name": "k8s-pod-network",
        "cniVersion": "1.0.0",
        "plugins": [
            {
                "type": "felixpy",
                "nodename": "node1",
                "run_dir": str(run_dir),
                "log_file_path": str(run_dir / "log" / "cni.log"),
                "ipam": {"type": "felixpy-ipam"},
            },
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        ],
    }


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[NodeEnv, Netns, Runtime]]:
    if not Path("/usr/lib/cni/portmap").exists() or not shutil.which("socat"):
        print("skipping: needs /usr/lib/cni/portmap (containernetworking-plugins) and socat")
        pytest.skip("no portmap or socat")
    with running_node("chain") as env:
        conflist = _conflist(env.run_dir)
        install(
            bin_dir=env.run_dir / "bin",
            conf_dir=env.run_dir / "net.d",
            conf_name="10-felixpy.conflist",
            template=json.dumps(conflist),
            node_name="node1",
            mtu=1500,
        )
        installed = json.loads((env.run_dir / "net.d" / "10-felixpy.conflist").read_text())
        client = _ns("client")
        try:
            env.node.run("ip", "link", "set", "eth0p", "netns", client.name)
            client.run("ip", "addr", "add", "10.77.0.2/24", "dev", "eth0p")
            client.run("ip", "link", "set", "eth0p", "up")
            yield env, client, Runtime(env.run_dir / "bin", installed, ("ip", "netns", "exec", env.node.name))
        finally:
            delete_netns(client.name)


def _serve(pod: Netns) -> subprocess.Popen[bytes]:
    cmd = [
        "ip",
        "netns",
        "exec",
        pod.name,
        "socat",
        f"TCP-LISTEN:{POD_PORT},fork,reuseaddr",
        "SYSTEM:echo hello-from-pod",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fetch(client: Netns, address: str, port: int) -> str:
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client.name,
            "socat",
            "-T",
            "2",
            "-",
            f"TCP:{address}:{port},connect-timeout=2",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return proc.stdout.strip()


def test_host_port_reaches_the_pod_through_the_chained_conflist(node: tuple[NodeEnv, Netns, Runtime]) -> None:
    env, client, runtime = node
    assert [p["type"] for p in runtime.conflist["plugins"]] == ["felixpy", "portmap"]
    pod = env.pod("pod-hp")
    mappings = [{"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}]
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=hp"
    result = runtime.add("cid-hp", pod.path, args=args, capabilities={"portMappings": mappings})
    pod_ip = result["ips"][0]["address"].split("/")[0]
    server = _serve(pod)
    try:
        deadline, got = time.monotonic() + 20, ""
        while time.monotonic() < deadline and got != "hello-from-pod":
            got = _fetch(client, "10.77.0.1", HOST_PORT)
            time.sleep(0.2)
        assert got == "hello-from-pod", env.node.run("iptables-save", "-t", "nat")
        nat = env.node.run("iptables-save", "-t", "nat")
        assert f"--to-destination {pod_ip}:{POD_PORT}" in nat and "CNI-HOSTPORT-DNAT" in nat
        runtime.delete("cid-hp", pod.path, args=args)
        nat = env.node.run("iptables-save", "-t", "nat")
        assert f"{pod_ip}:{POD_PORT}" not in nat  # portmap's DEL ran with the cached result
        assert _fetch(client, "10.77.0.1", HOST_PORT) == ""
        assert not env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-hp")
    finally:
        server.kill()
        server.wait(10)
    log = (env.run_dir / "log" / "cni.log").read_text().splitlines()
    assert any("command=ADD" in line and 'containerID="cid-hp"' in line and "exit=0" in line for line in log)
    assert any("command=DEL" in line and 'containerID="cid-hp"' in line for line in log)


def test_ipam_plugin_is_served_by_the_agent(node: tuple[NodeEnv, Netns, Runtime]) -> None:
    """/opt/cni/bin/felixpy-ipam run as a main plugin's delegate: an address from the agent's IPAM
    (no etcd address in the configuration), the same one again on a repeat, released on DEL."""
    env, _, _ = node
    ipam_only = Runtime(
        env.run_dir / "bin",
        {
            "name": "k8s-pod-network",
            "cniVersion": "1.0.0",
            "plugins": [{"type": "felixpy-ipam", "run_dir": str(env.run_dir)}],
        },
        ("ip", "netns", "exec", env.node.name),
    )
    pod = env.pod("pod-ipam")  # the namespace must exist for ADD (the agent checks CNI_NETNS)
    first = ipam_only.add("cid-ipam", pod.path)
    again = ipam_only.add("cid-ipam", pod.path)
    assert first == again and first["ips"][0]["address"].startswith("10.244.")
    assert first["ips"][0]["address"].endswith("/26")  # the block's prefix, as Calico IPAM returns
    assert env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-ipam")
    ipam_only.delete("cid-ipam", pod.path)
    assert not env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-ipam")
