"""The agent started while the datastore is locked (`felixctl datastore migrate lock`), on a real etcd:
it waits, logging "datastore locked, waiting", writes nothing (no Node, no pool), starts once unlocked,
and gives up with one line and exit 1 when the lock outlasts FELIXPY_DATASTORE_LOCK_WAIT."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.agent import _startup
from felixpy.datastore.kv import KV
from felixpy.runtime.settings import Settings
from tests.fixtures.waiting import wait_for
from tests.integration.test_felixctl import FELIXCTL, Ctl, ctl, keys  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
FELIXPY = str(Path(FELIXCTL).with_name("felixpy"))


def node_env(endpoints: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "NODENAME": "locked-node",
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": endpoints,
        "IP": "192.0.2.10/24",
        "CALICO_NETWORKING_BACKEND": "none",
        "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
        "FELIXPY_RUN_DIR": str(tmp_path / "run"),
        "FELIXPY_STATE_DIR": str(tmp_path / "state"),
        **extra,
    }


def test_startup_waits_for_unlock_then_registers(ctl: Ctl, etcd_kv: KV, etcd_endpoints: str,  # noqa: F811
                                                 tmp_path: Path) -> None:  # fmt: skip
    assert ctl("datastore", "migrate", "lock").stdout == "Datastore locked.\n"
    env = node_env(etcd_endpoints, tmp_path, FELIXPY_DATASTORE_LOCK_WAIT="120")
    settings = Settings.from_env(env)
    done: dict[str, Any] = {}

    def start() -> None:
        try:
            done["result"] = _startup(settings, env)
        except BaseException as exc:  # reported by the test thread
            done["error"] = exc

    with capture_logs() as logs:
        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        try:
            wait_for(lambda: any(e["event"] == "datastore locked, waiting" for e in logs), "the wait log", 20)
            # It stays waiting and writes nothing: sampled several times over a few seconds.
            for _ in range(5):
                time.sleep(0.5)
                assert thread.is_alive() and "error" not in done
                assert keys(etcd_kv) == ["clusterinformations/default"]
            assert ctl("datastore", "migrate", "unlock").stdout == "Datastore unlocked.\n"
            thread.join(60)
        finally:
            if thread.is_alive():  # never leave it behind: unlock whatever happened
                ctl("datastore", "migrate", "unlock")
                thread.join(60)
    assert "error" not in done, done.get("error")
    done["result"][0].close()
    stored = keys(etcd_kv)
    assert "nodes/locked-node" in stored and any(k.startswith("ippools/") for k in stored), stored
    assert any(e["event"] == "datastore unlocked, starting" for e in logs)


def test_agent_gives_up_after_the_bound(ctl: Ctl, etcd_kv: KV, etcd_endpoints: str,  # noqa: F811
                                        tmp_path: Path) -> None:  # fmt: skip
    ctl("datastore", "migrate", "lock")
    env = node_env(etcd_endpoints, tmp_path, FELIXPY_DATASTORE_LOCK_WAIT="3")
    started = time.monotonic()
    proc = subprocess.run([FELIXPY, "node"], env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "datastore locked, waiting" in out
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("felixpy: start-up failed: datastore locked")
    assert "FELIXPY_DATASTORE_LOCK_WAIT=3s" in last
    assert "Traceback" not in out
    assert took >= 3, took  # it did wait before giving up
    assert keys(etcd_kv) == ["clusterinformations/default"]  # no Node, no pool written
