"""The real `felixctl` command line in Kubernetes datastore mode (DATASTORE_TYPE=kubernetes, KUBECONFIG).

Every test runs felixctl as a subprocess against the stand-in API server (tests/fixtures/kubeapi.py),
because no real kube-apiserver can run on this machine; felixctl reaches it through the official
`kubernetes` client and a kubeconfig file written by the test, as it would reach a real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from ipam.ipam import IPAM
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.ipam_helpers import make_pool

pytestmark = pytest.mark.integration

FELIXCTL = str(Path(sys.executable).parent / "felixctl")
CRD = "{}.crd.projectcalico.org"

MANIFEST = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.72.0.0/24, blockSize: 28, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.0.2.1, asNumber: 64600}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-ingress}
spec: {selector: all(), order: 100, types: [Ingress]}
"""


class Ctl:
    """Runs felixctl with DATASTORE_TYPE=kubernetes and KUBECONFIG pointing at the stand-in."""

    def __init__(self, kubeconfig: Path):
        drop = ("DATASTORE_TYPE", "ETCD_ENDPOINTS", "KUBECONFIG")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env |= {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, stdin: str | None = None, rc: int = 0) -> str:
        proc = subprocess.run(
            [FELIXCTL, *args], input=stdin, env=self.env, capture_output=True, text=True, timeout=60
        )
        output = f"{proc.stdout}{proc.stderr}"
        assert proc.returncode == rc, f"felixctl {' '.join(args)} -> {proc.returncode}\n{output}"
        return proc.stdout


@pytest.fixture
def kube(kube_api: KubeAPI) -> KubeAPI:
    """The stand-in with TCP_NODELAY on its sockets (header and body are separate writes: 40 ms each)."""
    return kube_api


