"""The chart's controllers RBAC against the RBAC-enforcing stand-in API server, Kubernetes-datastore mode:
the controllers do their whole job (Lease, GC of a leak, a deleted node's affinities) with exactly the
ServiceAccount's grants — no request refused, and no grant left unused but the documented undo path."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from felixpy.controllers.runner import Controllers, ElectionSettings
from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from ipam.ipam import IPAM
from tests.fixtures import kubeapi
from tests.integration.ipam_helpers import make_pool
from tests.integration.test_controllers import wait_for
from tests.integration.test_controllers_kube_mode import add_pod

pytest.importorskip(
    "helm_python", reason="helm-python-sdk (Helm's Go SDK) is not installed: the chart cannot be rendered"
)
from tests.fixtures.kuberbac import RBAC
from tests.unit.test_helm_chart import render

kubeapi.RESOURCES.setdefault("leases.coordination.k8s.io", ("coordination.k8s.io/v1", "Lease", True))
kubeapi.RESOURCES.setdefault(
    "kubecontrollersconfigurations.crd.projectcalico.org",
    ("crd.projectcalico.org/v1", "KubeControllersConfiguration", False),
)
SA = "system:serviceaccount:kube-system:felixpy-controllers"
ADMIN = [
    {
        "kind": "ClusterRole",
        "metadata": {"name": "admin"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
    },
    {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "admin"},
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "admin"}],
    },
]
# Granted for a release cut short (KubeKV undoes a transaction's deletes by re-creating) and for
# reads the pass may or may not make; everything else granted must be used by this scenario.
MAY_BE_UNUSED = {
    ("crd.projectcalico.org", "ipamblocks", "create"),  # undoing a cut-short release's block delete
    ("crd.projectcalico.org", "ipamhandles", "create"),  # undoing a handle delete
    ("crd.projectcalico.org", "blockaffinities", "create"),  # undoing an affinity delete
    ("crd.projectcalico.org", "ipamhandles", "update"),  # a handle with several addresses shrinks
    ("crd.projectcalico.org", "ipamhandles", "get"),
    ("crd.projectcalico.org", "blockaffinities", "get"),
    ("crd.projectcalico.org", "ippools", "get"),
    ("crd.projectcalico.org", "kubecontrollersconfigurations", "list"),
    ("crd.projectcalico.org", "hostendpoints", "update"),  # a node's labels or addresses change
}


def client(url: str, token: str) -> KubernetesBackend:
    from kubernetes import client as k8s

    conf = k8s.Configuration(host=url)
    conf.api_key = {"BearerToken": token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return KubernetesBackend(k8s.ApiClient(conf))


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for d in docs
        if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"].startswith("felixpy-controllers")
        for rule in d["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_controllers_work_with_exactly_the_charts_rbac() -> None:
    docs = [
        d
        for d in render({})
        if "Role" in d["kind"] and d["metadata"]["name"].startswith("felixpy-controllers")
    ]
    api = kubeapi.KubeAPI(rbac=RBAC.from_manifests(docs + ADMIN, {"ctl": SA, "adm": "admin"}))
    ctl: Controllers | None = None
    t: threading.Thread | None = None
    try:
        admin = client(api.url, "adm")
        admin.create(
            KubeControllersConfiguration.model_validate(
                {
                    "metadata": {"name": "default"},
                    "spec": {
                        "controllers": {
                            "node": {
                                "reconcilerPeriod": "1s",
                                "leakGracePeriod": "1s",
                                "hostEndpoint": {"autoCreate": "Enabled"},
                            }
                        }
                    },
                }
            )
        )
        make_pool(admin, "p", "10.83.0.0/24", blockSize=28)
        env = {"api": api, "ipam": IPAM(KubeKV(admin), admin, cache_seconds=0)}
        for n in ("n1", "n2"):
            api.store.create("nodes", None, {"metadata": {"name": n}})
        api.store.create("pods", "kube-system", {"metadata": {"name": "felixpy-controllers-0"}, "spec": {}})
        ip1 = add_pod(env, "p1", "n1", "c1")
        ip2 = add_pod(env, "p2", "n2", "c2")
        own = client(api.url, "ctl")
        ctl = Controllers(
            kube=own,
            ipam=IPAM(KubeKV(own), own, cache_seconds=0),
            backend=own,
            etcd_mode=False,
            election=ElectionSettings("ctl-0", lease_duration=3.0, renew_deadline=2.0, retry_period=0.5),
        )
        t = threading.Thread(target=ctl.run, daemon=True)
        t.start()
        wait_for(ctl.elector.is_leader, 10, "the controllers to take the Lease with their own grants")
        api.store.delete("pods", "default", "p1", None)
        wait_for(lambda: env["ipam"].get_assignment(ip1) is None, 30, "the leak to be freed")
        api.store.delete("pods", "default", "p2", None)
        api.store.delete("nodes", None, "n2", None)
        wait_for(lambda: env["ipam"].affine_blocks("n2") == [], 30, "n2's affinities to be released")
        assert env["ipam"].get_assignment(ip2) is None
        wait_for(
            lambda: {h.name for h in admin.list(HostEndpoint)[0]} == {"n1-auto-hep"},
            30,
            "n2's auto HEP to go",
        )
        time.sleep(1.0)  # one more pass with nothing to do
        mine = [a for a in api.store.audit if a["user"] == SA]
        refused = [a for a in mine if a["code"] != 200]
        assert not refused, f"requests the chart's RBAC refused: {refused[:5]}"
        used = {(a["group"], a["resource"], a["verb"]) for a in mine}
        unused = granted(docs) - used - MAY_BE_UNUSED
        assert not unused, f"granted but never used: {sorted(unused)}"
    finally:
        if ctl is not None:
            ctl.stop(graceful=False)
        if t is not None:
            t.join(timeout=10)
        api.stop()


def test_etcd_mode_controllers_work_with_exactly_the_charts_rbac(etcd_kv, etcd_backend) -> None:
    from tests.integration.test_controllers import add_node
    from tests.integration.test_controllers import add_pod as add_etcd_pod

    values = {"datastore": {"type": "etcdv3", "etcd": {"endpoints": "https://10.0.0.10:2379"}}}
    docs = [
        d
        for d in render(values)
        if "Role" in d["kind"] and d["metadata"]["name"].startswith("felixpy-controllers")
    ]
    api = kubeapi.KubeAPI(rbac=RBAC.from_manifests(docs, {"ctl": SA}))
    ctl: Controllers | None = None
    t: threading.Thread | None = None
    try:
        etcd_backend.create(
            KubeControllersConfiguration.model_validate(
                {
                    "metadata": {"name": "default"},
                    "spec": {
                        "controllers": {
                            "node": {"reconcilerPeriod": "1s", "leakGracePeriod": "1s"},
                            "workloadEndpoint": {},
                            "namespace": {},
                            "serviceAccount": {},
                            "policy": {},
                        }
                    },
                }
            )
        )
        make_pool(etcd_backend, "p", "10.85.0.0/24", blockSize=28)
        ipam = IPAM(etcd_kv, etcd_backend, cache_seconds=0)
        env = {"api": api, "backend": etcd_backend, "ipam": ipam}
        add_node(env, "n1")
        add_node(env, "n2")
        api.store.create("pods", "kube-system", {"metadata": {"name": "felixpy-controllers-0"}, "spec": {}})
        api.store.create("namespaces", None, {"metadata": {"name": "prod", "labels": {"env": "prod"}}})
        api.store.create("serviceaccounts", "prod", {"metadata": {"name": "default"}})
        ip1 = add_etcd_pod(env, "p1", "n1", cid="c1")
        add_etcd_pod(env, "p2", "n2", cid="c2")
        own = client(api.url, "ctl")
        ctl = Controllers(
            kube=own,
            ipam=IPAM(etcd_kv, etcd_backend, cache_seconds=0),
            backend=etcd_backend,
            etcd_mode=True,
            election=ElectionSettings("ctl-0", lease_duration=3.0, renew_deadline=2.0, retry_period=0.5),
        )
        t = threading.Thread(target=ctl.run, daemon=True)
        t.start()
        wait_for(ctl.elector.is_leader, 10, "the controllers to take the Lease with their own grants")
        api.store.delete("pods", "default", "p1", None)
        wait_for(lambda: ipam.get_assignment(ip1) is None, 30, "the leak to be freed")
        api.store.delete("pods", "default", "p2", None)
        api.store.delete("nodes", None, "n2", None)
        wait_for(lambda: ipam.affine_blocks("n2") == [], 30, "n2's affinities to be released")
        from felixpy.resources.k8s import Namespace

        assert etcd_backend.get(Namespace, "prod").metadata.labels == {"env": "prod"}
        mine = [a for a in api.store.audit if a["user"] == SA]
        refused = [a for a in mine if a["code"] != 200]
        assert not refused, f"requests the chart's RBAC refused: {refused[:5]}"
        used = {(a["group"], a["resource"], a["verb"]) for a in mine}
        assert granted(docs) == used, f"granted but never used: {sorted(granted(docs) - used)}"
    finally:
        if ctl is not None:
            ctl.stop(graceful=False)
        if t is not None:
            t.join(timeout=10)
        api.stop()
