"""Two nodes emulated from the rendered chart, end to end, on the node image built by buildah.

For each of two lab nodes the test acts as the kubelet and the container runtime would
(tests/e2e/kubelet.py, tests/e2e/runtime.py): it renders the chart with Helm's engine, runs the
DaemonSet's init container and then its node container from the
built image's root filesystem, in the node's network namespace, with the rendered command, env and
hostPath volumes (bound from a per-node "host" directory) and a ServiceAccount token; then, as the
runtime, it runs the CNI plugin that the init container installed, from the node's host root (no
Python there), for two pods per node. Pods ping across nodes over BGP-learned routes; the rendered
liveness and readiness probes answer; ``felixctl`` inside the image works. A pod with a hostPort,
added through the installed chained conflist (felixpy, then the bundled portmap), answers on its
node's address from the other node.

Twice: with the lab's etcd as datastore, and with the Kubernetes datastore, where the API is the
RBAC-enforcing stand-in behind TLS (tests/e2e/apiserver.py) reached in-cluster with each pod's
ServiceAccount token; there every request must be the pods' and granted by the rendered RBAC.

The DaemonSet's other containers (the felixpy-bfd sidecar) run beside the node container; restarting
the node container leaves the BFD daemon (same pid) and its sessions Up.

Nothing of the spec is written here by hand: command, env, volumes and probes come from the
rendered DaemonSet and ConfigMap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from felixpy.dataplane.kernel_objects import RTPROT_FELIXPY_BGP
from felixpy.lab import state as lab_state
from felixpy.lab.agents import established, parse_node_status
from felixpy.lab.testing import LabCLI, missing_prerequisites
from tests.e2e import apiserver, image_prereqs, kubelet, runtime
from tests.fixtures import chart
from tests.fixtures.cniruntime import Runtime

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

DAEMONSET = "felixpy-node"
INIT, NODE, BFD = "install-cni", "felixpy-node", "felixpy-bfd"
READY_TIMEOUT = 240.0


@dataclass
class EmulatedNode:
    name: str
    netns: str
    address: str
    host: runtime.HostRoot
    container: runtime.RunningContainer
    init_exit: int
    init_log: str
    pods: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod name -> (its netns, its IP)
    cni: Runtime | None = None
    sidecars: dict[str, runtime.RunningContainer] = field(default_factory=dict)  # the pod's other containers
    restart: Any = None  # () -> RunningContainer: the node container started again, as the kubelet would


@dataclass
class Cluster:
    lab: LabCLI
    docs: list[dict[str, Any]]
    daemonset: dict[str, Any]
    image: runtime.ImageRoot
    nodes: list[EmulatedNode]
    conflist_name: str
    datastore: str
    api: apiserver.APIServer | None
    user: str


def _skip(reason: str) -> None:
    print(f"skipping: {reason}")
    pytest.skip(reason)


def _http_get(netns: str, url: str, timeout: int) -> tuple[int, str]:
    """An httpGet probe, from the node's network namespace (the pod is hostNetwork)."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen(sys.argv[1], timeout={timeout})\n"
        "    print(r.status, r.read(200).decode(errors='replace'))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read(200).decode(errors='replace'))\n"
        "except Exception as e:\n"
        "    print(0, e)\n"
    )
    proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, url],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    status, _, body = proc.stdout.strip().partition(" ")
    return (int(status) if status.isdigit() else 0), body


def run_probe(node: EmulatedNode, probe: kubelet.Probe) -> tuple[bool, str]:
    """The probe as the kubelet runs it: success and what it saw."""
    if probe.kind == "httpGet":
        host = probe.host or node.address
        status, body = _http_get(node.netns, f"{probe.scheme.lower()}://{host}:{probe.port}{probe.path}",
                                 probe.timeout)
        return 200 <= status < 400, f"HTTP {status} {body}"
    if probe.kind == "exec":
        proc = node.container.exec(list(probe.command), timeout=probe.timeout + 5)
        return proc.returncode == 0, proc.stdout + proc.stderr
    raise AssertionError(f"the chart uses a {probe.kind} probe, which this test does not run")


