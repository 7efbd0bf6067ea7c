"""What a kubelet derives from a rendered pod spec before it asks the runtime to start a container.

Pure: from the chart's rendered objects and the node's name, the container's argv (``command`` +
``args``, else the image's entrypoint and cmd), its environment (the image's, then the container's
``env`` with ``value``, ``fieldRef``, ``configMapKeyRef`` and ``secretKeyRef`` resolved against the
rendered ConfigMaps and the given Secrets), its mounts (each ``volumeMount`` joined to its pod
``volume``), and its probes. The test's runtime (tests/e2e/runtime.py) does the side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# hostPath types a kubelet creates when absent; others must exist.
CREATES = {"DirectoryOrCreate": "dir", "FileOrCreate": "file"}


class SpecError(Exception):
    """The rendered spec asks for something this emulation (or a kubelet) cannot provide."""


@dataclass(frozen=True)
class Mount:
    target: str                  # mountPath in the container
    host_path: str | None        # hostPath volumes: the node's path
    host_type: str               # "" | Directory | DirectoryOrCreate | File | FileOrCreate | ...
    read_only: bool
    propagation: str             # None | HostToContainer | Bidirectional
    secret: str | None = None    # secret volumes: the Secret's name


@dataclass(frozen=True)
class Probe:
    kind: str                    # "httpGet" | "exec" | "tcpSocket"
    host: str = ""
    port: int = 0
    path: str = ""
    scheme: str = "HTTP"
    command: tuple[str, ...] = ()
    timeout: int = 1


@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount]
    privileged: bool
    probes: dict[str, Probe] = field(default_factory=dict)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _config_map(docs: list[dict[str, Any]], namespace: str, name: str) -> dict[str, str]:
    for d in docs:
        meta = d.get("metadata", {})
        if d.get("kind") == "ConfigMap" and meta.get("name") == name and meta.get("namespace") == namespace:
            return {str(k): str(v) for k, v in (d.get("data") or {}).items()}
    raise SpecError(f"ConfigMap {namespace}/{name} is not in the rendered chart")


def _field_ref(path: str, *, node: str, pod: str, namespace: str, host_ip: str) -> str:
    values = {
        "spec.nodeName": node,
        "metadata.name": pod,
        "metadata.namespace": namespace,
        "status.hostIP": host_ip,
        "status.podIP": host_ip,  # hostNetwork: the pod's IP is the node's
    }
    if path not in values:
        raise SpecError(f"fieldRef {path!r} is not one this emulation resolves")
    return values[path]


def resolve_env(
    entries: list[dict[str, Any]], docs: list[dict[str, Any]], *, namespace: str, node: str, pod: str,
    host_ip: str, secrets: dict[str, dict[str, str]],
) -> dict[str, str]:
    """A container's ``env`` as the kubelet hands it to the runtime (later entries win)."""
    env: dict[str, str] = {}
    for e in entries:
        name = e["name"]
        if "value" in e:
            env[name] = str(e["value"])
            continue
        src = e.get("valueFrom") or {}
        if "fieldRef" in src:
            env[name] = _field_ref(src["fieldRef"]["fieldPath"], node=node, pod=pod, namespace=namespace,
                                   host_ip=host_ip)
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            data = _config_map(docs, namespace, ref["name"])
            if ref["key"] not in data:
                raise SpecError(f"env {name}: ConfigMap {ref['name']} has no key {ref['key']!r}")
            env[name] = data[ref["key"]]
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            try:
                env[name] = secrets[ref["name"]][ref["key"]]
            except KeyError as missing:
                raise SpecError(f"env {name}: Secret {ref['name']} key {ref['key']} not given") from missing
        else:
            env[name] = ""
    return env


def mounts(container: dict[str, Any], spec: dict[str, Any]) -> list[Mount]:
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    out = []
    for vm in container.get("volumeMounts") or []:
        vol = volumes.get(vm["name"])
        if vol is None:
            raise SpecError(f"volumeMount {vm['name']!r} names no volume of the pod")
        common = {
            "target": vm["mountPath"],
            "read_only": bool(vm.get("readOnly", False)),
            "propagation": vm.get("mountPropagation", "None"),
        }
        if "hostPath" in vol:
            hp = vol["hostPath"]
            out.append(Mount(host_path=hp["path"], host_type=hp.get("type", ""), **common))
        elif "secret" in vol:
            out.append(Mount(host_path=None, host_type="", secret=vol["secret"]["secretName"], **common))
        else:
            raise SpecError(f"volume {vm['name']!r}: only hostPath and secret volumes are emulated")
    return out


def probe(raw: dict[str, Any]) -> Probe:
    timeout = int(raw.get("timeoutSeconds", 1))
    if "httpGet" in raw:
        h = raw["httpGet"]
        return Probe(kind="httpGet", host=h.get("host", ""), port=int(h["port"]), path=h.get("path", "/"),
                     scheme=h.get("scheme", "HTTP"), timeout=timeout)
    if "exec" in raw:
        return Probe(kind="exec", command=tuple(raw["exec"]["command"]), timeout=timeout)
    if "tcpSocket" in raw:
        t = raw["tcpSocket"]
        return Probe(kind="tcpSocket", host=t.get("host", ""), port=int(t["port"]), timeout=timeout)
    raise SpecError(f"probe {sorted(raw)} is of no kind this emulation runs")


def container(
    workload: dict[str, Any], name: str, docs: list[dict[str, Any]], *, node: str, host_ip: str,
    image_config: dict[str, Any], secrets: dict[str, dict[str, str]] | None = None,
    service_env: dict[str, str] | None = None,
) -> Container:
    """The container ``name`` (init or regular) of ``workload`` as its node's kubelet would run it."""
    spec = pod_spec(workload)
    everything = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    found = [c for c in everything if c["name"] == name]
    if not found:
        raise SpecError(f"{workload['kind']} {workload['metadata']['name']} has no container {name!r}")
    c = found[0]
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    # Kubernetes: command replaces the entrypoint (and drops the image's cmd); args replace cmd.
    argv = list(c["command"]) + list(c.get("args") or []) if "command" in c else entrypoint + list(
        c.get("args", cmd))
    if not argv:
        raise SpecError(f"container {name!r} has no command and the image no entrypoint or cmd")
    env = dict(kv.split("=", 1) for kv in image_config.get("Env") or [])
    # The kubelet's service variables (KUBERNETES_SERVICE_HOST/PORT: how in-cluster clients find the API).
    env.update(service_env or {})
    pod_name = f"{workload['metadata']['name']}-{node}"
    env.update(resolve_env(c.get("env") or [], docs, namespace=workload["metadata"]["namespace"], node=node,
                           pod=pod_name, host_ip=host_ip, secrets=secrets or {}))
    probes = {k: probe(c[k]) for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c}
    return Container(
        name=name, argv=argv, env=env, mounts=mounts(c, spec),
        privileged=bool((c.get("securityContext") or {}).get("privileged")), probes=probes,
    )
