"""A 3-node lab (2 racks, IPIP CrossSubnet) with WireGuard turned on, a key rotated, and off.

One lab for the whole module (a module fixture; each lab costs minutes in the VM stage,
``scripts/vm-tests.sh``). The tests run in file order on it, each a phase:

1. IPIP CrossSubnet: pods everywhere connected, cross-rack blocks via tunl0 onlink, same-rack
   direct on eth0, tunl0's MTU host - 20 (``ipipMTU`` 0).
2. ``wireguardEnabled: true`` and ``ipipMTU: 1440`` (FelixConfiguration ``default``; the agents
   restart in place): every Node publishes a key, peers and the rule are programmed, tunl0 takes
   the configured MTU, pods connected.
3. tcpdump in the fabric namespace sees only UDP to 51820 between nodes: no pod address, no
   payload in clear.
4. A node's device is deleted (it comes back without a key): a new key pair, published, peers
   reprogrammed, connectivity back (the time is printed).
5. ``wireguardEnabled: false``: a ping flow across nodes runs throughout and loses at most a
   second's worth of its packets; keys cleared, rules and devices gone, pods connected.
6. ``down`` leaves nothing.

Waits scale with ``FELIXPY_TIME_SCALE`` (TCG is ~30x slower); each phase prints its time.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.lab.agents import METRICS_PORT
from felixpy.lab.down import leftovers
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot
from tests.fixtures import waiting
from tests.fixtures.kernel_features import require_kernel

SCALE = float(os.environ.get("FELIXPY_TIME_SCALE", "1"))
# setup (lab up + 3 pods) is charged to the first test: ~4 s on a host, 5-20 min under TCG on a
# loaded machine (the VM stage's own bound, VM_STAGE_TIMEOUT, is the one that holds CI's time)
pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.timeout(max(600, 240 * SCALE))]
NODES = ["node1", "node2", "node3"]
MARKER = "FELIXPY-CLEARTXT"  # 16 bytes: ping -p pattern
FLOW_INTERVAL = 0.1  # s between the running flow's pings
IPIP_MTU = 1440  # configured with WireGuard on (phase 2); auto before: 1500 - 20
NODES_PREFIX = "/calico/resources/v3/projectcalico.org/nodes/"  # felixpy.datastore.resources' layout
LOG_DIR = os.environ.get("FELIXPY_LAB_LOG_DIR")  # the VM stage: the agents' logs kept here (host side)


def t(seconds: float) -> float:
    return seconds * SCALE


def phase(what: str, since: float) -> None:
    print(f"\n[lab-timing] wireguard: {what}: {time.monotonic() - since:.1f}s", flush=True)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    return waiting.eventually(predicate, timeout, every)


def in_ns(netns: str, *argv: str, timeout: float = 30) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=t(timeout), check=False).stdout


@dataclass
class WgLab:
    cli: LabCLI
    before: set[str]
    started: float
    node_ns: dict[str, str] = field(default_factory=dict)
    addr: dict[str, str] = field(default_factory=dict)
    rack: dict[str, int] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> its pod
    etcd_host: str = ""
    etcd_endpoint: str = ""
    published: dict[str, str | None] = field(default_factory=dict)

    def matrix(self) -> dict[str, dict[str, bool]]:
        out = self.cli.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json", timeout=t(60))
        return json.loads(out)["tables"]["80/tcp"]  # type: ignore[no-any-return]

    def connected(self) -> bool:
        return all(all(row.values()) for row in self.matrix().values())

    def keys(self) -> dict[str, str | None]:
        """Every Node's ``status.wireguardPublicKey``, read from etcd with etcdctl (a Go binary) in the
        etcd namespace. ``felixctl get nodes`` gave the same through two Python start-ups (felixpy-lab,
        then felixctl), 100-240 s per call under the VM's TCG: the waits below went to start-ups."""
        argv = ["etcdctl", "--endpoints", self.etcd_endpoint, "--dial-timeout", "5s", "--command-timeout",
                f"{t(6):.0f}s", "get", "--prefix", "--print-value-only", NODES_PREFIX]
        out = in_ns(self.cli.names.etcd, *argv, timeout=60)
        nodes = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        return {n["metadata"]["name"]: (n.get("status") or {}).get("wireguardPublicKey") for n in nodes}

    def apply(self, doc: dict) -> None:
        path = Path(tempfile.mkdtemp(prefix="fpt-wg-")) / "doc.yaml"
        path.write_text(yaml.safe_dump(doc))
        self.cli.ok("ctl", "--", "apply", "-f", str(path), timeout=t(60))

    def peers(self, node: str) -> list[str]:
        return in_ns(self.node_ns[node], "wg", "show", "wireguard.cali", "peers").split()


