"""A lab on a three-member etcd: pods added and a policy applied while a member is killed.

Every ``pod add`` answers (success, or one clear error line with no traceback), the policy
takes effect on the agents, and ``felixctl ipam check`` finds nothing wrong."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from felixpy.lab.down import leftovers
from felixpy.lab.plan import Options, make_plan
from felixpy.lab.testing import LabCLI, missing_prerequisites, root_snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DENY_TO_A = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-to-a", "namespace": "x"},
    "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]},
}


def test_plan_lists_every_etcd_member_in_etcd_endpoints() -> None:
    plan = make_plan(Options(name="t", nodes=2, etcd_members=3))
    assert plan.etcd_addresses == ["10.98.0.2", "10.98.0.3", "10.98.0.4"]
    assert plan.etcd_endpoint == "http://10.98.0.2:2379,http://10.98.0.3:2379,http://10.98.0.4:2379"
    assert make_plan(Options(name="t", nodes=2)).etcd_endpoint == "http://10.98.0.2:2379"
    with pytest.raises(Exception, match="--etcd-members must be 1, 3 or 5"):
        make_plan(Options(name="t", nodes=2, etcd_members=2))


def _wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_pods_and_policy_while_an_etcd_member_is_killed(tmp_path: Path) -> None:
    reason = missing_prerequisites()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    before = root_snapshot()
    with LabCLI.unique("etcd3") as lab:
        lab.ok("up", "--nodes", "2", "--etcd-members", "3", "--timeout", "120", timeout=180)
        status = lab.status()
        assert len(status["datastore"]["endpoints"]) == 3
        members = {m["role"]: m["pid"] for m in status["datastore"]["members"]}
        assert set(members) == {"etcd-m0", "etcd-m1", "etcd-m2"}
        lab.ok("pod", "add", "x/a", "--node", "node1", "--labels", "app=a", "--serve", "80", timeout=60)
        # m0 is every client's first endpoint: its loss must be ridden out, not reported.
        os.kill(members["etcd-m0"], signal.SIGKILL)
        answers = [
            lab.run(
                "pod",
                "add",
                f"x/b{i}",
                "--node",
                f"node{1 + i % 2}",
                "--labels",
                "app=b",
                "--serve",
                "80",
                timeout=120,
            )
            for i in range(3)
        ]
        for r in answers:
            assert "Traceback" not in r.stdout + r.stderr, r.stderr
            assert r.returncode == 0 or len(r.stderr.strip().splitlines()) <= 2, r.stderr
        added = [f"x/b{i}" for i, r in enumerate(answers) if r.returncode == 0]
        assert added, "no pod could be added with one etcd member of three down"
        assert _wait_for(lambda: lab.run("probe", added[0], "x/a", "80").returncode == 0, 60)
        policy = tmp_path / "deny.json"
        policy.write_text(json.dumps(DENY_TO_A))
        lab.ok("ctl", "--", "apply", "-f", str(policy), timeout=60)
        assert _wait_for(lambda: lab.run("probe", added[0], "x/a", "80").returncode != 0, 60), (
            "the policy did not take effect"
        )
        check = lab.ok("ctl", "--", "ipam", "check", timeout=60)
        assert "found 0 problems" in check, check
    proc = lab.down()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = leftovers(lab.names)
    assert left.empty(), left
    assert root_snapshot() == before, "the lab changed the root namespace"
