"""`felixpy-lab pod del` when the CNI DEL fails: the pod is kept (marked deleting, with its namespace),
the command fails saying so, and the next `pod del` retries the DEL and removes it.

The agent is made unreachable by moving its CNI socket aside (the plugin then fails at once with
code 11, as with the agent down) and back; the lab is a real one (one node, its agent, etcd).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from felixpy.lab.testing import LabCLI, missing_prerequisites

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def _wep_keys(lab: LabCLI) -> str:
    proc = lab.run("ctl", "get", "workloadendpoints", "-A", "-o", "json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pod_del_keeps_a_pod_whose_del_failed_and_retries() -> None:
    with LabCLI.unique("pdl") as lab:
        lab.ok("up", "--nodes", "1", "--timeout", "90")
        pod = json.loads(lab.ok("pod", "add", "x/a", "--node", "node1", timeout=90))
        sock = lab.names.node_dir("node1") / "cni.sock"
        aside = sock.with_name("cni.sock.aside")
        sock.rename(aside)
        try:
            failed = lab.run("pod", "del", "x/a", timeout=60)
        finally:
            aside.rename(sock)
        assert failed.returncode != 0, failed.stdout
        assert "CNI DEL for x/a failed" in failed.stderr and "'code': 11" in failed.stderr, failed.stderr
        assert "pod x/a is kept (marked deleting" in failed.stderr
        assert "run 'felixpy-lab pod del x/a' again to retry" in failed.stderr
        (kept,) = [p for p in lab.status()["pods"] if p["name"] == "a"]
        assert kept["deleting"] is True and kept["ip"] == pod["ip"]
        assert "(deleting)" in lab.ok("status", timeout=60)
        assert "node1-k8s-a-eth0" in _wep_keys(lab), "the DEL never reached the agent"
        # the namespace was kept, so the pod is no orphan: `node check` on the node finds nothing
        check = lab.run("ctl", "--node", "node1", "--", "node", "check", "-o", "json", timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout) == {"node": "node1", "orphanedEndpoints": []}

        lab.ok("pod", "del", "x/a", timeout=60)  # the retry
        assert not any(p["name"] == "a" for p in lab.status()["pods"])
        assert "node1-k8s-a-eth0" not in _wep_keys(lab)
        gone = subprocess.run(["ip", "netns", "pids", pod["netns"]], capture_output=True, timeout=10)
        assert gone.returncode != 0, "the pod's namespace is deleted once the DEL succeeded"
