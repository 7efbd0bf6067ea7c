"""Pods and namespaces: a pod is a network namespace wired by the real ``felixpy-cni``.

``pod add`` does what a container runtime does: create the sandbox namespace, then run the
plugin binary (inside the node's namespace, as the node's kubelet would) with the CNI
environment and the network configuration on stdin, and read the result for the pod's IP.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from felixpy.lab import ctl, manifests, ports, state, topology
from felixpy.lab.layout import NETNS_DIR, LabError, LabNames
from felixpy.lab.ports import NamedPort
from felixpy.lab.procs import lab_env, spawn, stop
from felixpy.lab.shell import TIME_SCALE, in_netns, run
from felixpy.lab.state import LabState, PodRecord
from felixpy.private_files import private_dir

CNI_VERSION = "1.0.0"
NETWORK = "k8s-pod-network"
CNI_TIMEOUT = 50  # the plugin's own bound on the agent's answer; ours is a little longer


def parse_pod_ref(ref: str) -> tuple[str, str]:
    """``NS/NAME`` -> (ns, name); a bare ``NAME`` is in ``default``."""
    ns, _, name = ref.rpartition("/")
    ns = ns or "default"
    for part in (ns, name):
        if not part or not all(c.isalnum() or c in "-." for c in part) or len(part) > 40:
            raise LabError(f"bad pod reference {ref!r}: want NS/NAME (letters, digits, '-', '.')")
    return ns, name


def parse_labels(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict."""
    labels = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabError(f"bad label {item!r}: want key=value")
        labels[key] = value
    return labels


def container_id(names: LabNames, ns: str, name: str) -> str:
    return f"{names.name}-{ns}-{name}"


def network_config(names: LabNames, st: LabState, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "felixpy",
        "run_dir": str(names.node_dir(node)),
        "datastore_type": "etcdv3",
        "etcd_endpoints": st.plan.etcd_endpoint,
        "nodename": node,
        "ipam": {"type": "felixpy-ipam"},
        "policy": {"type": "k8s"},
        "runtimeConfig": {"labels": labels},
        "timeout_seconds": CNI_TIMEOUT * TIME_SCALE,  # the VM stage's TCG: the agent answers slower
    }


def cni_plugin(names: LabNames) -> Path:
    """The plugin as a node has it after `felixpy install-cni`: the static forwarder, type ``felixpy``."""
    target = names.run_dir / "cni-bin" / "felixpy"
    if not target.exists():
        from felixpy.kube import install_cni  # once per lab; kept off every command's start-up

        private_dir(target.parent)
        for plugin in install_cni.install_own_plugins(target.parent):
            plugin.chmod(0o700)  # run by root, as a runtime does; nothing in the lab is world-readable
    return target


def _cni(names: LabNames, st: LabState, pod: PodRecord, command: str) -> dict[str, Any]:
    """Run the CNI plugin's COMMAND for ``pod`` inside its node's namespace; return its JSON."""
    plugin = str(cni_plugin(names))
    labels_arg = ",".join(f"{k}={v}" for k, v in pod.labels.items())
    env = lab_env(names, {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": pod.container_id,
        "CNI_NETNS": str(NETNS_DIR / pod.netns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{Path(plugin).parent}:/usr/lib/cni",
        "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
                     f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id};K8S_POD_LABELS={labels_arg}"),
        "FELIXPY_RUN_DIR": str(names.node_dir(pod.node)),
    })
    config = network_config(names, st, pod.node, pod.labels)
    node_ns = st.plan.node(pod.node).netns
    proc = run(in_netns(node_ns, plugin), input=json.dumps(config), env=env, timeout=CNI_TIMEOUT + 10,
               check=False)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError as exc:
        detail = f"{proc.stdout[:200]!r} {proc.stderr[:200]!r}"
        raise LabError(f"CNI {command} printed non-JSON: {detail}") from exc
    if proc.returncode != 0:
        raise LabError(f"CNI {command} for {pod.namespace}/{pod.name} failed: {out or proc.stderr.strip()}")
    return out


def _pod_ip(result: dict[str, Any]) -> str:
    for ip in result.get("ips", []):
        addr = str(ip.get("address", ""))
        if "." in addr:
            return addr.split("/", 1)[0]
    raise LabError(f"CNI result has no IPv4 address: {result}")


def _new_pod(names: LabNames, ns: str, name: str, node: str, labels: dict[str, str]) -> PodRecord:
    with state.locked(names):
        st = state.load(names)
        plan_node = st.plan.node(node)
        if plan_node.role != "node":
            raise LabError(f"{node} is a route reflector: it runs no workloads")
        if st.pod(ns, name) is not None:
            raise LabError(f"pod {ns}/{name} already exists")
        pod = PodRecord(namespace=ns, name=name, node=node, netns=names.pod(ns, name), labels=labels,
                        container_id=container_id(names, ns, name))
        st.pods.append(pod)
        state.save(names, st)
    return pod