@pytest.fixture
def ctl(kube: KubeAPI, tmp_path: Path) -> Ctl:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": kube.url}}],
        "users": [{"name": "operator", "user": {}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "standin", "user": "operator"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Ctl(path)


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def names(kube: KubeAPI, plural: str) -> list[str]:
    return [o["metadata"]["name"] for o in kube.store.list(CRD.format(plural), None)[0]]


def pod(name: str, ns: str, node: str, ip: str | None, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"} | ({"podIP": ip} if ip else {})
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c"}], **spec},
        "status": status,
    }


def test_apply_get_delete_calico_kinds_as_crds(ctl: Ctl, kube: KubeAPI) -> None:
    """felixctl apply/get/delete of IPPool, BGPPeer and GlobalNetworkPolicy in Kubernetes mode
    (stand-in API server): stored as crd.projectcalico.org/v1 objects, listed back, deleted."""
    assert "Successfully applied 3 resource(s)" in ctl("apply", "-f", "-", stdin=MANIFEST)
    stored = kube.store.get(CRD.format("ippools"), None, "pool-a")
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["spec"]["natOutgoing"] is True
    assert names(kube, "bgppeers") == ["tor"] and names(kube, "globalnetworkpolicies") == ["deny-ingress"]

    pools = rows(ctl("get", "ippool", "-o", "wide"))
    assert pools[0][:3] == ["NAME", "CIDR", "NAT"] and pools[1][:3] == ["pool-a", "10.72.0.0/24", "true"]
    assert rows(ctl("get", "bgppeer"))[1] == ["tor", "192.0.2.1", "(global)", "64600"]
    gnp = json.loads(ctl("get", "globalnetworkpolicy", "deny-ingress", "-o", "json"))
    assert gnp["apiVersion"] == "projectcalico.org/v3" and gnp["kind"] == "GlobalNetworkPolicy"
    assert gnp["spec"]["order"] == 100 and gnp["spec"]["types"] == ["Ingress"]

    ctl("apply", "-f", "-", stdin=MANIFEST.replace("64600", "64700"))  # apply again = update (CAS)
    assert kube.store.get(CRD.format("bgppeers"), None, "tor")["spec"]["asNumber"] == 64700
    ctl("delete", "bgppeer", "tor")
    ctl("delete", "-f", "-", stdin=MANIFEST.split("---")[2])
    ctl("delete", "ippool", "pool-a")
    assert names(kube, "bgppeers") == names(kube, "globalnetworkpolicies") == names(kube, "ippools") == []
    assert rows(ctl("get", "bgppeer")) == [["NAME", "PEERIP", "NODE", "ASN"]]
    ctl("get", "bgppeer", "tor", rc=1)


def test_get_workloadendpoints_lists_pods(ctl: Ctl, kube: KubeAPI) -> None:
    """felixctl get wep in Kubernetes mode (stand-in API server): pods with an address are the
    workload endpoints; host-network pods and pods not yet addressed are not."""
    kube.store.create("pods", "default", pod("web", "default", "node-a", "10.72.0.5"))
    kube.store.create("pods", "shop", pod("cart", "shop", "node-b", "10.72.0.20"))
    kube.store.create("pods", "shop", pod("pending", "shop", "node-b", None))
    kube.store.create(
        "pods", "kube-system", pod("proxy", "kube-system", "node-a", "192.0.2.7", hostNetwork=True)
    )

    listed = rows(ctl("get", "wep", "-A"))
    assert listed[0][:4] == ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS"]
    assert sorted(r[:4] for r in listed[1:]) == [
        ["default", "web", "node-a", "10.72.0.5/32"],
        ["shop", "cart", "node-b", "10.72.0.20/32"],
    ]
    assert [r[0] for r in rows(ctl("get", "wep", "-n", "shop"))[1:]] == ["cart"]
    doc = yaml.safe_load(ctl("get", "wep", "-n", "shop", "-o", "yaml"))
    wep = doc["items"][0] if "items" in doc else doc
    assert wep["metadata"]["name"] == "node--b-k8s-cart-eth0"
    assert wep["spec"]["profiles"] == ["kns.shop", "ksa.shop.default"]
    assert wep["spec"]["interfaceName"].startswith("cali")


def test_ipam_show_counts_kubernetes_allocations(ctl: Ctl, kube: KubeAPI) -> None:
    """felixctl ipam show in Kubernetes mode (stand-in API server) reports the pool and its blocks as
    IPAM over the IPAM CRDs recorded them."""
    backend = KubernetesBackend.for_url(kube.url)
    make_pool(backend, "pool-a", "10.72.0.0/24", blockSize=28)
    ipam = IPAM(KubeKV(backend), backend)
    for i in range(3):
        ipam.auto_assign(f"h{i}", node="node-a")
    shown = rows(ctl("ipam", "show", "--show-blocks"))
    assert shown[0] == ["GROUPING", "CIDR", "IPS", "TOTAL", "IPS", "IN", "USE", "IPS", "FREE"]
    assert shown[1][:2] == ["IP", "Pool"] and shown[1][2:6] == ["10.72.0.0/24", "256", "3", "(1%)"]
    blocks = [r for r in shown if r[0] == "Block"]
    assert len(blocks) == 1 and blocks[0][1:4] == [ipam.affine_blocks("node-a")[0], "16", "3"]


NEW_KINDS = """
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata: {name: blocked, labels: {role: blocked}}
  spec: {nets: [192.0.2.0/24]}
- apiVersion: projectcalico.org/v3
  kind: NetworkSet
  metadata: {name: partners, namespace: prod}
  spec: {nets: [203.0.113.0/24]}
- apiVersion: projectcalico.org/v3
  kind: IPAMConfiguration
  metadata: {name: default}
  spec: {strictAffinity: true}
- apiVersion: projectcalico.org/v3
  kind: IPReservation
  metadata: {name: keep}
  spec: {reservedCIDRs: [10.72.0.0/28]}
"""


def test_network_sets_and_ipam_kinds_as_crds(ctl: Ctl, kube: KubeAPI) -> None:
    """A YAML list document of the stored-only kinds, in Kubernetes mode: each a crd.projectcalico.org
    object, read back with Calico's defaults, patched and labelled like any other kind."""
    assert "Successfully applied 4 resource(s)" in ctl("apply", "-f", "-", stdin=NEW_KINDS)
    assert names(kube, "globalnetworksets") == ["blocked"] and names(kube, "ipreservations") == ["keep"]
    stored = kube.store.get(CRD.format("networksets"), "prod", "partners")
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["spec"]["nets"] == ["203.0.113.0/24"]
    ipam = yaml.safe_load(ctl("get", "ipamconfiguration", "-o", "yaml", "default"))
    assert ipam["spec"] == {"strictAffinity": True, "maxBlocksPerHost": 0, "autoAllocateBlocks": True}
    ctl("patch", "ipamconfiguration", "default", "-p", '{"spec": {"maxBlocksPerHost": 8}}')
    assert kube.store.get(CRD.format("ipamconfigurations"), None, "default")["spec"]["maxBlocksPerHost"] == 8
    ctl("label", "globalnetworkset", "blocked", "zone=a")
    assert ctl("get", "gns", "-o", "custom-columns=NAME:.metadata.name,ZONE:.metadata.labels.zone") == (
        "NAME      ZONE\nblocked   a\n"
    )
    ctl("delete", "-f", "-", stdin=NEW_KINDS)
    assert names(kube, "globalnetworksets") == names(kube, "ipreservations") == []


def test_cluster_diags_in_kubernetes_mode(ctl: Ctl, kube: KubeAPI, tmp_path: Path) -> None:
    """``cluster diags`` reads the Kubernetes datastore as every verb does: each step ends 0 and the
    kinds applied as CRDs are in the archive."""
    import tarfile

    ctl("apply", "-f", "-", stdin=NEW_KINDS)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = ctl("cluster", "diags", "--output-dir", str(out_dir))
    archive = Path(out.strip().splitlines()[-1].removeprefix("Diags saved to "))
    with tarfile.open(archive) as tar:
        files = {}
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[member.name.split("/", 1)[1]] = data.read().decode()
    failed = [name for name, text in files.items() if "(exit code 0)" not in text.splitlines()[0]]
    assert not failed, {name: files[name][:300] for name in failed}
    assert "blocked" in files["resources/globalnetworksets.yaml"]
    assert "partners" in files["resources/networksets.yaml"]
    assert "keep" in files["resources/ipreservations.yaml"]
    assert len([n for n in files if n.startswith("resources/")]) >= 20  # every kind felixctl knows


def test_profiles_are_generated_from_namespaces_and_service_accounts(ctl: Ctl, kube: KubeAPI) -> None:
    """felixctl get profiles in Kubernetes mode lists Calico's generated profiles: kns.<ns> (allow all,
    the namespace's labels as pcns.*), ksa.<ns>.<sa> (its labels as pcsa.*) and
    projectcalico-default-allow; every write of a Profile is refused naming the kind, changing nothing."""
    kube.store.create("namespaces", None, {"metadata": {"name": "shop", "labels": {"env": "prod"}}})
    kube.store.create("serviceaccounts", "shop", {"metadata": {"name": "cart", "labels": {"team": "t1"}}})

    listed = [r[0] for r in rows(ctl("get", "profiles"))]
    assert listed[0] == "NAME"
    assert {"kns.shop", "ksa.shop.cart", "projectcalico-default-allow"} <= set(listed[1:])
    kns = yaml.safe_load(ctl("get", "profile", "kns.shop", "-o", "yaml"))
    assert kns["spec"]["labelsToApply"] == {"pcns.env": "prod", "pcns.projectcalico.org/name": "shop"}
    assert [r["action"] for r in kns["spec"]["ingress"] + kns["spec"]["egress"]] == ["Allow", "Allow"]
    assert not any(
        r["source"].get("selector") or r["destination"].get("nets") for r in kns["spec"]["ingress"]
    )
    ksa = json.loads(ctl("get", "profile", "ksa.shop.cart", "-o", "json"))
    assert ksa["spec"]["labelsToApply"] == {"pcsa.team": "t1", "pcsa.projectcalico.org/name": "cart"}
    assert not ksa["spec"].get("ingress") and not ksa["spec"].get("egress")
    ctl("get", "profile", "kns.nowhere", rc=1)

    doc = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: mine}\nspec: {}\n"
    proc = subprocess.run(
        [FELIXCTL, "apply", "-f", "-"], input=doc, env=ctl.env, capture_output=True, text=True, timeout=60
    )
    assert (
        proc.returncode != 0 and "Profile objects are generated from Namespaces" in proc.stderr + proc.stdout
    )
    proc = subprocess.run(
        [FELIXCTL, "delete", "profile", "kns.shop"], env=ctl.env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "Profile objects are generated" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert kube.store.list(CRD.format("profiles"), None)[0] == []
    assert kube.store.get("namespaces", None, "shop")["metadata"]["name"] == "shop"
