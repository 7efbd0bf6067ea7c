"""BFD on BGP sessions end to end: BGPServices with real ExaBGP and felixpy-bfd in namespaces, and
a BIRD 2 peer running ``bfd on``.

(a) a node cut off hard (its link down first, then its processes killed): the other nodes' kernels
and BIRD lose its block within about a second (measured; asserted within a generous bound);
(b) the agent stopping uncleanly and a new one starting: the BFD daemon is adopted, BFD stays Up,
and the peer's route to the node never leaves its kernel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bgp.service import BGPService
from felixpy.resources.base import ObjectMeta
from felixpy.resources.bgp import BGPPeer, BGPPeerSpec
from tests.e2e.test_bgp_exabgp import POOL, Bird, Segment, kernel_routes, node, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
BOUND = 3.0  # seconds: BFD detects in 0.9 s (300 ms x 3); the rest is margin for a loaded machine


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., BGPService]]:
    made: list[BGPService] = []

    def make(name: str, ns: object) -> BGPService:
        svc = BGPService(name, tmp_path / name, netns=ns.name)  # type: ignore[attr-defined]
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop(graceful=False, stop_bfd=True)


def kill_everything_in(ns: object) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True, timeout=10)  # type: ignore[attr-defined]
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def bfd_up(svc: BGPService, peers: int) -> bool:
    rows = svc.bfd_status()
    return len(rows) == peers and all(r["state"] == "Up" for r in rows)


def gone_within(checks: dict[str, Callable[[], bool]], timeout: float) -> dict[str, float]:
    """Poll every check until each is true once; the seconds each took (bounded)."""
    start = time.monotonic()
    took: dict[str, float] = {}
    while len(took) < len(checks) and time.monotonic() - start < timeout:
        for name, check in checks.items():
            if name not in took and check():
                took[name] = time.monotonic() - start
        time.sleep(0.02)
    return took


def test_mesh_node_cut_off_hard_leaves_every_kernel_within_a_second(
    netns: Callable[..., object], services: Callable[..., BGPService]
) -> None:
    seg = Segment(netns)
    spaces = {n: seg.attach(n, f"10.0.0.{i}/24") for i, n in enumerate("abc", start=1)}
    nodes = [node(n, f"10.0.0.{i}") for i, n in enumerate("abc", start=1)]
    svcs = {n: services(n, ns) for n, ns in spaces.items()}
    for i, svc in enumerate(svcs.values()):
        svc.update(nodes=nodes, bgp_configs=[], peers=[], pools=[POOL], local_blocks=[f"10.65.{i}.0/26"])
        svc.start()
    for n in "bc":
        wait_for(lambda n=n: "10.65.0.0/26 via 10.0.0.1" in kernel_routes(spaces[n]), f"a's block on {n}", 30)
    for svc in svcs.values():
        wait_for(lambda svc=svc: bfd_up(svc, 2), "BFD Up everywhere", 30)
    # the cut: a's link down first (nothing escapes), then everything on a killed
    cut = time.monotonic()
    seg.switch.run("ip", "link", "set", "p1", "down")  # type: ignore[attr-defined]
    kill_everything_in(spaces["a"])
    took = gone_within(
        {n: (lambda n=n: "10.65.0.0/26" not in kernel_routes(spaces[n])) for n in "bc"}, timeout=10
    )
    print(
        "\nnode cut off hard -> its block out of the other kernels after: "
        + ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in sorted(took.items()))
    )
    assert set(took) == {"b", "c"}, (
        f"a's block still installed after 10 s (BFD took {time.monotonic() - cut:.1f}s)"
    )
    assert max(took.values()) <= BOUND
    row = next(r for r in svcs["b"].bfd_status() if r["peer"] == "10.0.0.1")
    assert row["failures"] == 1 and row["held"]
    assert "10.65.2.0/26 via 10.0.0.3" in kernel_routes(spaces["b"])  # the living stay


def test_agent_dies_and_restarts_bfd_stays_up_routes_stay(
    netns: Callable[..., object], services: Callable[..., BGPService]
) -> None:
    seg = Segment(netns)
    ns_a, ns_b = seg.attach("a", "10.0.0.1/24"), seg.attach("b", "10.0.0.2/24")
    nodes = [node("a", "10.0.0.1"), node("b", "10.0.0.2")]
    a, b = services("a", ns_a), services("b", ns_b)
    for svc, blocks in ((a, ["10.65.0.0/26"]), (b, ["10.65.1.0/26"])):
        svc.update(nodes=nodes, bgp_configs=[], peers=[], pools=[POOL], local_blocks=blocks)
        svc.start()
    wait_for(lambda: "10.65.0.0/26" in kernel_routes(ns_b), "a's block on b", 30)
    wait_for(lambda: bfd_up(a, 1) and bfd_up(b, 1), "BFD Up", 30)
    pid = a.bfd.daemon_pid()
    a.stop(graceful=False)  # the agent and its ExaBGP go; the BFD daemon stays
    a2 = services("a", ns_a)
    a2.update(nodes=nodes, bgp_configs=[], peers=[], pools=[POOL], local_blocks=["10.65.0.0/26"])
    a2.start()
    deadline = time.monotonic() + 30
    while not ([p.state for p in a2.status()] == ["up"] and bfd_up(a2, 1)):
        assert "10.65.0.0/26 via 10.0.0.1" in kernel_routes(ns_b), "b lost a's route during a's restart"
        assert time.monotonic() < deadline, "a's session did not come back in 30 s"
        time.sleep(0.05)
    assert a2.bfd.daemon_pid() == pid and a2.bfd.spawned == 0  # adopted
    assert all(r["failures"] == 0 for r in b.bfd_status())


BIRD_CONF = """router id 10.0.0.9;
protocol device { }
protocol kernel { ipv4 { import none; export all; }; }
protocol bfd {
    interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };
}
protocol bgp felix {
    local 10.0.0.9 as 65000;
    neighbor 10.0.0.1 as 64512;
    hold time 90;
    graceful restart on;
    bfd on;
    ipv4 { import all; export none; };
}
"""


def test_bird_with_bfd_on_drops_a_dead_nodes_routes(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    if shutil.which("bird") is None:
        print("skipping: BIRD 2 is not installed")
        pytest.skip("bird not installed")
    seg = Segment(netns)
    ns_a, ns_r = seg.attach("a", "10.0.0.1/24"), seg.attach("tor", "10.0.0.9/24")
    bird = Bird(ns_r, tmp_path / "bird", BIRD_CONF)
    a = services("a", ns_a)
    tor = BGPPeer(
        metadata=ObjectMeta(name="tor"),
        spec=BGPPeerSpec(
            peer_ip="10.0.0.9", as_number=65000, failure_detection_mode="BFDIfDirectlyConnected"
        ),
    )
    a.update(
        nodes=[node("a", "10.0.0.1")],
        bgp_configs=[],
        peers=[tor],
        pools=[POOL],
        local_blocks=["10.65.0.0/26"],
    )
    a.start()
    try:
        wait_for(
            lambda: "10.65.0.0/26 via 10.0.0.1" in kernel_routes_any(ns_r), "a's block in BIRD's kernel", 30
        )
        wait_for(lambda: bfd_up(a, 1), "BFD Up with BIRD", 30)
        wait_for(lambda: " up " in f" {bird.cli('show', 'bfd', 'sessions').lower()} ", "BIRD's BFD Up", 30)
        seg.switch.run("ip", "link", "set", "p1", "down")  # type: ignore[attr-defined]
        kill_everything_in(ns_a)
        took = gone_within({"bird": lambda: "10.65.0.0/26" not in kernel_routes_any(ns_r)}, timeout=10)
        print(f"\nBIRD (bfd on) removed the dead node's block after {took.get('bird', -1) * 1000:.0f} ms")
        assert "bird" in took and took["bird"] <= BOUND
    finally:
        bird.proc.kill()
        bird.proc.wait(10)


def kernel_routes_any(ns: object) -> str:
    return ns.run("ip", "route", "show")  # type: ignore[attr-defined,no-any-return]


RR_CLIENT_CONF = """router id 10.0.0.3;
protocol device { }
protocol kernel { ipv4 { import none; export all; }; }
protocol static st { ipv4; route 10.65.9.0/26 blackhole; }
protocol bfd {
    interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };
}
protocol bgp felix {
    local 10.0.0.3 as 64512;
    neighbor 10.0.0.1 as 64512;
    direct;
    graceful restart on;
    bfd on;
    ipv4 { gateway direct; import all; export where proto = "st"; };
}
"""


def test_route_reflector_with_a_bird_client_running_bfd(
    netns: Callable[..., object], services: Callable[..., BGPService], tmp_path: Path
) -> None:
    """A felixpy reflector, a felixpy client and a BIRD 2 client (``bfd on``): a client cut off hard
    leaves the other client's table via the reflector within about a second, both ways round."""
    from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec

    if shutil.which("bird") is None:
        print("skipping: BIRD 2 is not installed")
        pytest.skip("bird not installed")
    seg = Segment(netns)
    ns_r, ns_a, ns_c = (seg.attach(t, f"10.0.0.{i}/24") for i, t in ((1, "r"), (2, "a"), (3, "c")))
    nodes = [node("r", "10.0.0.1", labels={"rr": "true"}, cluster_id="244.0.0.1"), node("a", "10.0.0.2")]
    configs = [
        BGPConfiguration(
            metadata=ObjectMeta(name="default"), spec=BGPConfigurationSpec(node_to_node_mesh_enabled=False)
        )
    ]
    peers = [
        BGPPeer(
            metadata=ObjectMeta(name="to-rr"),
            spec=BGPPeerSpec(node_selector="all()", peer_selector="rr == 'true'"),
        ),
        BGPPeer(
            metadata=ObjectMeta(name="bird"),
            spec=BGPPeerSpec(node="r", peer_ip="10.0.0.3", as_number=64512, failure_detection_mode="BFD"),
        ),
    ]
    bird = Bird(ns_c, tmp_path / "bird", RR_CLIENT_CONF)
    try:
        rr, a = services("r", ns_r), services("a", ns_a)
        rr.update(nodes=nodes, bgp_configs=configs, peers=peers, pools=[POOL], local_blocks=[])
        a.update(nodes=nodes, bgp_configs=configs, peers=peers, pools=[POOL], local_blocks=["10.65.0.0/26"])
        rr.start()
        a.start()
        wait_for(lambda: "10.65.0.0/26 via 10.0.0.2" in kernel_routes_any(ns_c), "a's block at BIRD", 30)
        wait_for(lambda: "10.65.9.0/26 via 10.0.0.3" in kernel_routes(ns_a), "BIRD's route on a", 30)
        wait_for(lambda: bfd_up(rr, 2), "the reflector's two BFD sessions Up", 30)
        wait_for(lambda: " up " in f" {bird.cli('show', 'bfd', 'sessions').lower()} ", "BIRD's BFD Up", 30)
        # the BIRD client dies: the reflector drops its route, the felixpy client loses it
        seg.switch.run("ip", "link", "set", "p3", "down")  # type: ignore[attr-defined]
        bird.proc.kill()
        start = time.monotonic()
        took = gone_within({"a": lambda: "10.65.9.0/26" not in kernel_routes(ns_a)}, timeout=10)
        print(f"\nBIRD client cut off: its route left the felixpy client after {took.get('a', -1):.2f} s")
        assert "a" in took and took["a"] <= BOUND, f"after {time.monotonic() - start:.1f}s"
        # and the felixpy client dies: BIRD (back) loses its block through the reflector
        seg.switch.run("ip", "link", "set", "p3", "up")  # type: ignore[attr-defined]
        bird = Bird(ns_c, tmp_path / "bird2", RR_CLIENT_CONF)
        wait_for(
            lambda: "10.65.0.0/26 via 10.0.0.2" in kernel_routes_any(ns_c), "a's block at BIRD again", 60
        )
        seg.switch.run("ip", "link", "set", "p2", "down")  # type: ignore[attr-defined]
        kill_everything_in(ns_a)
        took = gone_within({"bird": lambda: "10.65.0.0/26" not in kernel_routes_any(ns_c)}, timeout=10)
        print(
            f"felixpy client cut off: its block left BIRD (via the reflector) after "
            f"{took.get('bird', -1) * 1000:.0f} ms"
        )
        assert "bird" in took and took["bird"] <= BOUND
    finally:
        bird.stop()


