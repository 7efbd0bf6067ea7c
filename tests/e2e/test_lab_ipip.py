"""IPIP lab on a kernel with ``ipip``: an ``Always`` pool, 2 nodes on one subnet, 3 pods.

One lab for the whole module (a module fixture): under the VM stage's TCG a lab costs minutes,
and a node more costs an agent and its ExaBGP. The nodes share a subnet, which is what tells
``Always`` from ``CrossSubnet``: the other node's block still goes ``via <node> dev tunl0
onlink``. The tests run in file order on the lab: every pod reaches every pod over tunl0, tunl0
and the pods' MTU are Calico's (``ipipMTU`` 0: host MTU - 20), a NetworkPolicy tells two pods
arriving from the same node over tunl0 apart, and ``down`` leaves nothing. ``CrossSubnet``
(same rack direct, cross-rack via tunl0) is test_lab_wireguard.py's lab.

These run in the VM stage (``scripts/vm-tests.sh``, marker ``vm``), where the kernel has the
module and ``FELIXPY_REQUIRE_KERNEL_FEATURES=ipip`` makes a missing module a failure. On a host
without ``ipip`` they skip with the probe's reason. Waits scale with ``FELIXPY_TIME_SCALE``
(the VM runs under TCG, ~30x slower than the host); each phase prints how long it took.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from felixpy.lab.down import leftovers
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot
from tests.fixtures import waiting
from tests.fixtures.kernel_features import require_kernel

SCALE = float(os.environ.get("FELIXPY_TIME_SCALE", "1"))
# setup (lab up + 3 pods) is charged to the first test: ~4 s on a host, 5-20 min under TCG on a
# loaded machine (the VM stage's own bound, VM_STAGE_TIMEOUT, is the one that holds CI's time)
pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.timeout(max(600, 240 * SCALE))]
NODES = ["node1", "node2"]
PODS = {"x/p0": "node1", "x/p1": "node2", "x/p2": "node2"}
HOST_MTU = 1500
IPIP_OVERHEAD = 20


def t(seconds: float) -> float:
    return seconds * SCALE


def phase(what: str, since: float) -> None:
    print(f"\n[lab-timing] ipip: {what}: {time.monotonic() - since:.1f}s", flush=True)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    return waiting.eventually(predicate, timeout, every)


@dataclass
class IpipLab:
    cli: LabCLI
    before: set[str]
    started: float
    status: dict = field(default_factory=dict)

    def node_run(self, node: str, *argv: str) -> str:
        return self.cli.ok("exec", node, "--", *argv, timeout=t(20))

    def matrix(self) -> dict[str, dict[str, bool]]:
        out = self.cli.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json", timeout=t(60))
        return json.loads(out)["tables"]["80/tcp"]  # type: ignore[no-any-return]


def agent_logs(cli: LabCLI, lines: int = 25) -> str:
    """The last lines of every agent's log (the lab's run dir; inside the VM only the console is kept)."""
    out = []
    for log in sorted(cli.names.run_dir.glob("*/agent.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log}\n" + "\n".join(tail))
    return "\n".join(out)


@pytest.fixture(scope="module")
def lab() -> Iterator[IpipLab]:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    require_kernel("ipip")
    started = time.monotonic()
    env = IpipLab(LabCLI.unique("ipa", timeout=t(240)), root_snapshot(), started)
    try:
        env.cli.ok("up", "--nodes", "2", "--encap", "ipip", "--timeout", "150", timeout=t(400))
        phase("lab up (2 nodes, one subnet, IPIP Always)", started)
        for pod, node in PODS.items():
            env.cli.ok("pod", "add", pod, "--node", node, "--labels", f"app={pod[2:]}", "--serve", "80",
                       timeout=t(60))
        env.status = env.cli.status()
        phase("lab up + 3 pods", started)
    except BaseException as exc:
        print(f"\n[lab-timing] ipip: setup failed after {time.monotonic() - started:.1f}s: {exc}", flush=True)
        print(agent_logs(env.cli), flush=True)
        env.cli.down()
        raise
    try:
        yield env
    finally:
        env.cli.down()  # again after test_down_leaves_nothing: a no-op then


def remote_blocks(env: IpipLab, node: str) -> dict[str, str]:
    """Block -> its route line on ``node``, for the pods on the other nodes."""
    routes = env.node_run(node, "ip", "route")
    out = {}
    for pod in env.status["pods"]:
        if pod["node"] == node:
            continue
        for line in routes.splitlines():
            net = line.split()[0]
            if "/" in net and ipaddress.ip_address(pod["ip"]) in ipaddress.ip_network(net):
                out[net] = line
    return out


def test_pods_everywhere_connected_every_remote_block_via_tunl0_onlink(lab: IpipLab) -> None:
    since = time.monotonic()
    assert wait_for(lambda: all(all(r.values()) for r in lab.matrix().values()), t(60), every=1), lab.matrix()
    phase("every pod reaches every pod", since)
    for node in NODES:
        blocks = remote_blocks(lab, node)
        assert blocks, lab.node_run(node, "ip", "route")
        other = next(n for n in lab.status["nodes"] if n["name"] != node)
        for net, line in blocks.items():  # Always: on the same subnet too
            via = rf"via {re.escape(other['address'])} dev tunl0 .*onlink"
            assert re.search(via, line), (node, net, line)


def test_tunl0_as_calico_mtu_host_minus_20_and_tunnel_address(lab: IpipLab) -> None:
    for node in NODES:
        dev = lab.node_run(node, "ip", "-d", "addr", "show", "tunl0")
        assert "ipip" in dev and ",UP" in dev, dev
        assert f"mtu {HOST_MTU - IPIP_OVERHEAD}" in dev, dev  # ipipMTU 0 = auto: host MTU - 20
        assert len(re.findall(r"inet 10\.244\.\d+\.\d+/32", dev)) == 1, dev  # the IPIP tunnel address only


def test_pod_mtu_leaves_room_for_the_ipip_header(lab: IpipLab) -> None:
    """Every pod's eth0 has the agent's MTU file value (what the CNI handler reads): host - 20."""
    for pod in lab.status["pods"]:
        argv = ["ip", "netns", "exec", pod["netns"], "ip", "link", "show", "eth0"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=t(20), check=True).stdout
        assert f"mtu {HOST_MTU - IPIP_OVERHEAD}" in out, (pod["name"], out)


def test_network_policy_applies_to_traffic_arriving_over_tunl0(lab: IpipLab) -> None:
    since = time.monotonic()
    # only app=p1 may reach p0, not p2: both come from node2 through tunl0 (their pod addresses inside)
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "only-p1", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "p0"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "p1"}}}]}]},
    }
    path = Path(tempfile.mkdtemp(prefix="fpt-ipip-")) / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    lab.cli.ok("ctl", "--", "apply", "-f", str(path), timeout=t(60))

    def enforced() -> bool:
        m = lab.matrix()
        return m["x/p2"]["x/p0"] is False and m["x/p1"]["x/p0"] is True

    assert wait_for(enforced, t(60), every=1), lab.matrix()
    phase("NetworkPolicy enforced over tunl0", since)
    m = lab.matrix()
    assert m["x/p0"]["x/p2"] and m["x/p2"]["x/p1"], m  # the rest untouched
    lab.cli.ok("ctl", "--", "delete", "-f", str(path), timeout=t(60))
    assert wait_for(lambda: lab.matrix()["x/p2"]["x/p0"] is True, t(60), every=1), lab.matrix()
    phase("NetworkPolicy deleted, p2 -> p0 back", since)


def test_down_leaves_nothing(lab: IpipLab) -> None:
    since = time.monotonic()
    down = lab.cli.down()
    assert down.returncode == 0, down.stdout + down.stderr
    phase("down", since)
    phase("whole module", lab.started)
    assert leftovers(lab.cli.names).empty()
    assert root_snapshot() == lab.before
