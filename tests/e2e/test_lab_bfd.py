"""BFD in the lab (issue 19), driven as a user would: ``felixpy-lab up`` (BFD on by default).

- A node cut off hard — its link down first (no FIN, no NOTIFICATION escapes), then every process
  in its namespace killed — leaves every other node's kernel and the BIRD top-of-rack router's
  within about a second (measured, printed; asserted within a bound that holds under load), while
  pings between pods on the other nodes go on.
- The agent stopped with SIGTERM, and killed with kill -9, then started again: the BFD daemon is
  the same process, BIRD's BFD session never leaves Up and the peers keep the node's routes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from felixpy.lab import agents, state
from felixpy.lab.layout import LabNames
from felixpy.lab.plan import NodePlan
from felixpy.lab.testing import LabCLI, missing_prerequisites

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
BOUND = 3.0  # s; BFD's detection time is 0.9 s (300 ms x 3)


@pytest.fixture(autouse=True)
def _prereqs() -> None:
    reason = missing_prerequisites("bird", "birdc")
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _node(names: LabNames, name: str) -> NodePlan:
    return next(n for n in state.load(names).plan.nodes if n.name == name)


def _proto81(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "route", "show", "proto", "81"], capture_output=True, text=True, timeout=10
    ).stdout


def _kernel(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "route"], capture_output=True, text=True, timeout=10).stdout


def _node_status_argv(names: LabNames, node: str) -> tuple[str, ...]:
    """`felixpy-lab exec <node> -- felixctl node status`, reading that node's own run directory."""
    felixctl = str(Path(sys.executable).parent / "felixctl")
    return ("exec", node, "--", "env", f"FELIXPY_RUN_DIR={names.node_dir(node)}", felixctl, "node", "status")


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def _cut_hard(lab: LabCLI, node: NodePlan) -> float:
    """Link down in the fabric first, then SIGKILL everything in the node's namespace; the time of the cut."""
    subprocess.run(
        ["ip", "-n", lab.names.fabric, "link", "set", node.fabric_if, "down"], check=True, timeout=10
    )
    cut = time.monotonic()
    pids = subprocess.run(
        ["ip", "netns", "pids", node.netns], capture_output=True, text=True, timeout=10
    ).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    return cut


def _gone_pid(pid: int) -> bool:
    """Whether process ``pid`` has exited (or is a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _gone(checks: dict[str, Callable[[], bool]], cut: float, timeout: float = 15.0) -> dict[str, float]:
    took: dict[str, float] = {}
    while len(took) < len(checks) and time.monotonic() - cut < timeout:
        for name, check in checks.items():
            if name not in took and check():
                took[name] = time.monotonic() - cut
        time.sleep(0.02)
    return took


def _pods(lab: LabCLI, nodes: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for i, node in enumerate(nodes):
        out[node] = json.loads(lab.ok("pod", "add", f"x/p{i}", "--node", node, timeout=90))
    return out


def _block_of(pod_ip: str, routes: str) -> str | None:
    """The destination on ``routes`` that holds ``pod_ip``."""
    address = ipaddress.ip_address(pod_ip.split("/")[0])
    for line in routes.splitlines():
        dst = line.split()[0] if line.strip() else ""
        with contextlib.suppress(ValueError):
            if "/" in dst and address in ipaddress.ip_network(dst, strict=False):
                return dst
    return None


def _bird_bfd(lab: LabCLI) -> str:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.names.fabric,
            "birdc",
            "-s",
            str(lab.names.run_dir / "bird.ctl"),
            "show",
            "bfd",
            "sessions",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


def _bird_restart_done(lab: LabCLI, protocol: str) -> bool:
    """BIRD's session ``protocol`` Established and no graceful restart of that neighbour pending."""
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.names.fabric,
            "birdc",
            "-s",
            str(lab.names.run_dir / "bird.ctl"),
            "show",
            "protocols",
            "all",
            protocol,
        ],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return "BGP state:          Established" in out and "graceful restart active" not in out


def _ping(netns: str, address: str, *, count: int) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", netns, "ping", "-i", "0.2", "-c", str(count), address.split("/")[0]]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _metrics(netns: str) -> str:
    """The agent's Prometheus page inside ``netns`` ('' while it does not answer)."""
    code = "import sys, urllib.request\nprint(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    url = f"http://127.0.0.1:{agents.METRICS_PORT}/metrics"
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", code, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout


