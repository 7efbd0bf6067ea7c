"""The stand-in API server's RBAC authorizer decides as a cluster's does (tests/fixtures/kuberbac.py)."""

from __future__ import annotations

from tests.fixtures.kuberbac import RBAC, Request, verb_of

SA = "system:serviceaccount:kube-system:agent"
DOCS = [
    {
        "kind": "ClusterRole",
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
            {
                "apiGroups": ["crd.projectcalico.org"],
                "resources": ["ippools"],
                "verbs": ["get"],
                "resourceNames": ["default-ipv4-ippool"],
            },
        ],
    },
    {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"kind": "ClusterRole", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "kube-system"}],
    },
    {
        "kind": "Role",
        "metadata": {"name": "secrets", "namespace": "kube-system"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "secrets", "namespace": "kube-system"},
        "roleRef": {"kind": "Role", "name": "secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent"}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "all-sa", "namespace": "apps"},
        "roleRef": {"kind": "ClusterRole", "name": "reader"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}],
    },
]
RBAC_ = RBAC.from_manifests(DOCS, {"t1": SA, "t2": "system:serviceaccount:apps:other"})


def req(
    verb: str, resource: str, ns: str | None = None, name: str | None = None, group: str = "", user: str = SA
) -> Request:
    return Request(user, verb, group, resource, ns, name)


def test_verbs_from_methods() -> None:
    assert [verb_of("GET", "x", False), verb_of("GET", None, False), verb_of("GET", None, True)] == [
        "get",
        "list",
        "watch",
    ]
    assert [verb_of(m, "x", False) for m in ("POST", "PUT", "PATCH", "DELETE")] == [
        "create",
        "update",
        "patch",
        "delete",
    ]
    assert verb_of("DELETE", None, False) == "deletecollection"


def test_tokens_and_cluster_bindings() -> None:
    assert (
        RBAC_.user_of("Bearer t1") == SA
        and RBAC_.user_of("Bearer nope") is None
        and RBAC_.user_of(None) is None
    )
    assert RBAC_.allowed(req("list", "pods")) and RBAC_.allowed(req("get", "pods", "default", "p"))
    assert not RBAC_.allowed(req("patch", "pods", "default", "p"))  # only the status subresource
    assert RBAC_.allowed(req("patch", "pods/status", "default", "p"))
    assert not RBAC_.allowed(req("create", "pods", "default"))


def test_resource_names_only_allow_named_requests() -> None:
    g = "crd.projectcalico.org"
    assert RBAC_.allowed(req("get", "ippools", name="default-ipv4-ippool", group=g))
    assert not RBAC_.allowed(req("get", "ippools", name="other", group=g))
    assert not RBAC_.allowed(req("list", "ippools", group=g))


def test_role_bindings_grant_in_their_namespace_only() -> None:
    assert RBAC_.allowed(req("get", "secrets", "kube-system", "s"))
    assert not RBAC_.allowed(req("get", "secrets", "default", "s"))
    assert not RBAC_.allowed(req("list", "secrets"))
    other = "system:serviceaccount:apps:other"  # through the group subject, in "apps" only
    assert RBAC_.allowed(req("get", "pods", "apps", "p", user=other))
    assert not RBAC_.allowed(req("get", "pods", "default", "p", user=other))


def test_forbidden_status_is_the_clusters() -> None:
    body = RBAC.forbidden_status(req("create", "ippools", group="crd.projectcalico.org"))
    assert body["code"] == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        f'ippools.crd.projectcalico.org is forbidden: User "{SA}" cannot create resource "ippools" '
        'in API group "crd.projectcalico.org" at the cluster scope'
    )
    body = RBAC.forbidden_status(req("patch", "pods/status", "default", "web"))
    assert body["message"] == (
        f'pods "web" is forbidden: User "{SA}" cannot patch resource "pods" in subresource "status" '
        'in API group "" in the namespace "default"'
    )
    assert body["details"] == {"kind": "pods", "name": "web"}
