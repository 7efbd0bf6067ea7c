"""Kubernetes datastore mode: an agent started while `felixctl datastore migrate lock` holds the
datastore (ClusterInformation datastoreReady: false, a CRD on the stand-in API server) waits, logging
"datastore locked, waiting", and gives up after FELIXPY_DATASTORE_LOCK_WAIT with one line, exit 1."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.kubeapi import KubeAPI
from tests.integration.test_kube_mode_felixctl import CRD, Ctl, ctl, kube  # noqa: F401 (fixtures)
from tests.integration.test_startup_locked_datastore import FELIXPY

pytestmark = pytest.mark.integration


def test_agent_waits_for_a_locked_kubernetes_datastore(ctl: Ctl, kube: KubeAPI, tmp_path: Path) -> None:  # noqa: F811
    assert ctl("datastore", "migrate", "lock") == "Datastore locked.\n"
    env = {
        "PATH": os.environ["PATH"],
        "NODENAME": "kube-locked",
        "DATASTORE_TYPE": "kubernetes",
        "KUBECONFIG": ctl.env["KUBECONFIG"],
        "IP": "192.0.2.11/24",
        "CALICO_NETWORKING_BACKEND": "none",
        "FELIXPY_RUN_DIR": str(tmp_path / "run"),
        "FELIXPY_STATE_DIR": str(tmp_path / "state"),
        "FELIXPY_DATASTORE_LOCK_WAIT": "3",
    }
    started = time.monotonic()
    proc = subprocess.run([FELIXPY, "node"], env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "datastore locked, waiting" in out and "Traceback" not in out
    assert proc.stderr.strip().splitlines()[-1].startswith("felixpy: start-up failed: datastore locked")
    assert time.monotonic() - started >= 3
    assert kube.store.list(CRD.format("ippools"), None)[0] == []  # nothing written: no default pool
    assert [o["metadata"]["name"] for o in kube.store.list(CRD.format("clusterinformations"), None)[0]] == [
        "default"]  # fmt: skip
