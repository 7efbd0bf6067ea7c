"""The chart's controllers Deployment and its least-privilege RBAC (templates/controllers.yaml)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's Go SDK) is not installed")

from tests.unit.test_helm_chart import by_kind, render

CRD = "crd.projectcalico.org"


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def rules(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (g, r, v, ",".join(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_one_replica_with_lease_env_and_probes() -> None:
    docs = render({})
    dep = named(docs, "Deployment", "felixpy-controllers")
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "felixpy-controllers"
    (c,) = pod["containers"]
    assert c["command"] == ["felixpy", "controllers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": 9440}
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["capabilities"]["drop"] == [
        "ALL"
    ]


def test_rbac_is_exactly_what_the_controllers_do() -> None:
    kube = rules(named(render({}), "ClusterRole", "felixpy-controllers"))
    assert kube == {
        ("", "pods", "get", ""),
        ("", "pods", "list", ""),
        ("", "nodes", "get", ""),
        ("", "nodes", "list", ""),
        ("crd.projectcalico.org", "ippools", "get", ""),
        ("crd.projectcalico.org", "ippools", "list", ""),
        ("crd.projectcalico.org", "kubecontrollersconfigurations", "get", ""),
        ("crd.projectcalico.org", "kubecontrollersconfigurations", "list", ""),
        *{
            (CRD, r, v, "")
            for r in ("ipamblocks", "hostendpoints")
            for v in ("get", "list", "create", "update", "delete")
        },
        *{(CRD, "blockaffinities", v, "") for v in ("get", "list", "create", "delete")},
        *{(CRD, "ipamhandles", v, "") for v in ("get", "create", "update", "delete")},
    }
    etcd = render({"datastore": {"type": "etcdv3", "etcd": {"endpoints": "https://10.0.0.10:2379"}}})
    assert rules(named(etcd, "ClusterRole", "felixpy-controllers")) == {
        ("", "pods", "get", ""),
        ("", "pods", "list", ""),
        ("", "nodes", "get", ""),
        ("", "nodes", "list", ""),
        ("", "namespaces", "list", ""),
        ("", "serviceaccounts", "list", ""),
        ("networking.k8s.io", "networkpolicies", "list", ""),
    }, "etcd mode: IPAM lives in etcd, the API server is only read"
    lease = named(etcd, "Role", "felixpy-controllers-lease")
    assert lease["metadata"]["namespace"] == "kube-system"
    assert rules(lease) == {
        ("coordination.k8s.io", "leases", "create", ""),
        ("coordination.k8s.io", "leases", "get", "felixpy-controllers"),
        ("coordination.k8s.io", "leases", "update", "felixpy-controllers"),
    }


def test_can_be_disabled() -> None:
    docs = render({"controllers": {"enabled": False}})
    assert not [d for d in docs if d["metadata"]["name"].startswith("felixpy-controllers")]
