"""The emulated cluster's Kubernetes API, as in-cluster clients reach it.

The RBAC-enforcing stand-in (tests/fixtures/kubeapi.py: the rendered ClusterRoles/Roles and bindings,
bearer tokens) runs in the lab's etcd namespace on loopback, behind TLS (``socat``, a certificate for
the namespace's address signed by a CA made here), so a pod's client does what it does in a cluster:
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the ServiceAccount token and the
cluster CA from /var/run/secrets/kubernetes.io/serviceaccount. Preloaded: what a cluster has before
the DaemonSet's pods start (namespaces, the Nodes the kubelets registered, the chart's CRD objects
that helm installed, the test's Pods scheduled to their nodes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
LOOPBACK_PORT = 18080
TLS_PORT = 6443
KINDS_HELM_APPLIES = {"BGPConfiguration": "bgpconfigurations", "BGPPeer": "bgppeers", "IPPool": "ippools",
                      "FelixConfiguration": "felixconfigurations", "BGPFilter": "bgpfilters"}


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def make_tls(work: Path, address: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``address``: (ca.crt, server.crt, server.key)."""
    names = ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    ca_key, ca, key, csr, crt = (work / n for n in names)
    ext = work / "san.cnf"
    ext.write_text(f"subjectAltName=IP:{address}\n")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
          "/CN=felixpy-e2e-cluster-ca", "-keyout", str(ca_key), "-out", str(ca)])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
          "-keyout", str(key), "-out", str(csr)])
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt)])
    return ca, crt, key


def cluster_objects(docs: list[dict[str, Any]], nodes: dict[str, str], pods: dict[str, str],
                    namespace: str) -> list[dict[str, Any]]:
    """Namespaces, Nodes (name -> address), Pods (name -> node) and the chart's CRD objects."""
    out: list[dict[str, Any]] = [
        {"resource": "namespaces", "object": {"metadata": {"name": ns}}} for ns in ("default", namespace)
    ]
    for name, address in nodes.items():
        out.append({"resource": "nodes", "object": {
            "metadata": {"name": name,
                         "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name}},
            "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": address}]}}})
    for pod, node in pods.items():
        out.append({"resource": "pods", "namespace": "default", "object": {
            "metadata": {"name": pod, "namespace": "default", "labels": {"app": pod}},
            "spec": {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "c"}]},
            "status": {"phase": "Pending"}}})
    for d in docs:
        plural = KINDS_HELM_APPLIES.get(d.get("kind", ""))
        if plural and str(d.get("apiVersion", "")).startswith("crd.projectcalico.org/"):
            out.append({"resource": f"{plural}.crd.projectcalico.org", "object": d})
    return out


@dataclass
class APIServer:
    host: str
    ca: Path
    audit: Path
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = TLS_PORT

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)

    def refused(self) -> list[dict[str, Any]]:
        """Requests the stand-in answered 401 or 403 (from its audit log)."""
        if not self.audit.exists():
            return []
        rows = [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]
        return [r for r in rows if int(r.get("code", 0)) in (401, 403)]


def start(*, netns: str, address: str, work: Path, docs: list[dict[str, Any]], tokens: dict[str, str],
          objects: list[dict[str, Any]]) -> APIServer:
    work.mkdir(parents=True, exist_ok=True)
    ca, crt, key = make_tls(work, address)
    rbac = work / "rbac.yaml"
    rbac.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] in (
        "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]))
    objs = work / "objects.yaml"
    objs.write_text(yaml.safe_dump_all(objects))
    api = APIServer(host=address, ca=ca, audit=work / "audit.jsonl", log=work / "kubeapi.log")
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.fixtures.kubeapi",
            "--listen", f"127.0.0.1:{LOOPBACK_PORT}", "--rbac", str(rbac), "--objects", str(objs),
            "--audit", str(api.audit)]
    for token, user in tokens.items():
        argv.append(f"--token={token}={user}")
    with api.log.open("ab") as log:
        api.procs.append(subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        api.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, "socat",
             f"OPENSSL-LISTEN:{TLS_PORT},bind={address},reuseaddr,fork,cert={crt},key={key},verify=0",
             f"TCP:127.0.0.1:{LOOPBACK_PORT}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 30
    while "ready" not in api.log.read_text():
        if time.monotonic() > deadline or any(p.poll() is not None for p in api.procs):
            api.stop()
            raise RuntimeError(f"the stand-in API server did not start: {api.log.read_text()[-2000:]}")
        time.sleep(0.2)
    return api


def reachable(netns: str, host: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()"
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True,
                          timeout=15, check=False).returncode == 0

