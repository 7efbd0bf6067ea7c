"""Two real `felixpy controllers` processes (stand-in API server, real etcd): one leads, SIGKILL it, the
other takes the Lease over within its duration and collects the next leak; health answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from ipam.ipam import IPAM
from tests.fixtures import kubeapi
from tests.fixtures.etcd import free_port
from tests.integration.ipam_helpers import make_node, make_pool
from tests.integration.test_controllers import add_pod, wait_for

kubeapi.RESOURCES.setdefault("leases.coordination.k8s.io", ("coordination.k8s.io/v1", "Lease", True))
LEASE_S = 4.0


def kubeconfig(tmp: Path, url: str) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: s, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: s, user: u}}]\ncurrent-context: c\n"
    )
    path.chmod(0o600)
    return path


def holder(api: Any) -> str:
    try:
        return str(
            api.store.get("leases.coordination.k8s.io", "kube-system", "felixpy-controllers")["spec"][
                "holderIdentity"
            ]
        )
    except kubeapi.ApiError:
        return ""


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_kill_the_leader_process_the_other_takes_over(
    tmp_path, kube_api, etcd_kv, etcd_backend, etcd_endpoints
) -> None:
    etcd_backend.create(
        KubeControllersConfiguration.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {
                    "prometheusMetricsPort": 0,
                    "controllers": {
                        "node": {"reconcilerPeriod": "1s", "leakGracePeriod": "1s"},
                        "workloadEndpoint": {},
                    },
                },
            }
        )
    )
    make_pool(etcd_backend, "p", "10.81.0.0/24", blockSize=28)
    kube_api.store.create("pods", "kube-system", {"metadata": {"name": "felixpy-controllers-0"}, "spec": {}})
    kube_api.store.create("nodes", None, {"metadata": {"name": "n1"}})
    make_node(etcd_backend, "n1")
    env = {"ipam": IPAM(etcd_kv, etcd_backend, cache_seconds=0), "api": kube_api, "backend": etcd_backend}
    cfg = kubeconfig(tmp_path, kube_api.url)
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name in ("ctl-a", "ctl-b"):
            port = free_port()
            penv = {
                **os.environ,
                "DATASTORE_TYPE": "etcdv3",
                "ETCD_ENDPOINTS": etcd_endpoints,
                "KUBECONFIG": str(cfg),
                "POD_NAME": name,
                "POD_NAMESPACE": "kube-system",
                "HEALTH_PORT": str(port),
                "LEADER_ELECTION_LEASE_DURATION": str(LEASE_S),
                "LEADER_ELECTION_RENEW_DEADLINE": "3",
                "LEADER_ELECTION_RETRY_PERIOD": "0.5",
            }
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs[name] = (
                subprocess.Popen(
                    [sys.executable, "-m", "felixpy.main", "controllers"], env=penv, stdout=log, stderr=log
                ),
                port,
            )
            if name == "ctl-a":
                wait_for(lambda: holder(kube_api) == "ctl-a", 60, "ctl-a to take the Lease")
        for _, port in procs.values():
            wait_for(lambda p=port: ready(p), 60, f"readiness on {port}")
        ip1 = add_pod(env, "p1", "n1", cid="c1")
        kube_api.store.delete("pods", "default", "p1", None)
        wait_for(lambda: env["ipam"].get_assignment(ip1) is None, 60, "the leader to free the leak")
        assert holder(kube_api) == "ctl-a"
        procs["ctl-a"][0].send_signal(signal.SIGKILL)
        procs["ctl-a"][0].wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: holder(kube_api) == "ctl-b", 30, "ctl-b to take the Lease over")
        took = time.monotonic() - killed
        assert took <= LEASE_S + 3.0, f"takeover took {took:.1f}s with a {LEASE_S}s lease"
        ip2 = add_pod(env, "p2", "n1", cid="c2")
        kube_api.store.delete("pods", "default", "p2", None)
        wait_for(lambda: env["ipam"].get_assignment(ip2) is None, 60, "the new leader to free a leak")
        b_log = (tmp_path / "ctl-b.log").read_text()
        assert "reason='pod-deleted'" in b_log, b_log[-2000:]
        assert b_log.index("leader.acquired") < b_log.index("gc.released"), "the stand-by never acted"
        assert "gc.released" in (tmp_path / "ctl-a.log").read_text()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the controllers' clean exit), SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), ""
    except OSError:
        return 0, ""


def test_health_and_metrics_served_as_the_agents(
    tmp_path, kube_api, etcd_kv, etcd_backend, etcd_endpoints
) -> None:
    """One real process: /liveness and /readiness on HEALTH_PORT, Prometheus text on the
    KubeControllersConfiguration's prometheusMetricsPort, with the leader gauge and the release counter."""
    metrics_port, health_port = free_port(), free_port()
    etcd_backend.create(
        KubeControllersConfiguration.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {
                    "prometheusMetricsPort": metrics_port,
                    "controllers": {"node": {"reconcilerPeriod": "1s", "leakGracePeriod": "1s"}},
                },
            }
        )
    )
    make_pool(etcd_backend, "p", "10.82.0.0/24", blockSize=28)
    # An empty pod list is never trusted: the controllers' own pod keeps it non-empty.
    kube_api.store.create("pods", "kube-system", {"metadata": {"name": "ctl-m"}, "spec": {}})
    kube_api.store.create("nodes", None, {"metadata": {"name": "n1"}})
    make_node(etcd_backend, "n1")
    env = {"ipam": IPAM(etcd_kv, etcd_backend, cache_seconds=0), "api": kube_api, "backend": etcd_backend}
    penv = {
        **os.environ,
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": etcd_endpoints,
        "KUBECONFIG": str(kubeconfig(tmp_path, kube_api.url)),
        "POD_NAME": "ctl-m",
        "POD_NAMESPACE": "kube-system",
        "HEALTH_PORT": str(health_port),
        "LEADER_ELECTION_LEASE_DURATION": str(LEASE_S),
        "LEADER_ELECTION_RENEW_DEADLINE": "3",
        "LEADER_ELECTION_RETRY_PERIOD": "0.5",
    }
    with open(tmp_path / "ctl-m.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "felixpy.main", "controllers"], env=penv, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{health_port}/liveness")[0] == 200, 60, "liveness")
        wait_for(lambda: _get(f"http://127.0.0.1:{health_port}/readiness")[0] == 200, 60, "readiness")
        wait_for(lambda: "felixpy_controllers_is_leader 1.0" in _get(base)[1], 60, "the leader gauge at 1")
        ip = add_pod(env, "p1", "n1", cid="c1")
        kube_api.store.delete("pods", "default", "p1", None)
        wait_for(lambda: env["ipam"].get_assignment(ip) is None, 60, "the leak to be freed")
        line = 'felixpy_controllers_ipam_released_total{kind="address",reason="pod-deleted"} 1.0'
        wait_for(lambda: line in _get(base)[1], 10, "the release to be counted on /metrics")
        assert 'felixpy_controllers_gc_passes_total{outcome="ok"}' in _get(base)[1]
    finally:
        _stop(proc)
    assert proc.returncode == 0, (tmp_path / "ctl-m.log").read_text()[-2000:]
