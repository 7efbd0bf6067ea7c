"""felixpy-lab end to end: the real CLI, real namespaces, etcd, agents, ExaBGP, CNI plugin.

Each test builds its own uniquely named lab and tears it down in ``finally`` (LabCLI's
context manager), then checks that nothing of it is left, in the root namespace included.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time

import pytest

from felixpy.lab.down import leftovers
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot
from tests.fixtures.kernel_features import require_kernel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _assert_gone(lab: LabCLI, before: set[str]) -> None:
    proc = lab.down()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = leftovers(lab.names)
    assert left.empty(), left
    assert root_snapshot() == before, "the lab changed the root namespace"


def test_network_and_datastore_without_agents() -> None:
    """Racks routed by the fabric; etcd reachable from every node; down removes it all."""
    before = root_snapshot()
    with LabCLI.unique("net") as lab:
        lab.ok("up", "--nodes", "3", "--racks", "2", "--no-agents", timeout=60)
        status = lab.status()
        assert [n["rack"] for n in status["nodes"]] == [1, 1, 2]
        assert {n["address"] for n in status["nodes"]} == {"10.99.1.10", "10.99.1.11", "10.99.2.10"}
        # rack 1 -> rack 2 through the fabric router
        ping = lab.run("exec", "node1", "--", "ping", "-c", "1", "-W", "2", "10.99.2.10", timeout=20)
        assert ping.returncode == 0, ping.stdout
        # the datastore answers from a node namespace, and holds what up applied
        pools = lab.ok("ctl", "--", "get", "ippools", "-o", "json", timeout=30)
        assert "10.244.0.0/16" in pools
        nodes = lab.ok("ctl", "--", "get", "nodes", timeout=30)
        assert all(n in nodes for n in ("node1", "node2", "node3"))
        # nothing of the lab in the root namespace while it is up
        assert root_snapshot() == before
    _assert_gone(lab, before)


def _routes(lab: LabCLI, node: str) -> str:
    return lab.ok("exec", node, "--", "ip", "route", timeout=20)


def _learned(lab: LabCLI, node: str) -> list[str]:
    """The node's routes learned over BGP (proto 81 = felixpy's BGP routes)."""
    return [r for r in _routes(lab, node).splitlines() if "proto 81" in r]


def test_two_nodes_pods_talk_over_bgp_routes() -> None:
    """The vertical slice: two nodes, one pod on each, traffic over BGP-learned routes."""
    before = root_snapshot()
    with LabCLI.unique("two") as lab:
        lab.ok("up", "--nodes", "2", "--timeout", "90")
        lab.ok("pod", "add", "x/a", "--node", "node1", "--labels", "app=a", "--serve", "80,81", timeout=60)
        b = json.loads(lab.ok("pod", "add", "x/b", "--node", "node2", "--labels", "app=b", "--serve", "80",
                              timeout=60))
        status = lab.status()
        assert {(p["namespace"], p["name"], p["node"]) for p in status["pods"]} == {
            ("x", "a", "node1"), ("x", "b", "node2")}
        assert status["pods"][0]["labels"] == {"app": "a"}
        assert [[s["info"] for s in n["bgp"]] for n in status["nodes"]] == [["Established"]] * 2
        # node1 learned node2's block over BGP (proto 81 = felixpy's BGP routes), next hop node2: x/b's
        # block is new, so it is awaited (pod add returns once node2 has it, before node1 does)
        learned = _wait_for(lambda: any("via 10.99.1.11" in r for r in _learned(lab, "node1")), 30)
        assert learned, _learned(lab, "node1")
        # x/b's responder starts in the background of pod add: the first probe may find it not listening
        _wait_for(lambda: lab.run("probe", "x/a", "x/b", "80").returncode == 0, 30)
        ok = lab.run("probe", "x/a", "x/b", "80")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert json.loads(ok.stdout)["ip"] == b["ip"]
        assert lab.run("probe", "x/b", "x/a", "81", "--proto", "udp").returncode == 0
        closed = lab.run("probe", "x/a", "x/b", "81", "--proto", "tcp")  # b serves only 80
        assert closed.returncode == 1 and json.loads(closed.stdout)["connected"] is False
        m = json.loads(lab.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp,udp", "-o", "json"))
        assert all(m["tables"]["80/tcp"][s][d] for s in ("x/a", "x/b") for d in ("x/a", "x/b"))
        lab.ok("pod", "del", "x/b", timeout=60)
        assert not any(p["name"] == "b" for p in lab.status()["pods"])
        pod_ns = lab.names.pod("x", "b")
        gone = subprocess.run(["ip", "netns", "pids", pod_ns], capture_output=True, timeout=10)
        assert gone.returncode != 0  # the pod's namespace is deleted
    _assert_gone(lab, before)


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_down_after_up_was_killed() -> None:
    """kill -9 of ``up`` in the middle (etcd and agents running): down still removes everything."""
    before = root_snapshot()
    lab = LabCLI.unique("kil")
    names = lab.names
    proc = subprocess.Popen(
        [lab.binary, "--name", lab.name, "up", "--nodes", "2", "--timeout", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        started = _wait_for(lambda: (names.node_dir("node2") / "agent.log").exists(), 60)
        assert started, "up never started the agents"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not leftovers(names).empty()  # something to clean up
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_gone(lab, before)


def test_down_without_state_file_finds_leftovers_by_prefix() -> None:
    """The state file is lost: down finds namespaces by prefix and processes by their tag."""
    before = root_snapshot()
    with LabCLI.unique("nos") as lab:
        lab.ok("up", "--nodes", "1", "--no-agents", timeout=60)
        lab.names.state_file.unlink()
    _assert_gone(lab, before)


def test_two_labs_coexist() -> None:
    before = root_snapshot()
    with LabCLI.unique("coa") as one, LabCLI.unique("cob") as two:
        one.ok("up", "--nodes", "1", "--no-agents", timeout=60)
        two.ok("up", "--nodes", "1", "--no-agents", timeout=60)
        assert one.status()["nodes"][0]["netns"] != two.status()["nodes"][0]["netns"]
        assert two.down().returncode == 0
        assert one.status()["phase"] == "up"  # the other lab is untouched
        assert one.run("ctl", "--", "get", "ippools").returncode == 0
    assert leftovers(one.names).empty() and leftovers(two.names).empty()
    assert root_snapshot() == before


def _pods_everywhere(lab: LabCLI, nodes: list[str]) -> None:
    for i, node in enumerate(nodes):
        lab.ok("pod", "add", f"x/p{i}", "--node", node, "--serve", "80", timeout=60)


def _all_connected(lab: LabCLI, timeout: float = 60.0) -> dict[str, dict[str, bool]]:
    """The 80/tcp matrix, probed until every pair connects or ``timeout`` passes; the last one.
    ``pod add`` returns before other nodes learned a new block and before its responder listens."""

    def probe() -> dict[str, dict[str, bool]]:
        table = json.loads(lab.ok("probe", "--matrix", "--ports", "80", "--proto", "tcp", "-o", "json"))
        return table["tables"]["80/tcp"]  # type: ignore[no-any-return]

    deadline = time.monotonic() + timeout
    table = probe()
    while not all(all(row.values()) for row in table.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        table = probe()
    return table


def test_racks_behind_a_bird_top_of_rack() -> None:
    """2 racks, eBGP AS per rack to a BIRD ToR: pods in different racks talk through the fabric."""
    if shutil.which("bird") is None or shutil.which("birdc") is None:
        print("skipping: bird2 is not installed")
        pytest.skip("bird2 is not installed")
    before = root_snapshot()
    with LabCLI.unique("tor") as lab:
        lab.ok("up", "--nodes", "3", "--racks", "2", "--tor", "bird", "--timeout", "90")
        status = lab.status()
        assert {n["asn"] for n in status["nodes"] if n["rack"] == 1} == {65101}
        assert {n["asn"] for n in status["nodes"] if n["rack"] == 2} == {65102}
        _pods_everywhere(lab, ["node1", "node2", "node3"])
        protocols = subprocess.run(
            ["ip", "netns", "exec", lab.names.fabric, "birdc", "-s", str(lab.names.run_dir / "bird.ctl"),
             "show", "protocols"], capture_output=True, text=True, timeout=20, check=True).stdout
        assert protocols.count("Established") == 3, protocols
        # same rack: direct (third-party next hop kept); other rack: via the ToR. The pods' blocks are
        # new: they reach node1 over BGP (through the ToR) after pod add returned, so they are awaited.
        same_rack, other_rack = r"via 10\.99\.1\.11 dev eth0 proto 81", r"via 10\.99\.1\.1 dev eth0 proto 81"
        _wait_for(lambda: all(re.search(p, _routes(lab, "node1")) for p in (same_rack, other_rack)), 30)
        routes = _routes(lab, "node1")
        assert re.search(same_rack, routes), routes
        assert re.search(other_rack, routes), routes
        table = _all_connected(lab)
        assert all(all(row.values()) for row in table.values()), table
    _assert_gone(lab, before)


def test_route_reflector_topology() -> None:
    """Mesh off, one RR node: clients peer only with it and still learn each other's blocks."""
    before = root_snapshot()
    with LabCLI.unique("rrt") as lab:
        lab.ok("up", "--nodes", "3", "--route-reflectors", "1", "--timeout", "90")
        status = lab.status()
        assert [n["role"] for n in status["nodes"]] == ["node", "node", "node", "route-reflector"]
        rr = lab.ok("ctl", "--", "get", "node", "rr1", "-o", "yaml", timeout=30)
        assert "routeReflectorClusterID" in rr
        mesh = lab.ok("ctl", "--", "get", "bgpconfiguration", "default", "-o", "yaml", timeout=30)
        assert "nodeToNodeMeshEnabled: false" in mesh
        _pods_everywhere(lab, ["node1", "node2", "node3"])
        assert lab.run("pod", "add", "x/onrr", "--node", "rr1").returncode == 2
        table = _all_connected(lab)
        assert all(all(row.values()) for row in table.values()), table
        assert "proto 81" in _routes(lab, "node3")
    _assert_gone(lab, before)