FRR_CONF = """frr defaults traditional
hostname frr
router bgp 65001
 bgp router-id 10.0.0.5
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.0.0.1 remote-as 64512
 neighbor 10.0.0.1 bfd
 address-family ipv4 unicast
  network 10.65.9.0/26
 exit-address-family
!
"""


def test_frr_bgpd_with_bfd_drops_a_dead_nodes_routes(
    netns: Callable[..., object], services: Callable[..., BGPService]
) -> None:
    """FRR (zebra + bfdd + bgpd, ``neighbor ... bfd``): the node's BFD session comes Up with the one
    bgpd registered, and a node cut off hard leaves FRR's kernel (zebra) within about a second."""
    import tempfile

    from felixpy.resources.bgp import BGPPeer as Peer

    daemons = ("zebra", "bfdd", "bgpd")
    if any(not Path(f"/usr/lib/frr/{d}").exists() for d in daemons) or shutil.which("vtysh") is None:
        print("skipping: FRR (zebra, bfdd, bgpd, vtysh) is not installed")
        pytest.skip("frr not installed")
    seg = Segment(netns)
    ns_a, ns_f = seg.attach("a", "10.0.0.1/24"), seg.attach("frr", "10.0.0.5/24")
    work = Path(tempfile.mkdtemp(prefix="fpt-frr-"))  # FRR runs as the frr user: not under pytest's 0700 dir
    os.chmod(work, 0o777)
    (work / "frr.conf").write_text(FRR_CONF)
    procs = []
    try:
        for d in daemons:
            argv = [
                "ip",
                "netns",
                "exec",
                ns_f.name,
                f"/usr/lib/frr/{d}",
                "-f",
                str(work / "frr.conf"),  # type: ignore[attr-defined]
                "-i",
                str(work / f"{d}.pid"),
                "-z",
                str(work / "zserv.api"),
                "--vty_socket",
                str(work),
                "-u",
                "frr",
                "-g",
                "frr",
                "--log",
                "stdout",
            ]
            if d == "bfdd":
                argv += ["--bfdctl", str(work / "bfdd.sock")]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_for(lambda d=d: (work / f"{d}.vty").exists(), f"FRR {d}", 20)
        a = services("a", ns_a)
        frr = Peer(
            metadata=ObjectMeta(name="frr"),
            spec=BGPPeerSpec(
                peer_ip="10.0.0.5", as_number=65001, failure_detection_mode="BFDIfDirectlyConnected"
            ),
        )
        a.update(
            nodes=[node("a", "10.0.0.1")],
            bgp_configs=[],
            peers=[frr],
            pools=[POOL],
            local_blocks=["10.65.0.0/26"],
        )
        a.start()

        def vtysh(cmd: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", ns_f.name, "vtysh", "--vty_socket", str(work), "-c", cmd],  # type: ignore[attr-defined]
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout

        wait_for(lambda: "10.65.0.0/26" in kernel_routes_any(ns_f), "a's block in FRR's kernel (zebra)", 60)
        wait_for(lambda: "10.65.9.0/26 via 10.0.0.5" in kernel_routes(ns_a), "FRR's route on a", 30)
        wait_for(lambda: bfd_up(a, 1), "BFD Up with FRR", 30)
        wait_for(lambda: '"status":"up"' in vtysh("show bfd peers json").replace(" ", ""), "FRR's BFD up", 30)
        seg.switch.run("ip", "link", "set", "p1", "down")  # type: ignore[attr-defined]
        kill_everything_in(ns_a)
        took = gone_within({"frr": lambda: "10.65.0.0/26" not in kernel_routes_any(ns_f)}, timeout=10)
        print(f"\nFRR (neighbor bfd) removed the dead node's block after {took.get('frr', -1):.2f} s")
        assert "frr" in took and took["frr"] <= BOUND
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        shutil.rmtree(work, ignore_errors=True)
