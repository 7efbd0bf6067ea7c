"""Issue 12 in a real lab (real agents, ExaBGP, etcd, BIRD-free mesh): what the agent and the lab write
is never readable by other users, the BGP MD5 password only in a 0600 file in a 0700 directory, and
each node namespace listens on exactly what it should (`ss -ltn`)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from felixpy.lab.testing import LabCLI, missing_prerequisites
from felixpy.private_files import world_accessible

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "lockdown-s3cret"


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites("ss")
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _listeners(netns: str) -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-H", "-ltn"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def _wait(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return pred()


TOPOLOGIES = {
    "mesh": [],
    "bird-tor": ["--tor", "bird"],  # BIRD's config and log are the lab's files too
    "reflector": ["--route-reflectors", "1"],  # `felixpy node --route-reflector` listens the same way
}


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_files_modes_and_listeners_of_a_running_lab(tmp_path: Path, topology: str) -> None:
    if topology == "bird-tor" and shutil.which("bird") is None:
        print("skipping: bird is not installed")
        pytest.skip("bird is not installed")
    with LabCLI.unique("lck") as lab:
        lab.ok("up", "--nodes", "2", *TOPOLOGIES[topology], "--timeout", "120", timeout=200)
        peer = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "md5-peer"},
            # a peer that never answers (an address of no namespace): only its config matters here
            "spec": {"peerIP": "10.99.1.250", "asNumber": 64512, "password": {"value": PASSWORD}},
        }
        manifest = tmp_path / "peer.json"
        manifest.write_text(json.dumps(peer))
        lab.ok("ctl", "--", "apply", "-f", str(manifest), timeout=60)
        lab.ok("pod", "add", "x/a", "--node", "node1", "--serve", "80", timeout=90)
        status = lab.status()
        node = next(n for n in status["nodes"] if n["name"] == "node1")
        run_dir = Path(node["run_dir"])
        conf = run_dir / "exabgp.conf"
        assert _wait(lambda: "md5-password" in conf.read_text(), 60), conf.read_text()

        # The secret: 0600 in a 0700 directory; nothing the lab or the agents wrote is world-accessible.
        assert (_mode(conf), _mode(run_dir)) == (0o600, 0o700)
        for name in ("agent.log", "exabgp.log", "bgp-status.json", "exabgp.pid", "mtu"):
            assert _mode(run_dir / name) & 0o077 in (0, 0o040), (name, oct(_mode(run_dir / name)))
        assert world_accessible(lab.names.run_dir) == []
        assert _mode(lab.names.run_dir) == 0o700
        if topology == "bird-tor":
            assert _mode(lab.names.run_dir / "bird.conf") == 0o600

        # Listeners: health on loopback, metrics on loopback (the lab asks for them), BGP on the node's
        # address; nothing on every address.
        roles = sorted(n["role"] for n in status["nodes"])
        assert roles == (["node", "node", "route-reflector"] if topology == "reflector" else ["node", "node"])
        for n in status["nodes"]:
            listening = _listeners(n["netns"])
            expected = {"127.0.0.1:9099", "127.0.0.1:9091", f"{n['address']}:179"}
            assert listening == expected, (n["name"], listening)
        lab.ok("exec", "node1", "--", "python3", "-c",
               "import urllib.request as u; u.urlopen('http://127.0.0.1:9091/metrics', timeout=2)",
               timeout=30)  # fmt: skip
