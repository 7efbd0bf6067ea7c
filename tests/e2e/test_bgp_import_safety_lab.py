"""Issue 12 on a whole lab: a hostile BIRD 2 peer cannot take any pod, with pings running throughout.

Two nodes in a full mesh (real agents, ExaBGP, etcd, pods through the CNI); a BIRD 2 router in the
fabric namespace peers with both (eBGP, graceful restart on) through a global BGPPeer with
``maxPrefixes: 10000``, ``maxPrefixesAction: Disable``. BIRD then announces, one after another:
the /32s of node1's two pods; the whole pool and both its halves; node2's pod's /32 — none of it
reaches either node's kernel, each refusal is logged. An ordinary route is installed; graceful restart
is negotiated on both sessions and applies where it should (BIRD killed: no NOTIFICATION, the route is
kept stale until BIRD is back); it goes at once when BIRD closes the sessions with a Cease (no 120 s
of graceful restart). 20,000 routes past the limit: the sessions are closed, nothing of it stays.
Pings a→b (same node), a→c and c→a run from the first announcement to the last and every one is
answered; the fabric (BIRD's side) has no route to any pod, so a hostile route taken would lose them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from felixpy.lab.testing import LabCLI, missing_prerequisites

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BIRD_AS, BIRD_IP = 65001, "10.99.1.1"  # the fabric namespace's address on the nodes' segment
# a disabled pool: what BIRD announces there is accepted, and not passed on over the mesh (each node
# meets BIRD's limit on its own session; a node re-exporting 9,999 of them would fill its mesh peer's)
SPARE_POOL = "10.128.0.0/10"


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites() or (
        "bird2 is not installed" if shutil.which("bird") is None or shutil.which("birdc") is None else None
    )
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class HostileBird:
    """BIRD 2 in the lab's fabric namespace, peering with every node, announcing what it is told."""

    def __init__(self, lab: LabCLI, nodes: dict[str, str]) -> None:
        self.lab, self.nodes = lab, nodes
        self.dir = Path(tempfile.mkdtemp(prefix="hostile-bird-"))
        self.conf, self.sock = self.dir / "bird.conf", self.dir / "bird.ctl"
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self, statics: list[str]) -> str:
        routes = "".join(f"    route {p} blackhole;\n" for p in statics)
        sessions = "".join(
            f"protocol bgp {name} {{\n"
            f"    local {BIRD_IP} as {BIRD_AS};\n    neighbor {address} as 64512;\n"
            "    graceful restart on;\n    connect retry time 1;\n    error wait time 1, 5;\n"
            '    ipv4 { import none; export where proto = "hostile"; };\n}\n'
            for name, address in sorted(self.nodes.items())
        )
        return (
            f"router id {BIRD_IP};\nprotocol device {{ }}\n"
            f"protocol static hostile {{\n    ipv4;\n{routes}}}\n{sessions}"
        )

    def start(self, statics: list[str]) -> None:
        self.conf.write_text(self.render(statics))
        argv = [
            "ip",
            "netns",
            "exec",
            self.lab.names.fabric,
            "bird",
            "-f",
            "-c",
            str(self.conf),
            "-s",
            str(self.sock),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(
            lambda: self.sock.exists() and "BIRD" in self.birdc("show", "status"), "BIRD's control socket", 20
        )

    def announce(self, statics: list[str]) -> None:
        self.conf.write_text(self.render(statics))
        out = self.birdc("configure")
        assert "Reconfigured" in out or "Reconfiguration in progress" in out, out

    def birdc(self, *args: str) -> str:
        argv = ["ip", "netns", "exec", self.lab.names.fabric, "birdc", "-s", str(self.sock), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout

    def established(self) -> bool:
        table = self.birdc("show", "protocols")
        return all(re.search(rf"^{name}\s.*Established", table, re.M) for name in self.nodes)

    def kill(self) -> None:
        """SIGKILL: the sessions drop without a NOTIFICATION (what graceful restart is for)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def bgp_status(lab: LabCLI, node: str) -> dict[str, Any]:
    path = lab.names.node_dir(node) / "bgp-status.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return next((p for p in doc.get("peers", []) if p["address"] == BIRD_IP), {})


def received(lab: LabCLI, node: str) -> int:
    return int(bgp_status(lab, node).get("routes_received", -1))


def kernel(lab: LabCLI, node: str) -> str:
    return lab.ok("exec", node, "--", "ip", "route", "show", "proto", "81", timeout=30)


def route_get(lab: LabCLI, node: str, ip: str) -> str:
    return lab.ok("exec", node, "--", "ip", "route", "get", ip, timeout=30)


def agent_log(lab: LabCLI, node: str) -> str:
    return (lab.names.node_dir(node) / "agent.log").read_text(errors="replace")


def ping(lab: LabCLI, pod: str, ip: str) -> subprocess.Popen[str]:
    namespace, name = pod.split("/")
    argv = ["ip", "netns", "exec", lab.names.pod(namespace, name), "ping", "-n", "-i", "0.2", "-W", "1", ip]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def apply(lab: LabCLI, docs: list[dict[str, Any]]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("\n---\n".join(json.dumps(d) for d in docs))
    try:
        lab.ok("ctl", "--", "apply", "-f", f.name, timeout=60)
    finally:
        Path(f.name).unlink()


def refused_in_logs(lab: LabCLI, nodes: list[str], prefix: str) -> bool:
    return all(re.search(rf"refused.*{re.escape(prefix)}", agent_log(lab, n)) for n in nodes)


def spare_blocks(n: int) -> list[str]:
    base = int(ipaddress.ip_network(SPARE_POOL).network_address)
    return [f"{ipaddress.ip_address(base + i * 64)}/26" for i in range(n)]


def test_hostile_bird_peer_never_takes_a_pod_and_is_cut_off_past_its_limit() -> None:
    with LabCLI.unique("bgs") as lab:
        lab.ok("up", "--nodes", "2", "--timeout", "120", timeout=240)
        for pod, where in (("x/a", "node1"), ("x/b", "node1"), ("x/c", "node2")):
            lab.ok("pod", "add", pod, "--node", where, timeout=90)
        status = lab.status()
        ips = {f"{p['namespace']}/{p['name']}": p["ip"] for p in status["pods"]}
        nodes = {n["name"]: n["address"] for n in status["nodes"]}
        pool = str(ipaddress.ip_network(f"{ips['x/a']}/16", strict=False))
        apply(lab, [
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "spare"},
             "spec": {"cidr": SPARE_POOL, "disabled": True, "disableBGPExport": True, "ipipMode": "Never",
                      "vxlanMode": "Never"}},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "hostile"},
             "spec": {"peerIP": BIRD_IP, "asNumber": BIRD_AS, "maxPrefixes": 10000,
                      "maxPrefixesAction": "Disable"}},
        ])  # fmt: skip
        sessions = {"p_" + n: a for n, a in nodes.items()}
        bird = HostileBird(lab, sessions)
        pings: list[subprocess.Popen[str]] = []
        try:
            bird.start([])
            wait_for(bird.established, "both sessions with BIRD", 90)
            a_block = str(ipaddress.ip_network(f"{ips['x/a']}/26", strict=False))
            c_block = str(ipaddress.ip_network(f"{ips['x/c']}/26", strict=False))
            wait_for(lambda: a_block in kernel(lab, "node2"), "node1's block at node2")
            wait_for(lambda: c_block in kernel(lab, "node1"), "node2's block at node1")
            for pod in ("x/a", "x/b", "x/c"):  # where a hostile route would send the pings, they die
                fabric = subprocess.run(
                    ["ip", "netns", "exec", lab.names.fabric, "ip", "route", "get", ips[pod]],
                    capture_output=True, text=True, timeout=30, check=False,
                )  # fmt: skip
                assert fabric.returncode != 0 and "unreachable" in fabric.stderr, (pod, fabric)
            pings = [ping(lab, "x/a", ips["x/b"]), ping(lab, "x/a", ips["x/c"]), ping(lab, "x/c", ips["x/a"])]
            time.sleep(2)

            # 1. node1's pods' /32s (the issue's blackhole), 2. the whole pool and its halves,
            # 3. node2's pod's /32: each reaches both agents, none reaches a kernel
            scenarios = [
                ("local pods' /32s", [f"{ips['x/a']}/32", f"{ips['x/b']}/32"]),
                ("the whole pool", [pool, pool.replace("/16", "/17"), _upper_half(pool)]),
                ("a neighbour node's pod /32", [f"{ips['x/c']}/32"]),
            ]
            for what, statics in scenarios:
                bird.announce(statics)
                for node in nodes:
                    wait_for(has_received(lab, node, len(statics)), f"{what} at {node}")
                for node in nodes:
                    routes = kernel(lab, node)
                    for prefix in statics:
                        if not _covers_nothing_local(prefix, node, status):
                            assert not installed(routes, prefix), (what, node, prefix, routes)
                for pod in ("x/a", "x/b"):
                    assert "dev cali" in route_get(lab, "node1", ips[pod]), (what, pod)
                assert "dev cali" in route_get(lab, "node2", ips["x/c"]), what
                wait_for(refusal_logged(lab, list(nodes), statics[0]), f"{what} refusal logged", 20)
                print(f"{what}: refused by both nodes, pod routes intact")

            # 4. an ordinary route, then BIRD closes with a Cease: gone at once, not kept stale
            ordinary = spare_blocks(1)[0]
            bird.announce([ordinary])
            for node in nodes:
                wait_for(in_kernel(lab, node, f"{ordinary} via {BIRD_IP}"), f"{ordinary} at {node}")
            for node in nodes:  # graceful restart is on for these sessions: the Cease below is no no-op
                wait_for(gr_state(lab, node, "negotiated"), f"graceful restart negotiated at {node}", 30)
            # the control: BIRD killed (no NOTIFICATION) -> the route is kept stale, in the kernel
            bird.kill()
            for node in nodes:
                wait_for(gr_state(lab, node, "peer restarting"), f"{node} keeps BIRD's routes stale", 30)
                assert re.search(rf"bgp peer {re.escape(BIRD_IP)} down: keeping \d+ routes stale",
                                 agent_log(lab, node)), node  # fmt: skip
            for _ in range(6):
                for node in nodes:
                    assert f"{ordinary} via {BIRD_IP}" in kernel(lab, node), ("stale route kept", node)
                time.sleep(0.5)
            bird.start([ordinary])
            wait_for(bird.established, "sessions with the restarted BIRD", 90)
            for node in nodes:
                wait_for(gr_state(lab, node, "negotiated"), f"{node} done with BIRD's restart", 60)
                wait_for(in_kernel(lab, node, f"{ordinary} via {BIRD_IP}"), f"{ordinary} at {node} again")
            print("BIRD killed: its route kept stale on both nodes until it was back (graceful restart)")
            out = bird.birdc("disable", '"p_*"')  # BGP only: a Cease on each session, no withdrawals first
            assert out.count("disabled") == len(sessions), out
            took = max(
                wait_for(in_kernel(lab, node, ordinary, present=False), f"{ordinary} gone at {node}", 30)
                for node in nodes
            )
            print(f"after BIRD's Cease the route left both kernels within {took:.1f}s (restart time 120s)")
            assert all("no graceful restart after a NOTIFICATION" in agent_log(lab, n) for n in nodes)
            out = bird.birdc("enable", '"p_*"')
            assert out.count("enabled") == len(sessions), out
            wait_for(bird.established, "sessions with BIRD again", 90)

            # 5. 20,000 routes past the limit of 10,000: the sessions are closed and stay closed
            netns = {n["name"]: n["netns"] for n in status["nodes"]}
            peaks, done = dict.fromkeys(nodes, 0), threading.Event()
            sampler = threading.Thread(target=sample_peaks, args=(netns, peaks, done), daemon=True)
            sampler.start()  # how many of them were ever in a kernel, printed (the limit's figure)
            try:
                bird.announce(spare_blocks(20_000))
                for node in nodes:
                    wait_for(in_log(lab, node, "receive limit"), f"{node} cuts BIRD off", 240)
            finally:
                done.set()
                sampler.join(30)
            for node in nodes:
                took = wait_for(in_kernel(lab, node, "10.128.", present=False), f"none of them at {node}", 30)
                print(f"{node}: the limit's routes left the kernel {took:.1f}s after the cut-off was logged")
                # the status file is written after the kernel (same batch): wait for it, then it must stay
                wait_for(lambda n=node: bgp_status(lab, n).get("info", "") != "Established",
                         f"{node} reports BIRD's session closed", 30)  # fmt: skip
            for _ in range(10):  # Disable: closed until the BGPPeer changes, whatever BIRD retries
                for node in nodes:
                    assert bgp_status(lab, node).get("info", "") != "Established", bgp_status(lab, node)
                    assert "10.128." not in kernel(lab, node), node
                time.sleep(0.5)
            print("20,000 routes past the limit: both sessions closed (Disable), none of them installed")
            print(f"most of them in a kernel at one sample before the cut-off (limit 10,000): {peaks}")
            assert all(0 <= peak <= 10_000 for peak in peaks.values()), peaks
        except AssertionError:
            for node in nodes:  # what the agents said about BIRD's session, for the failure report
                lines = [
                    ln
                    for ln in agent_log(lab, node).splitlines()
                    if BIRD_IP in ln or "stale" in ln or "exabgp" in ln
                ]
                print(f"--- {node} agent log about {BIRD_IP}:\n" + "\n".join(lines[-60:]))
            raise
        finally:
            outputs = []
            for proc in pings:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                try:
                    outputs.append(proc.communicate(timeout=20)[0])
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outputs.append(proc.communicate()[0])
            bird.stop()
        for out in outputs:
            summary = re.search(r"(\d+) packets transmitted, (\d+) received", out)
            assert summary, out
            sent, got = map(int, summary.groups())
            print("ping:", out.strip().splitlines()[-2])
            # pings ran through every step (the steps take 10-40 s, load-dependent), none lost but the one
            # in flight at the interrupt
            assert sent >= 20 and got >= sent - 1, out


def _upper_half(pool: str) -> str:
    net = ipaddress.ip_network(pool)
    return str(list(net.subnets(prefixlen_diff=1))[1])


def in_kernel(lab: LabCLI, node: str, text: str, *, present: bool = True) -> Callable[[], bool]:
    return lambda: (text in kernel(lab, node)) == present


def sample_peaks(netns: dict[str, str], peaks: dict[str, int], done: threading.Event) -> None:
    """The largest number of the spare pool's routes seen in each node's kernel, until ``done``
    (bounded by the caller's wait)."""
    while not done.is_set():
        for node, ns in netns.items():
            out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "route", "show", "proto", "81"],
                                 capture_output=True, text=True, timeout=30, check=False).stdout  # fmt: skip
            peaks[node] = max(peaks[node], sum(line.startswith("10.128.") for line in out.splitlines()))
        done.wait(0.2)


def gr_state(lab: LabCLI, node: str, state: str) -> Callable[[], bool]:
    """Whether the node's status says this of graceful restart with BIRD (``negotiated: ...`` or
    ``peer restarting: ...``, as ``felixctl node status --detail`` prints it)."""
    return lambda: str(bgp_status(lab, node).get("graceful_restart", "")).startswith(state)


def has_received(lab: LabCLI, node: str, count: int) -> Callable[[], bool]:
    return lambda: received(lab, node) == count


def refusal_logged(lab: LabCLI, nodes: list[str], prefix: str) -> Callable[[], bool]:
    return lambda: refused_in_logs(lab, nodes, prefix)


def in_log(lab: LabCLI, node: str, text: str) -> Callable[[], bool]:
    return lambda: text in agent_log(lab, node)


def installed(routes: str, prefix: str) -> bool:
    """Whether ``ip route show`` output has a route for ``prefix`` (host routes print without /32)."""
    net = ipaddress.ip_network(prefix)
    text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return any(line.split()[:1] == [text] for line in routes.splitlines())


def _covers_nothing_local(prefix: str, node: str, status: dict[str, Any]) -> bool:
    """A half of the pool that holds none of ``node``'s pods may be installed there (an aggregate
    that takes nothing of this node's: its own blocks' routes stay more specific)."""
    net = ipaddress.ip_network(prefix)
    mine = [p["ip"] for p in status["pods"] if p["node"] == node]
    return (
        0 < net.prefixlen < 32
        and net.prefixlen != 16
        and not any(ipaddress.ip_address(ip) in net for ip in mine)
    )