def _wait(what: str, check: Any, timeout: float, node: EmulatedNode | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if node is not None and node.container.proc.poll() is not None:
            raise AssertionError(f"{node.name}: container exited ({node.container.proc.returncode}) while "
                                 f"waiting for {what}:\n{node.container.log.read_text()[-3000:]}")
        ok, last = check()
        if ok:
            return
        time.sleep(1)
    tail = node.container.log.read_text()[-3000:] if node else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {last}\n{tail}")


SA_USER = "system:serviceaccount:{namespace}:{name}"
PODS_PER_NODE = 2


def _pod_names(node: str) -> list[str]:
    return [f"{node}-p{i}" for i in range(1, PODS_PER_NODE + 1)]


def _host_port_pod(node: str) -> str:
    return f"{node}-hostport"


@pytest.fixture(scope="module", params=["etcdv3", "kubernetes"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two emulated nodes; the datastore is the lab's etcd, or the RBAC-enforcing stand-in API reached
    in-cluster (TLS, the pod's ServiceAccount token and the cluster CA)."""
    datastore = request.param
    for why in (missing_prerequisites(),
                None if importlib.util.find_spec("helm_python") else "helm-python-sdk is not installed",
                None if shutil.which("socat") and shutil.which("openssl") else "socat or openssl is missing"):
        if why:
            _skip(why)
    built = image_prereqs.node_image()
    if built.skip:
        _skip(built.skip)
    if built.failure:
        pytest.fail(built.failure)
    assert built.tag is not None
    work = Path(tmp_path_factory.mktemp("dsnode"))
    lab = LabCLI.unique("dse" if datastore == "etcdv3" else "dsk")
    nodes: list[EmulatedNode] = []
    image = runtime.ImageRoot(built.tag)
    api: apiserver.APIServer | None = None
    try:
        lab.ok("up", "--nodes", "2", "--no-agents", timeout=120)
        plan = lab_state.load(lab.names).plan
        values: dict[str, Any] = {"datastore": {"type": datastore}}
        if datastore == "etcdv3":
            values["datastore"]["etcd"] = {"endpoints": plan.etcd_endpoint}
        docs = chart.render(values)
        ds = chart.find(docs, "DaemonSet", DAEMONSET)
        spec = kubelet.pod_spec(ds)
        assert spec.get("hostNetwork") is True, "the emulation runs the pod in the node's network namespace"
        namespace = ds["metadata"]["namespace"]
        user = SA_USER.format(namespace=namespace, name=spec["serviceAccountName"])
        tokens = {n.name: secrets.token_urlsafe(32) for n in plan.nodes}
        service_env: dict[str, str] = {}
        if datastore == "kubernetes":
            api_host = plan.etcd_endpoint.split("//", 1)[1].rsplit(":", 1)[0]
            objects = apiserver.cluster_objects(
                docs, {n.name: n.address for n in plan.nodes},
                {pod: n.name for n in plan.nodes for pod in [*_pod_names(n.name), _host_port_pod(n.name)]},
                namespace)
            api = apiserver.start(netns=lab.names.etcd, address=api_host, work=work / "api", docs=docs,
                                  tokens={t: user for t in tokens.values()}, objects=objects)
            service_env = {"KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": str(api.port),
                           "KUBERNETES_PORT": f"tcp://{api_host}:{api.port}"}
        image.__enter__()
        for n in plan.nodes:
            host = runtime.HostRoot(work / n.name / "host")
            host.path.mkdir(parents=True)
            common: dict[str, Any] = {"node": n.name, "host_ip": n.address, "image_config": image.config,
                                      "service_env": service_env}
            where: dict[str, Any] = {"image": image, "host": host, "netns": n.netns, "workdir": work / n.name,
                                     "token": tokens[n.name], "cluster_ca": api.ca if api else None}
            rc = runtime.start(kubelet.container(ds, INIT, docs, **common), **where)
            init_exit = runtime.run_to_completion(rc, timeout=120)
            node_spec = kubelet.container(ds, NODE, docs, **common)
            ctr = runtime.start(node_spec, **where)
            node = EmulatedNode(n.name, n.netns, n.address, host, ctr, init_exit, rc.log.read_text())
            node.restart = lambda node_spec=node_spec, where=where: runtime.start(node_spec, **where)
            nodes.append(node)
            for other in spec["containers"]:
                if other["name"] != NODE:
                    node.sidecars[other["name"]] = runtime.start(
                        kubelet.container(ds, other["name"], docs, **common), **where)
        init_env = kubelet.container(ds, INIT, docs, node="x", host_ip="", image_config={}).env
        yield Cluster(lab, docs, ds, image, nodes, init_env["CNI_CONF_NAME"], datastore, api, user)
    finally:
        for node in nodes:
            node.container.stop(grace=20)
            for sidecar in node.sidecars.values():
                sidecar.stop(grace=20)
        image.__exit__()
        if api is not None:
            api.stop()
        down = lab.down()
        shutil.rmtree(work, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def _ready(cluster: Cluster, node: EmulatedNode) -> None:
    main = kubelet.container(cluster.daemonset, NODE, cluster.docs, node=node.name, host_ip=node.address,
                             image_config=cluster.image.config)
    probe = main.probes["readinessProbe"]
    _wait(f"{node.name} readiness probe", lambda: run_probe(node, probe), READY_TIMEOUT, node)


def test_init_container_installs_the_plugins_and_the_conflist_on_the_host(cluster: Cluster) -> None:
    for node in cluster.nodes:
        assert node.init_exit == 0, node.init_log
        bin_dir = node.host.resolve("/opt/cni/bin")
        assert {"felixpy", "felixpy-ipam"} <= {p.name for p in bin_dir.iterdir()}, node.init_log
        conf = json.loads(node.host.resolve(f"/etc/cni/net.d/{cluster.conflist_name}").read_text())
        felixpy_conf = next(p for p in conf["plugins"] if p["type"] == "felixpy")
        assert felixpy_conf["nodename"] == node.name
        for plugin in conf["plugins"]:
            assert (bin_dir / plugin["type"]).exists(), f"the conflist chains {plugin['type']}, not installed"


def test_the_host_has_no_python_and_the_installed_plugins_need_none(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    assert node.host.interpreters() == []
    gaps = {}
    # What the runtime executes: every file directly in the CNI bin directory.
    for binary in sorted(p for p in node.host.resolve("/opt/cni/bin").iterdir() if p.is_file()):
        why = runtime.host_runnable(node.host, binary)
        if why:
            gaps[binary.name] = why
    assert gaps == {}, "installed plugins that cannot run on a host without Python"


def test_rendered_liveness_and_readiness_probes_answer(cluster: Cluster) -> None:
    for node in cluster.nodes:
        _ready(cluster, node)
        main = kubelet.container(cluster.daemonset, NODE, cluster.docs, node=node.name, host_ip=node.address,
                                 image_config=cluster.image.config)
        for kind in ("livenessProbe", "readinessProbe"):
            ok, saw = run_probe(node, main.probes[kind])
            assert ok, f"{node.name} {kind}: {saw}"


def test_felixctl_inside_the_image_sees_both_nodes_and_their_bgp_sessions(cluster: Cluster) -> None:
    for node in cluster.nodes:
        _ready(cluster, node)
    for node in cluster.nodes:
        def sessions(node: EmulatedNode = node) -> tuple[bool, str]:
            proc = node.container.exec(["felixctl", "node", "status"])
            return established(parse_node_status(proc.stdout)) >= 1, proc.stdout + proc.stderr

        _wait(f"{node.name}: a BGP session Established (felixctl node status)", sessions, READY_TIMEOUT, node)
    got = cluster.nodes[0].container.exec(["felixctl", "get", "nodes", "-o", "json"])
    assert got.returncode == 0, got.stderr
    names = {item["metadata"]["name"] for item in json.loads(got.stdout).get("items", [])}
    assert {n.name for n in cluster.nodes} <= names


def test_the_image_has_wireguard_tools_for_wireguard_enabled(cluster: Cluster) -> None:
    """``wireguardEnabled: true`` needs ``wg`` in the node container: it makes the node's key pair."""
    node = cluster.nodes[0]
    got = node.container.exec(["sh", "-c", "wg --version && wg genkey | wg pubkey"])
    assert got.returncode == 0, got.stdout + got.stderr
    version, key = got.stdout.split("\n")[:2]
    assert version.startswith("wireguard-tools"), got.stdout
    assert len(key) == 44 and key.endswith("="), got.stdout  # a base64 Curve25519 public key


def _cni(cluster: Cluster, node: EmulatedNode) -> Runtime:
    if node.cni is None:
        conflist = json.loads(node.host.resolve(f"/etc/cni/net.d/{cluster.conflist_name}").read_text())
        node.cni = runtime.cni_runtime(node.host, netns=node.netns, conflist=conflist)
    return node.cni


def _cni_args(pod: str, container_id: str) -> str:
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}")


def _add_pod(cluster: Cluster, node: EmulatedNode, pod: str) -> str:
    netns = f"{cluster.lab.names.name}-pod-default-{pod}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=10)
    node.pods[pod] = (netns, "")
    ctr = f"ctr-{pod}"
    result = _cni(cluster, node).add(ctr, f"/var/run/netns/{netns}", args=_cni_args(pod, ctr))
    ip = next(a["address"].split("/")[0] for a in result["ips"] if "." in a["address"])
    node.pods[pod] = (netns, ip)
    return ip


def test_pods_from_the_host_plugin_ping_across_nodes_over_bgp_routes(cluster: Cluster) -> None:
    for node in cluster.nodes:
        _ready(cluster, node)
    for node in cluster.nodes:
        for pod in _pod_names(node.name):
            _add_pod(cluster, node, pod)
    a, b = cluster.nodes
    for src_node, dst_node in ((a, b), (b, a)):
        for src, _ in src_node.pods.values():
            for _, dst_ip in dst_node.pods.values():
                def ping(src: str = src, dst_ip: str = dst_ip) -> tuple[bool, str]:
                    proc = subprocess.run(["ip", "netns", "exec", src, "ping", "-c", "1", "-W", "1", dst_ip],
                                          capture_output=True, text=True, timeout=10, check=False)
                    return proc.returncode == 0, proc.stdout + proc.stderr

                _wait(f"{src} -> {dst_ip}", ping, 90)
    # The routes to the other node's pods were learned over BGP (installed by bgp/ with its protocol).
    argv = ["ip", "netns", "exec", a.netns, "ip", "-j", "route", "show", "proto", str(RTPROT_FELIXPY_BGP)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    learned = [ipaddress.ip_network(r["dst"]) for r in json.loads(out) if "/" in r["dst"]]
    for _, ip in b.pods.values():
        assert any(ipaddress.ip_address(ip) in net for net in learned), (ip, learned)
    # The forwarder logged each request to the CNI log hostPath the conflist names, on the host.
    for node in cluster.nodes:
        conf = next(p for p in _cni(cluster, node).conflist["plugins"] if p["type"] == "felixpy")
        log = node.host.resolve(conf["log_file_path"])
        assert log.exists() and len(log.read_text().splitlines()) >= 2, f"no CNI log at {log} on {node.name}"
    # DEL, as the runtime does when the pod goes (plugins in reverse, the cached result as prevResult).
    for node in cluster.nodes:
        for pod, (netns, _) in list(node.pods.items()):
            ctr = f"ctr-{pod}"
            _cni(cluster, node).delete(ctr, f"/var/run/netns/{netns}", args=_cni_args(pod, ctr))
            subprocess.run(["ip", "netns", "del", netns], check=False, timeout=10)
            del node.pods[pod]


HOST_PORT, CONTAINER_PORT = 18081, 8080


def _fetch(netns: str, address: str, port: int) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, "socat", "-T", "2", "-",
                           f"TCP:{address}:{port},connect-timeout=2"],
                          input="", capture_output=True, text=True, timeout=15, check=False)
    return proc.stdout.strip()


def test_a_host_port_reaches_its_pod_on_the_node_address_through_the_chained_portmap(
    cluster: Cluster,
) -> None:
    """A pod with a hostPort, added through the conflist the init container installed (felixpy, then
    the bundled portmap, as the runtime runs a list with runtimeConfig.portMappings), answers on its
    node's address from the other node; after DEL the port is closed and the NAT rule gone.
    The host has a distribution's userland for this (portmap runs the host's iptables)."""
    for node in cluster.nodes:
        _ready(cluster, node)
    a, b = cluster.nodes
    conflist = _cni(cluster, a).conflist
    assert [p["type"] for p in conflist["plugins"]] == ["felixpy", "portmap"], conflist
    assert conflist["plugins"][1].get("capabilities", {}).get("portMappings") is True
    cni = runtime.cni_runtime(a.host, netns=a.netns, conflist=conflist, userland=True)
    made = runtime.add_userland(a.host)
    pod = _host_port_pod(a.name)
    netns = f"{cluster.lab.names.name}-pod-default-{pod}"
    ctr, args = f"ctr-{pod}", _cni_args(pod, f"ctr-{pod}")
    mappings = [{"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=10)
    server: subprocess.Popen[bytes] | None = None
    added = False
    try:
        result = cni.add(ctr, f"/var/run/netns/{netns}", args=args, capabilities={"portMappings": mappings})
        added = True
        pod_ip = next(x["address"].split("/")[0] for x in result["ips"] if "." in x["address"])
        serve = ["socat", f"TCP-LISTEN:{CONTAINER_PORT},fork,reuseaddr", f"SYSTEM:echo hello-from-{pod}"]
        server = subprocess.Popen(["ip", "netns", "exec", netns, *serve],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(f"{b.name} -> {a.address}:{HOST_PORT} (hostPort of {pod} at {pod_ip})",
              lambda: ((got := _fetch(b.netns, a.address, HOST_PORT)) == f"hello-from-{pod}", got), 60)
        nat = subprocess.run(["ip", "netns", "exec", a.netns, "iptables-save", "-t", "nat"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        assert f"--to-destination {pod_ip}:{CONTAINER_PORT}" in nat, nat
        cni.delete(ctr, f"/var/run/netns/{netns}", args=args)
        added = False
        nat = subprocess.run(["ip", "netns", "exec", a.netns, "iptables-save", "-t", "nat"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        assert f"{pod_ip}:{CONTAINER_PORT}" not in nat, "portmap's DEL left its DNAT rule"
        assert _fetch(b.netns, a.address, HOST_PORT) == ""
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        if added:
            with contextlib.suppress(Exception):
                cni.delete(ctr, f"/var/run/netns/{netns}", args=args)
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=10)
        runtime.remove_userland(made)
    assert a.host.interpreters() == [], "the userland run left something in the host root"


@pytest.mark.parametrize("cluster", ["kubernetes"], indirect=True)
def test_kubernetes_mode_every_request_was_the_pods_and_was_granted(cluster: Cluster) -> None:
    """In-cluster, each agent's requests carried its ServiceAccount's token, and none was refused by
    the rendered RBAC (the stand-in answers 401/403 as a cluster does)."""
    assert cluster.api is not None
    for node in cluster.nodes:
        _ready(cluster, node)
    rows = [json.loads(line) for line in cluster.api.audit.read_text().splitlines() if line.strip()]
    assert rows, "the agents made no request to the API"
    assert {r["user"] for r in rows} == {cluster.user}
    assert cluster.api.refused() == []
    # A fresh install: the API had no IPPool and no FelixConfiguration; the agents made the default pool.
    namespace = cluster.daemonset["metadata"]["namespace"]
    preloaded = {o["resource"] for o in apiserver.cluster_objects(cluster.docs, {}, {}, namespace)}
    assert not {"ippools.crd.projectcalico.org", "felixconfigurations.crd.projectcalico.org"} & preloaded
    assert any(r["verb"] == "create" and r["resource"] == "ippools" and r["code"] < 300 for r in rows), rows


def _bfd_rows(node: EmulatedNode) -> list[dict[str, Any]]:
    """BFD rows of the agent's bgp-status.json (what felixctl node status prints), from the host's run dir."""
    try:
        doc = json.loads(node.host.resolve("/var/run/felixpy/bgp-status.json").read_text())
    except (OSError, ValueError):
        return []
    return list(doc.get("bfd") or [])


def _bfd_up(node: EmulatedNode) -> tuple[bool, str]:
    rows = _bfd_rows(node)
    return bool(rows) and all(r["state"] == "Up" for r in rows), json.dumps(rows)


@pytest.mark.parametrize("cluster", ["etcdv3"], indirect=True)
def test_node_container_restart_keeps_the_bfd_sidecar_daemon_and_its_sessions_up(cluster: Cluster) -> None:
    """Restarting the agent's container (SIGTERM, then started again) leaves the sidecar's BFD daemon:
    the same pid, adopted by the new agent (never a second daemon), and the peer's BFD session to
    this node never fails, so the peer keeps this node's routes (graceful restart)."""
    if BFD not in cluster.nodes[0].sidecars:
        _skip("the chart renders no felixpy-bfd container (bfd.sidecar.enabled is false)")
    for node in cluster.nodes:
        _ready(cluster, node)
    a, b = cluster.nodes
    for node in cluster.nodes:
        _wait(f"{node.name}: BFD sessions Up", lambda node=node: _bfd_up(node), READY_TIMEOUT, node)
    sidecar = a.sidecars[BFD]
    cmdline = Path(f"/proc/{sidecar.pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"felixpy-bfd") for part in cmdline), cmdline  # the container's process is it
    pid = sidecar.pid
    failures_before = {r["peer"]: r["failures"] for r in _bfd_rows(b)}
    a.container.stop(grace=20)
    old_log = a.container.log.read_text()
    assert "bfd daemon started" not in old_log, "the agent started a daemon of its own beside the sidecar's"
    a.container = a.restart()
    _ready(cluster, a)
    _wait(f"{a.name}: BFD sessions Up after the restart", lambda: _bfd_up(a), READY_TIMEOUT, a)
    assert sidecar.proc.poll() is None and sidecar.pid == pid, "the BFD daemon did not outlive the agent"
    new_log = a.container.log.read_text()
    assert "waiting for it on" in new_log and "bfd daemon connected" in new_log, new_log[-3000:]
    assert "bfd daemon started" not in new_log
    ok, rows = _bfd_up(b)
    assert ok, f"{b.name}'s BFD session to {a.name} went down across the restart: {rows}"
    failures_after = {r["peer"]: r["failures"] for r in _bfd_rows(b)}
    assert failures_after == failures_before, (failures_before, failures_after)
    print(f"\nBFD daemon pid {pid} kept across {a.name}'s node-container restart; {b.name}'s BFD rows: "
          f"{json.dumps(_bfd_rows(b))}")
