"""A fresh install in Kubernetes mode comes up under the chart's RBAC, as on a cluster.

The chart is rendered with Helm's engine (datastore kubernetes, defaults otherwise). The stand-in
API server (tests/fixtures/kubeapi.py) runs in the node's network namespace enforcing the rendered
ClusterRole/Role and bindings for the felixpy-node ServiceAccount's bearer token; it holds only what a
new cluster has (the Node, namespaces, one pod): no IPPool, no FelixConfiguration, no IPAM objects.
The real agent runs with the node container's rendered environment (kubelet-resolved), a kubeconfig
carrying the token; the plugins and conflist are what the rendered init container installs. Then:
the agent gets ready, creates the default pool, a pod is added through the installed plugin, and no
request was refused; the RBAC grants are compared with what the agent did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.kube.install_cni import install
from tests.fixtures import chart
from tests.fixtures.netns import Netns, delete_netns
from tests.kernel.test_agent_cni import FELIXPY, _ns, _wait

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]
PORT = 16443
TOKEN = "felixpy-node-sa-token"
ADMIN_TOKEN = "admin-token"
USER = f"system:serviceaccount:{chart.NAMESPACE}:felixpy-node"
# What the ClusterRole grants that this scenario (one node, one pod, no BGP peers or passwords, no
# policies) does not exercise, and where the agent does it. A grant the agent never uses must go.
# tests/integration/test_node_rbac_rare_paths.py takes each of these paths under the same rendered RBAC
# and requires every grant below to be used there.
NOT_EXERCISED = {
    ("update", "crd.projectcalico.org", "blockaffinities"): "IPAM: an orphaned affinity completed",
    ("get", "crd.projectcalico.org", "blockaffinities"): "IPAM: that affinity read (_repair_claim)",
    ("delete", "crd.projectcalico.org", "ipamblocks"): "IPAM: an emptied borrowed block (release.py)",
    ("update", "crd.projectcalico.org", "ipamhandles"): "IPAM: a second address for one handle (dual stack)",
    ("update", "crd.projectcalico.org", "caliconodestatuses"): "CalicoNodeStatus of the node (node_status)",
}


def _objects() -> list[dict[str, Any]]:
    node = {"metadata": {"name": "node1", "labels": {"kubernetes.io/os": "linux"}}, "spec": {}}
    pod = {
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node1", "serviceAccountName": "default", "containers": [{"name": "c"}]},
        "status": {"phase": "Pending"},
    }
    return [
        {"resource": "nodes", "object": node},
        {"resource": "namespaces", "object": {"metadata": {"name": "default"}}},
        {"resource": "namespaces", "object": {"metadata": {"name": chart.NAMESPACE}}},
        {"resource": "pods", "namespace": "default", "object": pod},
    ]


def _grants(docs: list[dict[str, Any]], account: str = "felixpy-node") -> set[tuple[str, str, str]]:
    """Every (verb, group, resource) the rendered roles bound to ``account`` grant (the chart's other
    ServiceAccounts, e.g. the controllers', have their own roles and tests)."""
    bound = {
        (doc["roleRef"]["kind"], doc["roleRef"]["name"])
        for doc in docs
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(
            sub.get("kind") == "ServiceAccount" and sub.get("name") == account
            for sub in doc.get("subjects") or []
        )
    }
    out = set()
    for doc in docs:
        if (doc["kind"], doc["metadata"]["name"]) in bound:
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        out |= {(verb, group, resource) for verb in rule["verbs"]}
    return out


class Cluster:
    def __init__(self, node: Netns, tmp: Path, docs: list[dict[str, Any]]) -> None:
        self.node, self.tmp, self.docs = node, tmp, docs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.audit = tmp / "audit.jsonl"

    def start_api(self) -> None:
        rbac = self.tmp / "rbac.yaml"
        admin = [  # the test's own reads: a cluster admin, as an operator's kubectl
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
        rbac.write_text(yaml.safe_dump_all([d for d in self.docs if "Role" in d["kind"]] + admin))
        objects = self.tmp / "objects.yaml"
        objects.write_text(yaml.safe_dump_all(_objects()))
        argv = [
            "ip",
            "netns",
            "exec",
            self.node.name,
            str(Path(FELIXPY).parent / "python"),
            "-m",
            "tests.fixtures.kubeapi",
            "--listen",
            f"127.0.0.1:{PORT}",
            "--rbac",
            str(rbac),
            "--token",
            f"{TOKEN}={USER}",
            "--token",
            f"{ADMIN_TOKEN}=admin",
            "--objects",
            str(objects),
            "--audit",
            str(self.audit),
        ]
        log = open(self.tmp / "kubeapi.log", "ab")  # noqa: SIM115 (handed to the child)
        self.procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        _wait(lambda: "ready" in (self.tmp / "kubeapi.log").read_text(), 30, "the stand-in API server")
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": f"http://127.0.0.1:{PORT}"}}],
            "users": [{"name": "felixpy-node", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "felixpy-node"}}],
        }
        (self.tmp / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))

    def install_cni(self) -> dict[str, Any]:
        """The rendered init container's install-cni, into this node's stand-in host directories."""
        env = chart.container_env(self.docs, "install-cni", node_name="node1")
        conflist = env["CNI_NETWORK_CONFIG"].replace('"/var/run/felixpy"', json.dumps(str(self.tmp / "run")))
        conflist = conflist.replace('"/var/log/felixpy/cni/cni.log"', json.dumps(str(self.tmp / "cni.log")))
        install(
            bin_dir=self.tmp / "bin",
            conf_dir=self.tmp / "net.d",
            conf_name=env["CNI_CONF_NAME"],
            template=conflist,
            node_name="node1",
            mtu=int(env["CNI_MTU"] or 0) or 1440,
        )
        return json.loads((self.tmp / "net.d" / env["CNI_CONF_NAME"]).read_text())  # type: ignore[no-any-return]

    def start_agent(self) -> subprocess.Popen[bytes]:
        env = chart.container_env(self.docs, "felixpy-node", node_name="node1")
        env |= {  # this test's host paths and the node's address instead of autodetection on a test box
            "PATH": os.environ["PATH"],
            "KUBECONFIG": str(self.tmp / "kubeconfig"),
            "FELIXPY_RUN_DIR": str(self.tmp / "run"),
            "FELIXPY_STATE_DIR": str(self.tmp / "state"),
            "IP": "10.77.0.1/24",
        }
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115 (handed to the child)
        agent = subprocess.Popen(
            ["ip", "netns", "exec", self.node.name, FELIXPY, "node"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.procs.append(agent)
        return agent

    def requests(self) -> list[dict[str, Any]]:
        return (
            [json.loads(line) for line in self.audit.read_text().splitlines()] if self.audit.exists() else []
        )

    def api_get(self, path: str) -> dict[str, Any]:
        probe = (
            f"import urllib.request as u; r = u.Request('http://127.0.0.1:{PORT}{path}', "
            f"headers={{'Authorization': 'Bearer {ADMIN_TOKEN}'}}); "
            "print(u.urlopen(r, timeout=5).read().decode())"
        )
        out = self.node.run("python3", "-c", probe)
        return json.loads(out)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        print("skipping: kernel tests need root (network namespaces)")
        pytest.skip("needs root")
    docs = chart.render({"datastore": {"type": "kubernetes"}})
    tmp = Path(tempfile.mkdtemp(prefix="felixpy-kubefresh-"))
    node = _ns("kube")
    c = Cluster(node, tmp, docs)
    try:
        node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        node.run("ip", "addr", "add", "10.77.0.1/24", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")
        node.run("ip", "link", "set", "eth0p", "up")
        node.run("ip", "route", "add", "default", "via", "10.77.0.254", "dev", "eth0")
        c.start_api()
        yield c
    finally:
        c.stop()
        for name in ("agent.log", "kubeapi.log"):
            if (tmp / name).exists():
                print(f"{name} tail:\n{(tmp / name).read_text(errors='replace')[-2500:]}")
        delete_netns(node.name)
        if not os.environ.get("FELIXPY_KEEP_RUN_DIR"):
            shutil.rmtree(tmp, ignore_errors=True)


def test_fresh_install_comes_up_under_the_rendered_rbac(cluster: Cluster) -> None:
    conflist = cluster.install_cni()
    agent = cluster.start_agent()

    def ready() -> bool:
        if agent.poll() is not None:
            raise AssertionError(f"agent exited rc={agent.returncode}")
        probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:9099/readiness', timeout=1)"
        return (
            subprocess.run(
                ["ip", "netns", "exec", cluster.node.name, "python3", "-c", probe],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )

    _wait(ready, 60, "agent readiness under RBAC")
    pools = cluster.api_get("/apis/crd.projectcalico.org/v1/ippools")["items"]
    assert [p["spec"]["cidr"] for p in pools] == ["10.244.0.0/16"]
    assert (cluster.tmp / "state" / "nodename").read_text() == "node1"
    # a pod through the installed plugin, as the runtime would run it
    pod = _ns("kpod")
    try:
        env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "cid-web",
            "CNI_NETNS": pod.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(cluster.tmp / "bin"),
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        }
        plugin = conflist["plugins"][0] | {"name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        proc = subprocess.run(
            ["ip", "netns", "exec", cluster.node.name, str(cluster.tmp / "bin" / "felixpy")],
            input=json.dumps(plugin),
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, proc.stdout
        assert json.loads(proc.stdout)["ips"][0]["address"].startswith("10.244.")
        web = cluster.api_get("/api/v1/namespaces/default/pods/web")
        assert web["metadata"]["annotations"]["cni.projectcalico.org/containerID"] == "cid-web"
        proc = subprocess.run(
            ["ip", "netns", "exec", cluster.node.name, str(cluster.tmp / "bin" / "felixpy")],
            input=json.dumps(plugin),
            env=env | {"CNI_COMMAND": "DEL"},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, proc.stdout
        assert not cluster.api_get("/apis/crd.projectcalico.org/v1/ipamhandles")["items"]
    finally:
        delete_netns(pod.name)
    requests = cluster.requests()
    refused = [r for r in requests if r["code"] in (401, 403)]
    assert not refused, f"refused under the chart's RBAC: {refused}"
    used = {(r["verb"], r["group"], r["resource"]) for r in requests if r["user"] == USER}
    granted = _grants(cluster.docs)
    assert ("create", "crd.projectcalico.org", "ippools") in used  # the default pool, as calico-node
    unused = granted - used - set(NOT_EXERCISED)
    assert not unused, (
        f"granted but never used by the agent (remove, or say where it is used): {sorted(unused)}"
    )
    assert set(NOT_EXERCISED) <= granted


def test_the_stand_in_refuses_what_the_chart_does_not_grant(cluster: Cluster) -> None:
    """The check above can fail: the same token may not create pods or read secrets cluster-wide."""

    def status(method: str, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        code = (
            f"import urllib.request as u, urllib.error as e, json\n"
            f"r = u.Request('http://127.0.0.1:{PORT}{path}', method={method!r}, headers={headers!r}, "
            f"data=b'{{}}' if {method!r} == 'POST' else None)\n"
            "try:\n    print(200, u.urlopen(r, timeout=5).read().decode())\n"
            "except e.HTTPError as x:\n    print(x.code, x.read().decode())\n"
        )
        out = cluster.node.run("python3", "-c", code)
        head, _, body = out.partition(" ")
        return int(head), json.loads(body)

    code, body = status("POST", "/api/v1/namespaces/default/pods")
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        f'pods is forbidden: User "{USER}" cannot create resource "pods" '
        'in API group "" in the namespace "default"'
    )
    code, body = status("GET", f"/api/v1/namespaces/{chart.NAMESPACE}/secrets")  # the agent reads none
    assert code == 403 and body["message"].endswith(f'in API group "" in the namespace "{chart.NAMESPACE}"')
    code, body = status("GET", "/api/v1/secrets")
    assert code == 403 and body["message"].endswith('in API group "" at the cluster scope')
    assert status("GET", "/api/v1/nodes", token=None)[0] == 401
    assert status("GET", "/api/v1/nodes", token="someone-else")[0] == 401
    assert status("GET", "/api/v1/nodes")[0] == 200