def test_demo_runs_end_to_end_and_cleans_up() -> None:
    """The README's main command: up, pods, BGP, routes, matrix, policy, down."""
    if shutil.which("bird") is None:
        print("skipping: bird2 is not installed")
        pytest.skip("bird2 is not installed")
    before = root_snapshot()
    lab = LabCLI.unique("dmo")
    try:
        proc = lab.run("demo", "--timeout", "90", timeout=280)
    finally:
        lab.down()
    out = proc.stdout
    assert out.count("1 Established") == 3, out
    assert "<- felixpy (BGP)" in out and "<- felixpy (local)" in out
    before_policy = out.split("=== connectivity (", 1)[1].split("=== policy", 1)[0]
    assert "X" not in before_policy.split(")", 1)[1].rsplit("(", 1)[0], before_policy
    assert "is gone: no namespace, process, link or file left" in out
    assert leftovers(lab.names).empty() and root_snapshot() == before
    # the policy part: x -> y blocked once the NetworkPolicy is enforced by the agents
    assert proc.returncode == 0 and "policy enforced as expected" in out, out[-3000:]


@pytest.mark.parametrize("encap", ["vxlan"])  # IPIP: tests/e2e/test_lab_ipip.py (the VM stage)
def test_encapsulation_across_racks(encap: str) -> None:
    """No ToR: the fabric knows no pod routes, so cross-rack pod traffic must be encapsulated."""
    require_kernel(encap)
    before = root_snapshot()
    with LabCLI.unique(encap[:3]) as lab:
        lab.ok("up", "--nodes", "3", "--racks", "2", "--encap", encap, "--cross-subnet", "--timeout", "60")
        _pods_everywhere(lab, ["node1", "node2", "node3"])
        table = _all_connected(lab)
        assert all(all(row.values()) for row in table.values()), table
        device = "vxlan.calico" if encap == "vxlan" else "tunl0"
        routes = _routes(lab, "node1")
        assert re.search(rf"via \S+ dev {re.escape(device)} .*proto 8[01]", routes), routes  # rack 2: tunnel
        assert re.search(r"via 10\.99\.1\.11 dev eth0 .*proto 8[01]", routes), routes  # same rack: direct
    _assert_gone(lab, before)
