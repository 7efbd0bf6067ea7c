"""The emulated kubelet's reading of the rendered chart (tests/e2e/kubelet.py) and the runtime's
path resolution inside an image (tests/e2e/runtime.within): what the emulated-node test relies on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import apiserver, kubelet
from tests.e2e.runtime import HostRoot, host_runnable, within
from tests.fixtures import chart

ENDPOINT = "http://10.98.0.2:2379"
IMAGE = {"Env": ["PATH=/opt/felixpy/venv/bin:/usr/bin:/bin", "FELIXPY_RUN_DIR=/image/default"],
         "Cmd": ["felixpy", "node"], "Entrypoint": []}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return chart.render({"datastore": {"type": "etcdv3", "etcd": {"endpoints": ENDPOINT}}})


def _container(docs: list[dict], name: str) -> kubelet.Container:
    ds = chart.find(docs, "DaemonSet", "felixpy-node")
    return kubelet.container(ds, name, docs, node="node7", host_ip="10.99.1.17", image_config=IMAGE)


def test_node_container_env_resolves_field_and_configmap_refs(docs: list[dict]) -> None:
    c = _container(docs, "felixpy-node")
    assert c.argv == ["felixpy", "node"]
    assert c.env["NODENAME"] == "node7"
    assert c.env["ETCD_ENDPOINTS"] == ENDPOINT
    cm = chart.find(docs, "ConfigMap", "felixpy-config")["data"]
    assert c.env["CALICO_NETWORKING_BACKEND"] == cm["networking_backend"]
    # The image's env is the base; the container's env wins.
    assert c.env["PATH"] == "/opt/felixpy/venv/bin:/usr/bin:/bin"
    assert c.env["FELIXPY_RUN_DIR"] == "/var/run/felixpy"
    assert c.privileged


def test_init_container_gets_the_cni_config_template_from_the_configmap(docs: list[dict]) -> None:
    c = _container(docs, "install-cni")
    cm = chart.find(docs, "ConfigMap", "felixpy-config")["data"]
    assert c.env["CNI_NETWORK_CONFIG"] == cm["cni_network_config"]
    assert c.env["KUBERNETES_NODE_NAME"] == "node7"
    targets = {m.target: m for m in c.mounts}
    assert targets["/host/opt/cni/bin"].host_path == "/opt/cni/bin"
    assert targets["/host/etc/cni/net.d"].host_type == "DirectoryOrCreate"


def test_volumes_and_probes_come_from_the_rendered_spec(docs: list[dict]) -> None:
    c = _container(docs, "felixpy-node")
    ds = chart.find(docs, "DaemonSet", "felixpy-node")
    rendered = next(x for x in kubelet.pod_spec(ds)["containers"] if x["name"] == "felixpy-node")
    assert [m.target for m in c.mounts] == [vm["mountPath"] for vm in rendered["volumeMounts"]]
    netns = next(m for m in c.mounts if m.target == "/var/run/netns")
    assert netns.propagation == "HostToContainer"
    ready = c.probes["readinessProbe"]
    assert (ready.kind, ready.port, ready.path) == (
        "httpGet", rendered["readinessProbe"]["httpGet"]["port"], "/readiness")


def test_a_missing_configmap_key_is_named() -> None:
    docs = [{"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}, "data": {"a": "1"}}]
    entries = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "b"}}}]
    with pytest.raises(kubelet.SpecError, match="env X: ConfigMap cm has no key 'b'"):
        kubelet.resolve_env(entries, docs, namespace="ns", node="n", pod="p", host_ip="", secrets={})


def test_command_replaces_the_image_entrypoint_and_args_replace_its_cmd() -> None:
    ds = {"kind": "DaemonSet", "metadata": {"name": "d", "namespace": "ns"},
          "spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["x"]}, {"name": "b"}]}}}}
    image = {"Entrypoint": ["/entry"], "Cmd": ["default"]}
    assert kubelet.container(ds, "a", [], node="n", host_ip="", image_config=image).argv == ["/entry", "x"]
    assert kubelet.container(ds, "b", [], node="n", host_ip="", image_config=image).argv == [
        "/entry", "default"]


def test_paths_resolve_inside_the_image_not_on_the_machine(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "up").symlink_to("../../../..")
    assert within(tmp_path, "/var/run/felixpy") == "run/felixpy"
    assert within(tmp_path, "/var/run/secrets/kubernetes.io/serviceaccount") == (
        "run/secrets/kubernetes.io/serviceaccount")
    assert within(tmp_path, "/etc/up/etc/passwd") == "etc/passwd"
    assert within(tmp_path, "/../../x") == "x"
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="too many symbolic links"):
        within(tmp_path, "/loop/x")


def test_host_runnable_tells_static_from_dynamic_and_scripts(tmp_path: Path) -> None:
    """On a host root with nothing in it: a static binary runs, a dynamic one or a script does not."""
    from felixpy.cni import forwarder

    try:
        static = forwarder.binary("felixpy-cni")
    except forwarder.ForwarderMissing as exc:
        pytest.skip(str(exc))
    host = HostRoot(tmp_path / "host")
    (host.path / "bin").mkdir(parents=True)
    for name, src in (("static", static), ("dynamic", Path("/bin/ls"))):
        shutil.copyfile(src, host.path / "bin" / name)
    script = host.path / "bin" / "script"
    script.write_text("#!/opt/felixpy/venv/bin/python3 -IS\nprint()\n")
    assert host_runnable(host, host.path / "bin" / "static") is None
    dynamic = host_runnable(host, host.path / "bin" / "dynamic") or ""
    assert "dynamically linked against /lib64/ld-linux" in dynamic
    assert host_runnable(host, script) == (
        "it is a script for /opt/felixpy/venv/bin/python3, which the host does not have")
    # Given the interpreter on the host, the script is runnable.
    (host.path / "opt/felixpy/venv/bin").mkdir(parents=True)
    (host.path / "opt/felixpy/venv/bin/python3").touch()
    assert host_runnable(host, script) is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_api_certificate_is_for_its_address_and_signed_by_the_cluster_ca(tmp_path: Path) -> None:
    ca, crt, _ = apiserver.make_tls(tmp_path, "10.98.0.2")
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(crt)], capture_output=True,
                            text=True, timeout=30, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-text"], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    assert "IP Address:10.98.0.2" in text


def test_the_api_is_preloaded_as_a_cluster_is_when_the_daemonset_starts(docs: list[dict]) -> None:
    objects = apiserver.cluster_objects(docs, {"node1": "10.99.1.10"}, {"web": "node1"}, "kube-system")
    by_resource: dict[str, list[dict]] = {}
    for o in objects:
        by_resource.setdefault(o["resource"], []).append(o)
    assert [o["object"]["metadata"]["name"] for o in by_resource["namespaces"]] == ["default", "kube-system"]
    assert by_resource["nodes"][0]["object"]["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.99.1.10"}]
    assert by_resource["pods"][0]["object"]["spec"]["nodeName"] == "node1"
    # With the Kubernetes datastore the chart's BGP resources are CRD objects helm applies: preloaded.
    kube_docs = chart.render({})
    crs = apiserver.cluster_objects(kube_docs, {}, {}, "kube-system")
    assert [(o["resource"], o["object"]["metadata"]["name"]) for o in crs if "crd" in o["resource"]] == [
        ("bgpconfigurations.crd.projectcalico.org", "default")]


def test_the_machines_own_paths_are_bound_as_they_are_and_an_absent_one_is_an_empty_host_directory(
    tmp_path: Path,
) -> None:
    """/lib/modules and the netns directory are the real machine's; a machine with no /lib/modules
    (session 11's had none, and every DaemonSet test failed with ``special device /lib/modules does not
    exist``) gives the node an empty directory beside its host root instead."""
    from tests.e2e.kubelet import Mount
    from tests.e2e.runtime import REAL_FROM_MACHINE

    host = HostRoot(tmp_path / "host")
    for path in REAL_FROM_MACHINE:
        src = host.prepare(Mount(target=path, host_path=path, host_type="", read_only=True, propagation=""))
        if Path(path).exists():
            assert src == Path(path)
        else:
            assert src == tmp_path / "host-machine" / path.strip("/")
            assert src.is_dir() and not any(src.iterdir())
            assert not (host.path / path.lstrip("/")).exists()  # the host root keeps no /lib of its own
    with pytest.raises(FileNotFoundError, match="does not exist on the node"):
        host.prepare(Mount(target="/x", host_path="/not/there", host_type="", read_only=True, propagation=""))
