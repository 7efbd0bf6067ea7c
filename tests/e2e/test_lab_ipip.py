"""IPIP lab on a kernel with ``ipip``: an ``Always`` pool, and policy over tunl0 (``CrossSubnet``:
test_lab_wireguard.py's first phase, one lab less in the VM stage).

These run in the VM stage (``scripts/vm-tests.sh``, marker ``vm``), where the kernel has the
module and ``FELIXPY_REQUIRE_KERNEL_FEATURES=ipip`` makes a missing module a failure. On a host
without ``ipip`` they skip with the probe's reason. Timeouts scale with ``FELIXPY_TIME_SCALE``
(the VM runs under TCG, ~30x slower than the host).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from felixpy.lab.down import leftovers
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot
from tests.fixtures.kernel_features import require_kernel

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.timeout(1500)]
SCALE = float(os.environ.get("FELIXPY_TIME_SCALE", "1"))
NODES = ["node1", "node2", "node3"]
HOST_MTU = 1500
IPIP_OVERHEAD = 20


def t(seconds: float) -> float:
    return seconds * SCALE


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    require_kernel("ipip")
    if os.environ.get("FELIXPY_VM_LABS") != "1":
        reason = ("lab not yet shown green in the VM stage (issue 18: it outlasted the stage under load); "
                  "FELIXPY_VM_LABS=1 runs it")
        print(f"skipping: {reason}")
        pytest.skip(reason)


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def node_run(lab: LabCLI, node: str, *argv: str) -> str:
    return lab.ok("exec", node, "--", *argv, timeout=t(20))


def matrix(lab: LabCLI) -> dict[str, dict[str, bool]]:
    out = lab.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json", timeout=t(60))
    return json.loads(out)["tables"]["80/tcp"]  # type: ignore[no-any-return]


def all_connected(lab: LabCLI, timeout: float) -> dict[str, dict[str, bool]]:
    """Probed until every pair connects or ``timeout`` passes (blocks reach peers after pod add)."""
    table = matrix(lab)
    deadline = time.monotonic() + timeout
    while not all(all(r.values()) for r in table.values()) and time.monotonic() < deadline:
        time.sleep(1)
        table = matrix(lab)
    return table


def up_with_pods(lab: LabCLI, *extra: str) -> dict[str, str]:
    """3 nodes in 2 racks, IPIP pool, one pod serving 80 on each node; returns pod -> node."""
    lab.ok("up", "--nodes", "3", "--racks", "2", "--encap", "ipip", *extra, "--timeout", str(int(t(60))),
           timeout=t(300))
    for i, node in enumerate(NODES):
        lab.ok("pod", "add", f"x/p{i}", "--node", node, "--labels", f"app=p{i}", "--serve", "80",
               timeout=t(60))
    return {f"x/p{i}": node for i, node in enumerate(NODES)}


def remote_blocks(lab: LabCLI, node: str) -> dict[str, str]:
    """Block -> its route line on ``node``, for the pods on the other nodes."""
    routes = node_run(lab, node, "ip", "route")
    out = {}
    for pod in lab.status()["pods"]:
        if pod["node"] == node:
            continue
        for line in routes.splitlines():
            net = line.split()[0]
            if "/" in net and _contains(net, pod["ip"]):
                out[net] = line
    return out


def _contains(cidr: str, ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def assert_tunl0_as_calico(lab: LabCLI, node: str) -> None:
    dev = node_run(lab, node, "ip", "-d", "addr", "show", "tunl0")
    assert "ipip" in dev and ",UP" in dev, dev
    assert f"mtu {HOST_MTU - IPIP_OVERHEAD}" in dev, dev  # ipipMTU 0 = auto: host MTU - 20
    assert re.search(r"inet 10\.244\.\d+\.\d+/32", dev), dev  # the IPIP tunnel address


def assert_pod_mtu(lab: LabCLI) -> None:
    """Every pod's eth0 leaves room for the IPIP header (the agent's MTU file, read by the CNI)."""
    for pod in lab.status()["pods"]:
        argv = ["ip", "netns", "exec", pod["netns"], "ip", "link", "show", "eth0"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=t(20), check=True).stdout
        assert f"mtu {HOST_MTU - IPIP_OVERHEAD}" in out, (pod["name"], out)


def test_ipip_always_every_remote_block_over_tunl0_and_policy_applies() -> None:
    before = root_snapshot()
    with LabCLI.unique("ipa", timeout=t(240)) as lab:
        up_with_pods(lab)
        table = all_connected(lab, t(60))
        assert all(all(r.values()) for r in table.values()), table
        for node in NODES:
            assert_tunl0_as_calico(lab, node)
            blocks = remote_blocks(lab, node)
            assert blocks, node_run(lab, node, "ip", "route")
            for net, line in blocks.items():  # Always: same rack too
                assert re.search(r"via 10\.99\.\d+\.\d+ dev tunl0 .*onlink", line), (net, line)
        assert_pod_mtu(lab)
        # NetworkPolicy over IPIP: only app=p1 may reach p0; p2 (other rack, through tunl0) may not
        policy = {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "only-p1", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "p0"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "p1"}}}]}]},
        }
        path = Path(tempfile.mkdtemp(prefix="fpt-ipip-")) / "policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        lab.ok("ctl", "--", "apply", "-f", str(path), timeout=t(60))

        def enforced() -> bool:
            m = matrix(lab)
            return m["x/p2"]["x/p0"] is False and m["x/p1"]["x/p0"] is True

        assert wait_for(enforced, t(60)), matrix(lab)
        m = matrix(lab)
        assert m["x/p0"]["x/p2"] and m["x/p2"]["x/p1"], m  # the rest untouched
        lab.ok("ctl", "--", "delete", "-f", str(path), timeout=t(60))
        assert wait_for(lambda: matrix(lab)["x/p2"]["x/p0"] is True, t(60)), matrix(lab)
    down = lab.down()
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(lab.names).empty()
    assert root_snapshot() == before