def add(
    names: LabNames, ref: str, *, node: str, labels: dict[str, str], serve: list[int],
    named_ports: list[NamedPort] | None = None,
) -> PodRecord:
    """Create the pod's namespace, run CNI ADD, publish its named ports, start responders."""
    ns, name = parse_pod_ref(ref)
    pod = _new_pod(names, ns, name, node, labels)
    try:
        topology.create_netns(pod.netns)
        pod.ip = _pod_ip(_cni(names, state.load(names), pod, "ADD"))
    except LabError:
        _forget(names, pod)
        raise
    if named_ports:
        _publish_ports(names, pod, named_ports)
    pod.serve = serve
    responder = _start_responder(names, pod) if serve else None
    with state.locked(names):
        st = state.load(names)
        st.pods = [pod if (p.namespace, p.name) == (ns, name) else p for p in st.pods]
        if responder is not None:
            st.processes.append(responder)
        state.save(names, st)
    return pod


def _publish_ports(names: LabNames, pod: PodRecord, named_ports: list[NamedPort]) -> None:
    """Put the ports on the pod's WorkloadEndpoint; on failure undo the pod (CNI DEL, forget)."""
    st = state.load(names)
    try:
        ports.publish(names, st.plan.etcd_endpoint, namespace=pod.namespace, pod=pod.name, node=pod.node,
                      ports=named_ports)
    except LabError:
        try:
            _cni(names, st, pod, "DEL")
        finally:
            _forget(names, pod)
        raise
    pod.ports = [p.to_json() for p in named_ports]


def _forget(names: LabNames, pod: PodRecord) -> None:
    """Undo a failed add: namespace and record."""
    topology.delete_netns(pod.netns)
    with state.locked(names):
        st = state.load(names)
        st.pods = [p for p in st.pods if (p.namespace, p.name) != (pod.namespace, pod.name)]
        state.save(names, st)


def _start_responder(names: LabNames, pod: PodRecord) -> state.ProcRecord:
    ports = ",".join(str(p) for p in pod.serve)
    argv = [sys.executable, "-m", "felixpy.lab.responder", "--ports", ports]
    log = names.pod_dir(pod.namespace, pod.name) / "responder.log"
    rec = spawn(names, role=f"responder:{pod.namespace}/{pod.name}", netns=pod.netns, argv=argv, log=log)
    return rec


def delete(names: LabNames, ref: str) -> None:
    """Stop the pod's processes, CNI DEL, then delete its namespace and forget it.

    A failed DEL (the agent down, say) keeps the pod, marked ``deleting``, with its namespace, as a
    container runtime keeps a sandbox whose network teardown failed: :class:`LabError` says so, and
    the next ``pod del`` of it retries the DEL.
    """
    ns, name = parse_pod_ref(ref)
    st = state.load(names)
    pod = st.pod(ns, name)
    if pod is None:
        raise LabError(f"no pod {ns}/{name}")
    role = f"responder:{ns}/{name}"
    stop([p.pid for p in st.processes if p.role == role])
    try:
        _cni(names, st, pod, "DEL")
    except LabError as exc:
        _update(names, ns, name, role, keep=True)
        raise LabError(
            f"{exc}; pod {ns}/{name} is kept (marked deleting, its namespace too): "
            f"run 'felixpy-lab pod del {ns}/{name}' again to retry"
        ) from exc
    topology.delete_netns(pod.netns)
    _update(names, ns, name, role, keep=False)


def _update(names: LabNames, ns: str, name: str, role: str, *, keep: bool) -> None:
    """Forget the pod's processes; mark the pod deleting (``keep``) or forget it too."""
    with state.locked(names):
        st = state.load(names)
        if keep:
            for p in st.pods:
                if (p.namespace, p.name) == (ns, name):
                    p.deleting, p.serve = True, []
        else:
            st.pods = [p for p in st.pods if (p.namespace, p.name) != (ns, name)]
        st.processes = [p for p in st.processes if p.role != role]
        state.save(names, st)


def add_namespace(names: LabNames, name: str, labels: dict[str, str]) -> None:
    """Write a ``v1 Namespace`` with ``labels`` to the datastore; remember it in the state."""
    st = state.load(names)
    ctl.apply(names, st.plan.etcd_endpoint, [manifests.namespace(name, labels)])
    with state.locked(names):
        st = state.load(names)
        st.namespaces[name] = labels
        state.save(names, st)