def _restart_node1_agent(lab: LabCLI, sig: signal.Signals, block: str, bfd_pid: str) -> None:
    """Signal node1's agent, start a new one once it has exited (3 s at least, as kubelet would),
    and watch node2's routes and BIRD's BFD sessions every 0.1 s until the restart is over for
    BIRD and then for 2 s more: node1's block must never leave node2, BFD must never leave Up."""
    names = lab.names
    n1, n2 = _node(names, "node1"), _node(names, "node2")
    st = state.load(names)
    old = [p for p in st.processes if p.role == "agent" and p.netns == n1.netns][-1].pid
    os.kill(old, sig)
    stopped = time.monotonic()
    new = None
    missing: list[float] = []  # sample times node2 lacked node1's block
    not_up: list[float] = []  # sample times BIRD's BFD sessions were not all Up

    def sample() -> float:
        now = time.monotonic() - stopped
        if _bird_bfd(lab).count(" Up ") != 3:
            not_up.append(now)
        if block not in _proto81(n2.netns):
            missing.append(now)
        return now

    while True:
        now = sample()
        assert now < 120, f"node1's agent not back, its restart not over, 120 s after {sig.name}"
        if new is None and now >= 3.0 and _gone_pid(old):  # restart delay; kubelet waits for the exit
            new = agents.start(names, st.plan, n1)
            st.processes.append(new)
            state.save(names, st)
        elif (
            new is not None
            and now > 5.0
            and _gone_pid(old)
            and agents.agent_ready(n1)  # the new agent's (the old one answers while it stops)
            and _bird_restart_done(lab, "n_node1")
        ):
            break
        time.sleep(0.1)
    over = now
    for _ in range(10):  # the restart is over: what must stay, stays (sampled over 2 s, not once)
        sample()
        time.sleep(0.2)
    gap = f"{missing[0]:.1f}-{missing[-1]:.1f}s" if missing else "none"
    print(
        f"\nagent {sig.name} + restart: over for BIRD (node1's End-of-RIB) after {over:.1f} s; "
        f"node2 without node1's block: {gap}; BIRD's BFD not Up in {len(not_up)} samples; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    assert (names.node_dir("node1") / "bfd.pid").read_text().strip() == bfd_pid  # the same daemon
    assert not not_up, f"BIRD's BFD left Up after {sig.name} at {not_up}: {_bird_bfd(lab)}"
    assert not missing, f"node1's block left node2 at {gap} after {sig.name} ({len(missing)} samples)"


def test_tor_lab_agent_restarts_keep_bfd_up_and_a_hard_cut_is_gone_in_a_second() -> None:
    with LabCLI.unique("bfd") as lab:
        lab.ok("up", "--nodes", "3", "--tor", "bird", "--timeout", "180", timeout=400)
        names = lab.names
        n1, n2, n3 = (_node(names, f"node{i}") for i in (1, 2, 3))
        pods = _pods(lab, ["node1", "node2", "node3"])
        _wait(
            lambda: _block_of(pods["node1"]["ip"], _proto81(n2.netns)) is not None, "node1's block on node2"
        )
        block = _block_of(pods["node1"]["ip"], _proto81(n2.netns))
        assert block is not None
        _wait(
            lambda: block in _proto81(n3.netns) and block in _kernel(names.fabric), "node1's block everywhere"
        )
        _wait(lambda: _bird_bfd(lab).count(" Up ") == 3, "BIRD's three BFD sessions Up", 60)

        # A restart is over for BIRD once the new session has re-sent node1's table and End-of-RIB:
        # until then BIRD keeps node1's routes as stale, and another restart inside that window
        # is a restart during a restart, after which BIRD drops them (RFC 4724 gives it no other
        # choice: "graceful restart detected - already pending"). So each step waits for it.
        _wait(lambda: _bird_restart_done(lab, "n_node1"), "BIRD's session with node1 up, no restart pending")
        bfd_pid = (names.node_dir("node1") / "bfd.pid").read_text().strip()
        # pings from node2's pod to node1's pod through both restarts
        ping = _ping(names.pod("x", "p1"), pods["node1"]["ip"], count=600)

        try:
            # (c) SIGTERM, then kill -9, of node1's agent, each followed by a new agent: sampled throughout
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _restart_node1_agent(lab, sig, block, bfd_pid)
        finally:
            if ping.poll() is None:
                ping.send_signal(signal.SIGINT)  # ping prints its summary and exits
        out, _ = ping.communicate(timeout=30)
        summary = next((line for line in out.splitlines() if "packet loss" in line), out.strip())
        print(f"pings node2's pod -> node1's pod through both restarts: {summary}")
        assert " 0% packet loss" in summary, out
        status_argv = _node_status_argv(names, "node1")
        # the new agent writes its status as it starts; under load that can trail its readiness
        _wait(lambda: lab.run(*status_argv, timeout=30).returncode == 0, "node1's `node status` answers", 30)
        text = lab.ok(*status_argv, timeout=30)
        print("\n" + text)
        assert "BFD status" in text and "Up" in text.split("BFD status", 1)[1]

        # (a) node1 cut off hard, pings between node2's and node3's pods running meanwhile
        ping = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                names.pod("x", "p1"),
                "ping",
                "-i",
                "0.2",
                "-c",
                "25",
                pods["node3"]["ip"],
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1.0)  # some replies before the cut
        cut = _cut_hard(lab, n1)
        took = _gone(
            {
                "node2": lambda: block not in _proto81(n2.netns),
                "node3": lambda: block not in _proto81(n3.netns),
                "bird-tor": lambda: block not in _kernel(names.fabric),
            },
            cut,
        )
        out, _ = ping.communicate(timeout=30)
        print(
            f"\nnode1 cut off hard (tor lab): its block {block} gone after "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(took.items()))
            + f"; load {os.getloadavg()[0]:.1f}"
        )
        print(out.strip().splitlines()[-2] if out.strip() else "no ping output")
        assert set(took) == {"node2", "node3", "bird-tor"}, took
        assert max(took.values()) <= BOUND, took
        assert " 0% packet loss" in out, out


