"""NAT outgoing on the real kernel: with `natOutgoing: true` a pod reaches an address outside every pool
as its node (MASQUERADE in `cali-nat-outgoing`), while traffic between pool addresses keeps the pod's
own source address. Driven through the lab: real agents, real CNI, real felixctl."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from felixpy.lab.testing import LabCLI, missing_prerequisites

pytestmark = pytest.mark.e2e

# Answers each connection with the address it came from; bounded in connections and lifetime.
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
s.settimeout(60)
for _ in range(20):
    try:
        c, peer = s.accept()
    except TimeoutError:
        break
    c.sendall(peer[0].encode()); c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as c:
        print(c.recv(64).decode())
except OSError as e:
    print("unreachable")
"""
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: default-ipv4-ippool}}
spec: {{cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: {nat}, nodeSelector: all()}}
"""


def seen_source(lab: LabCLI, pod: str, host: str, port: int) -> str:
    return lab.ok("exec", pod, "--", sys.executable, "-c", CLIENT, host, str(port), timeout=30).strip()


def set_nat(lab: LabCLI, nat: bool) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(POOL.format(nat=str(nat).lower()))
    try:
        lab.ok("ctl", "--", "apply", "-f", f.name)
    finally:
        Path(f.name).unlink()


def listening(netns: str, port: int) -> bool:
    argv = ["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"]
    return f":{port}" in subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_nat_outgoing_masquerades_only_traffic_leaving_the_pools() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    with LabCLI.unique("nat") as lab:
        lab.ok("up", "--nodes", "1")
        for pod in ("x/a", "x/b"):
            lab.ok("pod", "add", pod, "--node", "node1")
        status = lab.status()
        node_ip = status["nodes"][0]["address"].split("/")[0]
        ips = {f"{p['namespace']}/{p['name']}": p["ip"] for p in status["pods"]}
        gateway = node_ip.rsplit(".", 1)[0] + ".1"  # the fabric's address on the node's segment: no pool
        fabric = subprocess.Popen(["ip", "netns", "exec", lab.names.fabric, sys.executable, "-c", SERVER,
                                   gateway, "7000"])
        pod_server = subprocess.Popen(["ip", "netns", "exec", lab.names.pod("x", "b"), sys.executable, "-c",
                                       SERVER, ips["x/b"], "7001"])
        try:
            # both servers listening first, so "unreachable" below can only mean the missing route back
            assert wait_for(lambda: listening(lab.names.fabric, 7000), 20), "the outside server listens"
            assert wait_for(lambda: listening(lab.names.pod("x", "b"), 7001), 20), "the pod's server listens"
            # No NAT: the outside host sees the pod's address and has no route back to the pool.
            assert seen_source(lab, "x/a", gateway, 7000) == "unreachable"
            set_nat(lab, True)
            assert wait_for(lambda: seen_source(lab, "x/a", gateway, 7000) == node_ip, 20), \
                "with natOutgoing the outside host sees the node's address"
            # Pool to pool is never masqueraded.
            assert seen_source(lab, "x/a", ips["x/b"], 7001) == ips["x/a"]
            set_nat(lab, False)
            assert wait_for(lambda: seen_source(lab, "x/a", gateway, 7000) == "unreachable", 20)
        finally:
            for proc in (fabric, pod_server):
                proc.kill()
                proc.wait(10)
        print(json.dumps({"node": node_ip, "pods": ips}))
