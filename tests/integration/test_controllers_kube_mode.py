"""`felixpy controllers` in Kubernetes-datastore mode: IPAM is CRD objects on the (stand-in) API server
(KubeKV), WorkloadEndpoints are the pods themselves, Nodes are the Kubernetes Nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from felixpy.controllers.runner import Controllers, ElectionSettings
from felixpy.ctl.ipam_cmd import _check
from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.kube import convert
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from ipam.ipam import IPAM
from tests.fixtures import kubeapi
from tests.integration.ipam_helpers import make_pool
from tests.integration.test_controllers import GRACE, NET, wait_for

kubeapi.RESOURCES.setdefault("leases.coordination.k8s.io", ("coordination.k8s.io/v1", "Lease", True))
kubeapi.RESOURCES.setdefault(
    "kubecontrollersconfigurations.crd.projectcalico.org",
    ("crd.projectcalico.org/v1", "KubeControllersConfiguration", False),
)


@pytest.fixture
def kube_env(kube_api) -> Iterator[dict[str, Any]]:
    kube_api.store.create(
        "pods", "kube-system", {"metadata": {"name": "felixpy-controllers-0"}, "spec": {}}
    )  # ours
    admin = KubernetesBackend.for_url(kube_api.url)
    admin.create(
        KubeControllersConfiguration.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {"controllers": {"node": {"reconcilerPeriod": "1s", "leakGracePeriod": "2s"}}},
            }
        )
    )
    make_pool(admin, "p", "10.82.0.0/24", blockSize=28)
    ipam = IPAM(KubeKV(admin), admin, cache_seconds=0)
    backend = KubernetesBackend.for_url(kube_api.url)
    ctl = Controllers(
        kube=backend,
        ipam=IPAM(KubeKV(backend), backend, cache_seconds=0),
        backend=backend,
        etcd_mode=False,
        election=ElectionSettings("a", lease_duration=3.0, renew_deadline=2.0, retry_period=0.5),
    )
    t = threading.Thread(target=ctl.run, daemon=True)
    env = {"api": kube_api, "ipam": ipam, "ctl": ctl, "thread": t}
    try:
        yield env
    finally:
        ctl.stop(graceful=False)
        if t.is_alive():
            t.join(timeout=10)


def add_pod(env: dict[str, Any], name: str, node: str, cid: str) -> str:
    ip = (
        env["ipam"]
        .auto_assign(
            f"{NET}.{cid}", node=node, num_v4=1, attrs={"node": node, "namespace": "default", "pod": name}
        )
        .v4[0]
    )
    ann = {convert.ANN_POD_IP: f"{ip}/32", convert.ANN_POD_IPS: f"{ip}/32", convert.ANN_CONTAINER_ID: cid}
    env["api"].store.create(
        "pods",
        "default",
        {"metadata": {"name": name, "annotations": ann}, "spec": {"nodeName": node}, "status": {"podIP": ip}},
    )
    return ip


def test_kube_mode_leak_freed_after_grace_and_deleted_node_released(kube_env) -> None:
    env = kube_env
    api, ipam = env["api"], env["ipam"]
    for n in ("n1", "n2"):
        api.store.create("nodes", None, {"metadata": {"name": n}})
    ip1 = add_pod(env, "p1", "n1", "c1")
    ip2 = add_pod(env, "p2", "n1", "c2")
    ip3 = add_pod(env, "p3", "n2", "c3")
    assert ipam.affine_blocks("n2")
    env["thread"].start()
    wait_for(env["ctl"].elector.is_leader, 10, "the controllers to lead")
    api.store.delete("pods", "default", "p1", None)
    deleted = time.monotonic()
    wait_for(lambda: ipam.get_assignment(ip1) is None, 30, "the leak to be freed")
    assert time.monotonic() - deleted >= GRACE
    api.store.delete("pods", "default", "p3", None)
    api.store.delete("nodes", None, "n2", None)
    wait_for(lambda: ipam.affine_blocks("n2") == [], 30, "n2's affinities to be released")
    assert ipam.get_assignment(ip3) is None and ipam.get_assignment(ip2) is not None
    wait_for(lambda: _check(ipam, verbose=False).problems == 0, 10, "felixctl ipam check to be clean")