def test_mesh_lab_hard_cut_leaves_every_other_node_within_a_second() -> None:
    with LabCLI.unique("bfm") as lab:
        lab.ok("up", "--nodes", "3", "--timeout", "180", timeout=400)
        names = lab.names
        n1, n2, n3 = (_node(names, f"node{i}") for i in (1, 2, 3))
        pods = _pods(lab, ["node1"])
        _wait(
            lambda: all(_block_of(pods["node1"]["ip"], _proto81(n.netns)) for n in (n2, n3)), "node1's block"
        )
        block = _block_of(pods["node1"]["ip"], _proto81(n2.netns))
        assert block is not None
        cut = _cut_hard(lab, n1)
        took = _gone({n.name: (lambda n=n: block not in _proto81(n.netns)) for n in (n2, n3)}, cut)
        print(
            f"\nnode1 cut off hard (mesh lab): its block {block} gone after "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(took.items()))
            + f"; load {os.getloadavg()[0]:.1f}"
        )
        assert set(took) == {"node2", "node3"}, took
        assert max(took.values()) <= BOUND, took
        # node2's own account, from the running agent: its metrics and `felixctl node status`
        peer = f'peer="{n1.address}"'
        wanted = (
            f"felixpy_bfd_session_up{{{peer}}} 0.0",
            f"felixpy_bfd_failures_total{{{peer}}} 1.0",
            f"felixpy_bfd_routes_held{{{peer}}} 1.0",
        )
        _wait(lambda: all(w in _metrics(n2.netns) for w in wanted), f"node2's metrics saying {wanted}", 30)
        text = lab.ok(*_node_status_argv(names, "node2"), timeout=30)
        print("\n" + text)
        row = next(line for line in text.split("BFD status", 1)[1].splitlines() if n1.address in line)
        assert "Down" in row and "routes held until BFD is Up" in row, row


def test_tor_lab_without_bfd_for_the_record() -> None:
    """(b) The same hard cut with ``--no-bfd``: the ToR's hold timer (30 s in the lab) decides; printed."""
    with LabCLI.unique("nob") as lab:
        lab.ok("up", "--nodes", "2", "--tor", "bird", "--no-bfd", "--timeout", "180", timeout=400)
        names = lab.names
        n1, n2 = (_node(names, f"node{i}") for i in (1, 2))
        pods = _pods(lab, ["node1"])
        _wait(
            lambda: _block_of(pods["node1"]["ip"], _proto81(n2.netns)) is not None, "node1's block on node2"
        )
        block = _block_of(pods["node1"]["ip"], _proto81(n2.netns))
        assert block is not None
        assert "BFD status" not in lab.ok(*_node_status_argv(names, "node2"), timeout=30)
        cut = _cut_hard(lab, n1)
        took = _gone(
            {
                "node2": lambda: block not in _proto81(n2.netns),
                "bird-tor": lambda: block not in _kernel(names.fabric),
            },
            cut,
            timeout=200,
        )
        print(
            "\nwithout BFD (tor lab, BIRD hold time 30 s, graceful restart on): node1's block gone after "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(took.items()))
            + f"; load {os.getloadavg()[0]:.1f}"
        )
        assert set(took) == {"node2", "bird-tor"}, took
        assert min(took.values()) > BOUND  # what BFD saves: nothing noticed the death for the hold time