def felix_config(enabled: bool) -> dict:
    # routeRefreshInterval 5s: the drift repair that recreates a deleted device comes round quickly
    return {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"wireguardEnabled": enabled, "routeRefreshInterval": "5s", "ipipMTU": IPIP_MTU}}


def agent_logs(cli: LabCLI, lines: int = 25) -> str:
    """The last lines of every agent's log (the lab's run dir; inside the VM only the console is kept)."""
    out = []
    for log in sorted(cli.names.run_dir.glob("*/agent.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log}\n" + "\n".join(tail))
    return "\n".join(out)


def keep_logs(cli: LabCLI, why: str) -> None:
    """Copies the lab's agent logs (and its other run files) to ``FELIXPY_LAB_LOG_DIR`` when set: inside
    the VM the lab's run dir is on the guest's own /run and is gone with it; the VM stage points this at
    the checkout's ``.vm/`` (an --rwdir), so the logs reach the host even when the stage is cut."""
    if not LOG_DIR or not cli.names.run_dir.is_dir():
        return
    dest = Path(LOG_DIR) / cli.name
    for src in cli.names.run_dir.rglob("*.log"):
        target = dest / src.relative_to(cli.names.run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    (dest / "KEPT").write_text(f"{time.strftime('%H:%M:%S')} {why}\n")
    print(f"[lab-logs] agent logs kept in {dest} ({why})", flush=True)


@pytest.fixture(autouse=True)
def _keep_logs_after_each_test(request: pytest.FixtureRequest, lab: WgLab) -> Iterator[None]:
    yield
    keep_logs(lab.cli, f"after {request.node.name}")


@pytest.fixture(scope="module")
def lab() -> Iterator[WgLab]:
    reason = missing_prerequisites("tcpdump", "wg", "ping")
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    require_kernel("ipip", "wireguard")
    started = time.monotonic()
    env = WgLab(LabCLI.unique("wg", timeout=t(240)), root_snapshot(), started)
    try:
        # --no-bfd: BFD's 300 ms x 3 detection expires again and again under the VM's TCG (session 7's
        # run 1: 57 BFD failures per peer in 10 min), and each failure takes the peer's routes out and
        # flap damping then holds them back 320 s more, so cross-node pod routes never stayed up ("pods
        # not connected" before WireGuard was on). This lab shows WireGuard and IPIP, not BFD
        # (tests/e2e/test_lab_bfd.py does); sessions here rely on BGP's hold timer.
        env.cli.ok("up", "--nodes", "3", "--racks", "2", "--encap", "ipip", "--cross-subnet", "--no-bfd",
                   "--timeout", "150", timeout=t(400))
        phase("lab up (3 nodes, 2 racks, IPIP CrossSubnet)", started)
        for i, node in enumerate(NODES):
            env.cli.ok("pod", "add", f"x/p{i}", "--node", node, "--serve", "80", timeout=t(60))
        status = env.cli.status()
        env.node_ns = {n["name"]: n["netns"] for n in status["nodes"]}
        env.addr = {n["name"]: n["address"] for n in status["nodes"]}
        env.rack = {n["name"]: n["rack"] for n in status["nodes"]}
        env.pods = {p["node"]: p for p in status["pods"]}
        env.etcd_endpoint = status["datastore"]["endpoints"][0]
        env.etcd_host = env.etcd_endpoint.split("//")[-1].rsplit(":", 1)[0]
        phase("lab up + 3 pods", started)
    except BaseException as exc:
        took = time.monotonic() - started
        print(f"\n[lab-timing] wireguard: setup failed after {took:.1f}s: {exc}", flush=True)
        print(agent_logs(env.cli), flush=True)
        keep_logs(env.cli, "setup failed")
        env.cli.down()
        raise
    try:
        yield env
    finally:
        env.cli.down()  # again after test_down_leaves_nothing: a no-op then


def test_1_crosssubnet_cross_rack_via_tunl0_onlink_same_rack_direct(lab: WgLab) -> None:
    since = time.monotonic()
    assert wait_for(lab.connected, t(60), every=1), lab.matrix()
    phase("IPIP CrossSubnet: every pod reaches every pod", since)
    assert len(set(lab.rack.values())) == 2
    for src in NODES:
        routes = in_ns(lab.node_ns[src], "ip", "route")
        for dst in NODES:
            if dst == src:
                continue
            pod_ip = ipaddress.ip_address(lab.pods[dst]["ip"])
            line = next(r for r in routes.splitlines()
                        if "/" in r.split()[0] and pod_ip in ipaddress.ip_network(r.split()[0]))
            dev = "eth0" if lab.rack[dst] == lab.rack[src] else "tunl0"
            assert re.search(rf"via {re.escape(lab.addr[dst])} dev {dev}\b", line), (src, dst, line)
            assert ("onlink" in line) == (dev == "tunl0"), (src, dst, line)
        assert "mtu 1480" in in_ns(lab.node_ns[src], "ip", "link", "show", "tunl0")  # ipipMTU 0: 1500 - 20


def test_2_wireguard_on_keys_published_peers_programmed_pods_connected(lab: WgLab) -> None:
    since = time.monotonic()
    lab.apply(felix_config(True))
    assert wait_for(lambda: all(lab.keys().get(n) for n in NODES), t(120), every=2), lab.keys()
    phase("WireGuard on: every Node published its key", since)
    lab.published = lab.keys()
    assert len({lab.published[n] for n in NODES}) == 3
    assert wait_for(lambda: all(len(lab.peers(n)) == 2 for n in NODES), t(60), every=2), \
        {n: lab.peers(n) for n in NODES}
    for node in NODES:
        dump = in_ns(lab.node_ns[node], "wg", "show", "wireguard.cali", "dump").splitlines()
        assert dump and dump[0].split("\t")[1] == lab.published[node], dump
        assert dump[0].split("\t")[2] == "51820", dump[0]
        assert "not from all fwmark 0x200000/0x200000 lookup 1" in in_ns(lab.node_ns[node], "ip", "rule")
        assert "mtu 1440" in in_ns(lab.node_ns[node], "ip", "link", "show", "wireguard.cali")  # 1500 - 60
        # the configured ipipMTU, applied with the same FelixConfiguration
        assert f"mtu {IPIP_MTU}" in in_ns(lab.node_ns[node], "ip", "link", "show", "tunl0")
    assert wait_for(lab.connected, t(60), every=1), lab.matrix()
    phase("WireGuard on: peers programmed, every pod reaches every pod", since)


def capture(netns: str, action: Callable[[], None], etcd_host: str) -> str:
    """tcpdump -A on every interface of ``netns`` while ``action`` runs: node-to-node control traffic
    left out (BGP, BFD single-hop 3784 and multi-hop 4784 between node addresses: host traffic, which
    Calico's WireGuard does not encrypt either without host encryption), and etcd."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-i", "any", "-A",
            f"ip and not tcp port 179 and not udp port 3784 and not udp port 4784 and not host {etcd_host}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], t(10))  # "listening on any, ..." once capturing
        assert ready, "tcpdump did not start capturing"
        proc.stderr.readline()
        action()
        time.sleep(1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=t(30))
    return out


def test_3_between_nodes_only_udp_to_51820_no_cleartext(lab: WgLab) -> None:
    since = time.monotonic()

    def send() -> None:
        for src in ("node1", "node2"):
            for dst in NODES:
                if dst != src:
                    in_ns(lab.pods[src]["netns"], "ping", "-c", "2", "-W", "3", "-p", MARKER.encode().hex(),
                          lab.pods[dst]["ip"])
        lab.matrix()

    dump = capture(lab.cli.names.fabric, send, lab.etcd_host)
    packets = [line for line in dump.splitlines() if re.match(r"^\d\d:\d\d:\d\d\.\d+ ", line)]
    # printed at once (pytest prints failures only at the end, which a timed-out VM stage never reaches)
    other = [p for p in packets if ".51820: UDP" not in p]
    print(f"\n[lab-capture] {len(packets)} packets in the fabric, {len(other)} not UDP to 51820:\n"
          + "\n".join(other[:20]), flush=True)
    assert any(".51820: UDP" in p for p in packets), dump[-3000:]
    pod_ips = [p["ip"] for p in lab.pods.values()]
    for p in packets:
        # no pod address on the wire: everything between nodes is encrypted
        assert not any(re.search(rf"\b{re.escape(ip)}\b", p) for ip in pod_ips), p
        assert ".51820: UDP" in p, p
    assert MARKER not in dump
    phase(f"capture: {len(packets)} packets in the fabric, all UDP to 51820", since)


def test_3b_calicos_wireguard_metrics_per_peer(lab: WgLab) -> None:
    """node1's /metrics: wireguard_meta with its published key; bytes and a handshake per peer."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    text = in_ns(lab.node_ns["node1"], sys.executable, "-c",
                 f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())")
    meta = [line for line in text.splitlines() if line.startswith("wireguard_meta{")]
    assert len(meta) == 1 and f'public_key="{lab.published["node1"]}"' in meta[0], text[-3000:]
    assert 'iface="wireguard.cali"' in meta[0] and 'listen_port="51820"' in meta[0], meta
    for family in ("wireguard_bytes_rcvd", "wireguard_bytes_sent", "wireguard_latest_handshake_seconds"):
        values = {re.search(r'peer_key="([^"]+)"', line).group(1): float(line.rsplit(" ", 1)[1])  # type: ignore[union-attr]
                  for line in text.splitlines() if line.startswith(family + "{")}
        assert set(values) == {lab.published["node2"], lab.published["node3"]}, (family, values)
        assert all(v > 0 for v in values.values()), (family, values)  # test 3's pings went to both


def test_4_a_node_key_rotated_connectivity_back(lab: WgLab) -> None:
    old = lab.published["node2"]
    assert old, lab.published
    in_ns(lab.node_ns["node2"], "ip", "link", "del", "wireguard.cali")
    rotated = time.monotonic()
    assert wait_for(lambda: lab.keys()["node2"] not in (None, old), t(60), every=1), lab.keys()
    new = lab.keys()["node2"]
    assert wait_for(lambda: new in lab.peers("node1") and new in lab.peers("node3"), t(30), every=1)
    assert wait_for(lab.connected, t(30), every=1), lab.matrix()
    phase("key rotation: connectivity back after node2's device was lost", rotated)


def test_5_wireguard_off_plain_routing_running_flow_loses_under_a_second(lab: WgLab) -> None:
    since = time.monotonic()
    flow = subprocess.Popen(
        ["ip", "netns", "exec", lab.pods["node1"]["netns"], "ping", "-D", "-i", str(FLOW_INTERVAL),
         lab.pods["node3"]["ip"]],  # node1 -> node3: the other rack
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(t(0.5) + 2)
        lab.apply(felix_config(False))
        assert wait_for(lambda: not any(lab.keys().values()), t(120), every=2), lab.keys()
        gone = lambda: all("wireguard.cali" not in in_ns(lab.node_ns[n], "ip", "link") for n in NODES)  # noqa: E731
        assert wait_for(gone, t(150), every=2)
        time.sleep(2)
    finally:
        flow.send_signal(signal.SIGINT)
        out, _ = flow.communicate(timeout=t(30))
    replies = [(int(s), float(ts)) for ts, s in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)",
                                                        out, re.M)]
    assert len(replies) > 20, out[-2000:]
    # Lost packets are counted on the flow's own clock (its sequence numbers), not the wall clock: under
    # the VM's TCG the whole guest stalls now and then, sender included, which is not a dropped flow.
    sent = re.search(r"^(\d+) packets transmitted", out, re.M)
    assert sent, out[-2000:]
    lost_run = max([b[0] - a[0] - 1 for a, b in itertools.pairwise(replies)]
                   + [replies[0][0] - 1, int(sent.group(1)) - replies[-1][0]])  # lost at the start or end too
    wall_gap = max(b[1] - a[1] for a, b in itertools.pairwise(replies))
    print(f"\n[lab-timing] wireguard off: {len(replies)} replies, longest run of lost pings {lost_run} "
          f"({lost_run * FLOW_INTERVAL:.1f}s of the flow), longest wall-clock gap {wall_gap:.2f}s",
          flush=True)
    assert lost_run * FLOW_INTERVAL <= 1.0, out[-3000:]
    for node in NODES:
        assert "lookup 1" not in in_ns(lab.node_ns[node], "ip", "rule")
    assert wait_for(lab.connected, t(30), every=1), lab.matrix()
    phase("WireGuard off: keys cleared, devices gone, plain routing", since)


def test_6_down_leaves_nothing(lab: WgLab) -> None:
    since = time.monotonic()
    down = lab.cli.down()
    assert down.returncode == 0, down.stdout + down.stderr
    phase("down", since)
    phase("whole module", lab.started)
    assert leftovers(lab.cli.names).empty()
    assert root_snapshot() == lab.before
