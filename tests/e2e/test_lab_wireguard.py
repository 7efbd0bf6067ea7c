"""A 3-node lab (2 racks, IPIP CrossSubnet) with WireGuard turned on, off, and a key rotated.

One lab, in phases, because each lab costs minutes in the VM stage (``scripts/vm-tests.sh``):

1. IPIP CrossSubnet: pods everywhere connected, cross-rack blocks via tunl0 onlink, same-rack direct.
2. ``wireguardEnabled: true`` (FelixConfiguration ``default``; the agents restart in place): every
   Node publishes a key, pods connected, and tcpdump in the fabric namespace sees only UDP to
   51820 between nodes: no pod address, no payload in clear.
3. A node's device is deleted (it comes back without a key): a new key pair, published, peers
   reprogrammed, connectivity back within seconds.
4. ``wireguardEnabled: false``: a ping flow across nodes runs throughout and never misses replies
   for longer than a second; keys cleared, rules and devices gone.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import signal
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

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.timeout(2400)]
SCALE = float(os.environ.get("FELIXPY_TIME_SCALE", "1"))
NODES = ["node1", "node2", "node3"]
MARKER = "FELIXPY-CLEARTXT"  # 16 bytes: ping -p pattern


def t(seconds: float) -> float:
    return seconds * SCALE


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    require_kernel("ipip", "wireguard")
    if os.environ.get("FELIXPY_VM_LABS") != "1":
        reason = ("lab not yet shown green in the VM stage (issue 18: it outlasted the stage under load); "
                  "FELIXPY_VM_LABS=1 runs it")
        print(f"skipping: {reason}")
        pytest.skip(reason)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def in_ns(netns: str, *argv: str, timeout: float = 30) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False).stdout


def matrix(lab: LabCLI) -> dict[str, dict[str, bool]]:
    out = lab.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json", timeout=t(60))
    return json.loads(out)["tables"]["80/tcp"]  # type: ignore[no-any-return]


def connected(lab: LabCLI) -> bool:
    return all(all(row.values()) for row in matrix(lab).values())


def keys(lab: LabCLI) -> dict[str, str | None]:
    doc = json.loads(lab.ok("ctl", "--", "get", "nodes", "-o", "json", timeout=t(60)))
    items = doc.get("items", []) if isinstance(doc, dict) else doc
    return {n["metadata"]["name"]: (n.get("status") or {}).get("wireguardPublicKey") for n in items}


def apply(lab: LabCLI, doc: dict) -> None:
    path = Path(tempfile.mkdtemp(prefix="fpt-wg-")) / "doc.yaml"
    path.write_text(yaml.safe_dump(doc))
    lab.ok("ctl", "--", "apply", "-f", str(path), timeout=t(60))


def felix_config(enabled: bool) -> dict:
    # routeRefreshInterval 5s: the drift repair that recreates a deleted device comes round quickly
    return {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"wireguardEnabled": enabled, "routeRefreshInterval": "5s"}}


def capture(netns: str, action: Callable[[], None], etcd_host: str) -> str:
    """tcpdump -A on every interface of ``netns`` while ``action`` runs (BGP and etcd left out)."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-i", "any", "-A",
            f"ip and not tcp port 179 and not host {etcd_host}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(t(0.5) + 1)
        action()
        time.sleep(1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=t(30))
    return out


