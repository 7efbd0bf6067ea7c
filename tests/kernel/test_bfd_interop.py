"""``felixpy-bfd`` against BIRD 2's ``protocol bfd`` and FRR's bfdd, each in its own namespace.

Both directions of failure: the third-party daemon killed → ours goes Down (detection time
expired); ours killed → theirs reports the session down. Skipped, with the reason printed,
when the daemon's binary is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bgp.bfd_client import BfdClient
from tests.fixtures import waiting
from tests.kernel.test_bfd_daemon import FAST, Inbox

pytestmark = pytest.mark.kernel
BFDD = "/usr/lib/frr/bfdd"

BIRD_CONF = """router id 10.77.0.2;
protocol device { }
protocol bfd {
    interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
    neighbor 10.77.0.1 local 10.77.0.2;
}
"""

FRR_CONF = """bfd
 peer 10.77.0.1 local-address 10.77.0.2
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
 !
!
"""


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    waiting.wait_for(check, what, timeout, every=0.1)


@pytest.fixture
def link(netns: Callable[..., Any], tmp_path: Path) -> Iterator[tuple[Any, Any, BfdClient, Inbox]]:
    a, b = netns("bfia"), netns("bfib")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns, addr in ((a, "10.77.0.1/30"), (b, "10.77.0.2/30")):
        ns.run("ip", "addr", "add", addr, "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
    run = tmp_path / "ours"
    run.mkdir(mode=0o700)
    inbox = Inbox()
    ours = BfdClient(run, inbox, netns=a.name)
    ours.start()
    ours.configure([{"peer": "10.77.0.2", "local": "10.77.0.1", **FAST}])
    yield a, b, ours, inbox
    ours.stop()
    ours.stop_daemon()


def _their_state_after_our_death(ours: BfdClient, inbox: Inbox, theirs: Callable[[], str]) -> None:
    wait_for(lambda: theirs() == "up", "the third-party daemon to report the session up")
    pid = ours.daemon_pid()
    assert pid is not None
    ours.stop()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: theirs() == "down", "the third-party daemon to see our daemon die", timeout=5)


def test_bird2_protocol_bfd(link: tuple[Any, Any, BfdClient, Inbox], tmp_path: Path) -> None:
    if shutil.which("bird") is None or shutil.which("birdc") is None:
        print("skipping: BIRD 2 (bird, birdc) is not installed")
        pytest.skip("bird not installed")
    _a, b, ours, inbox = link
    (tmp_path / "bird.conf").write_text(BIRD_CONF)
    sock = str(tmp_path / "bird.ctl")
    bird = subprocess.Popen(
        ["ip", "netns", "exec", b.name, "bird", "-f", "-c", str(tmp_path / "bird.conf"), "-s", sock],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        up = inbox.state("10.77.0.2", "Up", 20)
        assert up["remote_cpi"] is False  # BIRD does not claim control-plane independence

        def theirs() -> str:
            out = b.run("birdc", "-s", sock, "show", "bfd", "sessions", check=False)
            row = next((line.split() for line in out.splitlines() if line.startswith("10.77.0.1")), [])
            return row[2].lower() if len(row) > 2 else ""

        mark = len(inbox.messages)
        bird.kill()
        bird.wait(10)
        inbox.state("10.77.0.2", "Down", 5, mark)
        bird = subprocess.Popen(
            ["ip", "netns", "exec", b.name, "bird", "-f", "-c", str(tmp_path / "bird.conf"), "-s", sock],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        inbox.state("10.77.0.2", "Up", 20, mark)
        _their_state_after_our_death(ours, inbox, theirs)
    finally:
        bird.kill()
        bird.wait(10)


def test_frr_bfdd(link: tuple[Any, Any, BfdClient, Inbox], tmp_path: Path) -> None:
    if not Path(BFDD).exists() or shutil.which("vtysh") is None:
        print(f"skipping: FRR's bfdd ({BFDD}) or vtysh is not installed")
        pytest.skip("frr bfdd not installed")
    _a, b, ours, inbox = link
    # bfdd drops to the frr user and creates its sockets here: pytest's tmp_path (under a 0700
    # directory) is out of its reach, so a directory of our own in /tmp, removed afterwards
    frr_dir = Path(tempfile.mkdtemp(prefix="fpt-bfdd-"))
    os.chmod(frr_dir, 0o777)
    (frr_dir / "bfdd.conf").write_text(FRR_CONF)
    argv = [
        "ip",
        "netns",
        "exec",
        b.name,
        BFDD,
        "-f",
        str(frr_dir / "bfdd.conf"),
        "-i",
        str(frr_dir / "bfdd.pid"),
        "--vty_socket",
        str(frr_dir),
        "--bfdctl",
        str(frr_dir / "bfdd.sock"),
        "-u",
        "frr",
        "-g",
        "frr",
        "--log",
        "stdout",
        "-z",
        str(frr_dir / "zserv.api"),
    ]
    bfdd = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = inbox.state("10.77.0.2", "Up", 20)
        print(f"\nFRR bfdd C bit: {up['remote_cpi']}")

        def theirs() -> str:
            out = b.run("vtysh", "--vty_socket", str(frr_dir), "-c", "show bfd peers json", check=False)
            try:
                peers = json.loads(out)
            except ValueError:
                return ""
            return next((str(p["status"]) for p in peers if p.get("peer") == "10.77.0.1"), "")

        wait_for(lambda: theirs() == "up", "bfdd to report the session up")
        # the timers were agreed: bfdd sees our 100 ms after the Poll sequence
        out = json.loads(b.run("vtysh", "--vty_socket", str(frr_dir), "-c", "show bfd peers json"))
        assert out[0]["remote-transmit-interval"] == 100 and out[0]["remote-receive-interval"] == 100
        mark = len(inbox.messages)
        bfdd.kill()
        bfdd.wait(10)
        down = inbox.state("10.77.0.2", "Down", 5, mark)
        assert down["diag_text"] == "control detection time expired"
        bfdd = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        inbox.state("10.77.0.2", "Up", 20, mark)
        _their_state_after_our_death(ours, inbox, theirs)
    finally:
        bfdd.kill()
        bfdd.wait(10)
        shutil.rmtree(frr_dir, ignore_errors=True)