def test_ipip_crosssubnet_then_wireguard_on_rotate_off() -> None:
    before = root_snapshot()
    with LabCLI.unique("wg", timeout=t(240)) as lab:
        lab.ok("up", "--nodes", "3", "--racks", "2", "--encap", "ipip", "--cross-subnet",
               "--timeout", str(int(t(60))), timeout=t(300))
        for i, node in enumerate(NODES):
            lab.ok("pod", "add", f"x/p{i}", "--node", node, "--serve", "80", timeout=t(60))
        status = lab.status()
        node_ns = {n["name"]: n["netns"] for n in status["nodes"]}
        addr = {n["name"]: n["address"] for n in status["nodes"]}
        rack = {n["name"]: n["rack"] for n in status["nodes"]}
        pods = {p["node"]: p for p in status["pods"]}

        # ---- 1. IPIP CrossSubnet --------------------------------------------------------
        assert wait_for(lambda: connected(lab), t(60)), matrix(lab)
        routes = in_ns(node_ns["node1"], "ip", "route")
        for node in ("node2", "node3"):
            line = next(r for r in routes.splitlines() if "/" in r.split()[0]
                        and ipaddress.ip_address(pods[node]["ip"]) in ipaddress.ip_network(r.split()[0]))
            dev = "eth0" if rack[node] == rack["node1"] else "tunl0"
            assert re.search(rf"via {re.escape(addr[node])} dev {dev}", line), line
            if dev == "tunl0":
                assert "onlink" in line, line
        assert "mtu 1480" in in_ns(node_ns["node1"], "ip", "link", "show", "tunl0")

        # ---- 2. WireGuard on --------------------------------------------------------------
        apply(lab, felix_config(True))
        assert wait_for(lambda: all(keys(lab).get(n) for n in NODES), t(120), every=2), keys(lab)
        published = keys(lab)
        assert len({published[n] for n in NODES}) == 3
        for node in NODES:
            dump = in_ns(node_ns[node], "wg", "show", "wireguard.cali", "dump").splitlines()
            assert dump and dump[0].split("\t")[1] == published[node], dump
            assert "not from all fwmark 0x200000/0x200000 lookup 1" in in_ns(node_ns[node], "ip", "rule")
            assert "mtu 1440" in in_ns(node_ns[node], "ip", "link", "show", "wireguard.cali")
        def peers(n: str) -> list[str]:
            return in_ns(node_ns[n], "wg", "show", "wireguard.cali", "peers").split()

        assert wait_for(lambda: all(len(peers(n)) == 2 for n in NODES), t(60), every=2)
        assert wait_for(lambda: connected(lab), t(60), every=1), matrix(lab)

        def send() -> None:
            for src in ("node1", "node2"):
                for dst in NODES:
                    if dst != src:
                        in_ns(pods[src]["netns"], "ping", "-c", "2", "-W", "3", "-p", MARKER.encode().hex(),
                              pods[dst]["ip"], timeout=t(30))
            matrix(lab)

        etcd_host = status["datastore"]["endpoints"][0].split("//")[-1].rsplit(":", 1)[0]
        dump = capture(lab.names.fabric, send, etcd_host)
        packets = [line for line in dump.splitlines() if re.match(r"^\d\d:\d\d:\d\d\.\d+ ", line)]
        assert any(".51820: UDP" in p for p in packets), dump[-3000:]
        pod_ips = [p["ip"] for p in pods.values()]
        for p in packets:
            assert not any(ip in p for ip in pod_ips), p  # no pod address on the wire: all encrypted
            assert ".51820: UDP" in p or ".51820 > " in p, p
        assert MARKER not in dump

        # ---- 3. node2's key rotated (its device lost, e.g. a reboot) ----------------------
        old = published["node2"]
        in_ns(node_ns["node2"], "ip", "link", "del", "wireguard.cali")
        rotated = time.monotonic()
        assert wait_for(lambda: keys(lab)["node2"] not in (None, old), t(60), every=1), keys(lab)
        new = keys(lab)["node2"]
        assert wait_for(lambda: new in in_ns(node_ns["node1"], "wg", "show", "wireguard.cali", "peers"),
                        t(30), every=1)
        assert wait_for(lambda: connected(lab), t(30), every=1), matrix(lab)
        print(f"key rotation: connectivity back {time.monotonic() - rotated:.1f}s after the device was lost")

        # ---- 4. WireGuard off, a flow running throughout ----------------------------------
        flow = subprocess.Popen(
            ["ip", "netns", "exec", pods["node1"]["netns"], "ping", "-D", "-i", "0.1", pods["node3"]["ip"]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(t(0.5) + 2)
            apply(lab, felix_config(False))
            assert wait_for(lambda: not any(keys(lab).values()), t(120), every=2), keys(lab)
            gone = lambda: all("wireguard.cali" not in in_ns(node_ns[n], "ip", "link") for n in NODES)  # noqa: E731
            assert wait_for(gone, t(150), every=2)
            time.sleep(2)
        finally:
            flow.send_signal(signal.SIGINT)
            out, _ = flow.communicate(timeout=30)
        stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        assert len(stamps) > 20, out[-2000:]
        gap = max(b - a for a, b in itertools.pairwise(stamps))
        print(f"WireGuard off: longest gap between replies of the running flow {gap:.2f}s")
        assert gap <= 1.0, out[-3000:]
        for node in NODES:
            assert "lookup 1" not in in_ns(node_ns[node], "ip", "rule")
        assert wait_for(lambda: connected(lab), t(30), every=1), matrix(lab)
    down = lab.down()
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(lab.names).empty()
    assert root_snapshot() == before
