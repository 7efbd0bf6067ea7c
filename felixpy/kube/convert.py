"""Kubernetes objects ↔ felixpy resources, as Calico's Kubernetes datastore maps them (pure).

- Pod → WorkloadEndpoint: node, IPs (the CNI plugin's `cni.projectcalico.org/podIP(s)` annotations,
  else the pod status), labels plus `projectcalico.org/namespace|orchestrator|serviceaccount`, named
  container ports, profiles `kns.<ns>` and `ksa.<ns>.<sa>`, the `cali` interface name,
  `allowSpoofedSourcePrefixes` from `cni.projectcalico.org/allowedSourcePrefixes` (a JSON list of
  CIDRs, host bits dropped as Calico does; one that does not parse makes none: Calico rejects the
  pod, felixpy keeps it with no exception to the anti-spoofing check). Host-network pods, pods with
  no IP and finished pods are not endpoints.
- Node ↔ Node: BGP fields in `projectcalico.org/*` annotations, labels as they are.
- Namespace, networking.k8s.io/v1 NetworkPolicy: the same shape in both worlds.
- Namespace → Profile ``kns.<ns>`` (ingress and egress Allow; labelsToApply ``pcns.<key>`` of the
  namespace's labels and ``pcns.projectcalico.org/name: <ns>``), ServiceAccount → Profile
  ``ksa.<ns>.<sa>`` (no rules; labelsToApply ``pcsa.<key>`` and ``pcsa.projectcalico.org/name: <sa>``),
  and the static ``projectcalico-default-allow``: generated, read-only (Calico's backend synthesises
  them the same way; the label prefixes are the ones ``policy.entities`` gives endpoints).
- Calico kinds: stored as `crd.projectcalico.org/v1` objects with the v3 spec unchanged.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

from felixpy.dataplane.iface_names import veth_name_for_workload
from felixpy.resources.base import Resource
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace, ServiceAccount
from felixpy.resources.name_rules import wep_name
from felixpy.resources.node import Node
from felixpy.resources.stored import Profile

CRD_API_VERSION = "crd.projectcalico.org/v1"
V3 = "projectcalico.org/v3"

ANN_POD_IP = "cni.projectcalico.org/podIP"
ANN_POD_IPS = "cni.projectcalico.org/podIPs"
ANN_CONTAINER_ID = "cni.projectcalico.org/containerID"
ANN_ALLOWED_SOURCES = "cni.projectcalico.org/allowedSourcePrefixes"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCH = "projectcalico.org/orchestrator"
LABEL_SA = "projectcalico.org/serviceaccount"

# Node.spec field (dotted, wire names) ↔ Kubernetes Node annotation.
NODE_ANNOTATIONS = {
    "bgp.ipv4Address": "projectcalico.org/IPv4Address",
    "bgp.ipv6Address": "projectcalico.org/IPv6Address",
    "bgp.asNumber": "projectcalico.org/ASNumber",
    "bgp.ipv4IPIPTunnelAddr": "projectcalico.org/IPv4IPIPTunnelAddr",
    "bgp.routeReflectorClusterID": "projectcalico.org/RouteReflectorClusterID",
    "ipv4VXLANTunnelAddr": "projectcalico.org/IPv4VXLANTunnelAddr",
    "vxlanTunnelMACAddr": "projectcalico.org/VXLANTunnelMACAddr",
    "wireguard.interfaceIPv4Address": "projectcalico.org/IPv4WireguardInterfaceAddr",
    "wireguard.interfaceIPv6Address": "projectcalico.org/IPv6WireguardInterfaceAddr",
}
# Node.status field ↔ annotation: the WireGuard public keys each node's agent publishes (Calico's
# KDD storage, reference wave 2 §2.2)
NODE_STATUS_ANNOTATIONS = {
    "wireguardPublicKey": "projectcalico.org/WireguardPublicKey",
    "wireguardPublicKeyV6": "projectcalico.org/WireguardPublicKeyV6",
}


def _pod_ips(pod: dict[str, Any]) -> list[str]:
    ann = pod.get("metadata", {}).get("annotations") or {}
    if ann.get(ANN_POD_IPS):
        raw = [a.strip() for a in ann[ANN_POD_IPS].split(",") if a.strip()]
    elif ann.get(ANN_POD_IP):
        raw = [ann[ANN_POD_IP].strip()]
    else:
        status = pod.get("status") or {}
        raw = [p["ip"] for p in status.get("podIPs") or [] if p.get("ip")] or (
            [status["podIP"]] if status.get("podIP") else []
        )
    out = []
    for addr in raw:
        if "/" not in addr:
            addr += "/128" if ":" in addr else "/32"
        out.append(addr)
    return out


def _allowed_sources(pod: dict[str, Any]) -> list[str]:
    text = (pod.get("metadata", {}).get("annotations") or {}).get(ANN_ALLOWED_SOURCES)
    if not text:
        return []
    try:
        prefixes = json.loads(text)
        if not isinstance(prefixes, list) or not all(isinstance(p, str) and "/" in p for p in prefixes):
            return []
        return [str(ipaddress.ip_network(p.strip(), strict=False)) for p in prefixes]
    except ValueError:  # bad JSON or a bad CIDR
        return []


def _named_ports(pod: dict[str, Any]) -> list[dict[str, Any]]:
    ports = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name"):
                ports.append(
                    {"name": p["name"], "protocol": p.get("protocol", "TCP"), "port": p["containerPort"]}
                )
    return ports


def pod_is_endpoint(pod: dict[str, Any]) -> bool:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or not spec.get("nodeName"):
        return False
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    return bool(_pod_ips(pod))


def pod_to_wep(pod: dict[str, Any], *, interface_prefix: str = "cali") -> WorkloadEndpoint | None:
    """The WorkloadEndpoint a Pod stands for, or None when the pod is not a Calico endpoint."""
    if not pod_is_endpoint(pod):
        return None
    meta, spec = pod["metadata"], pod["spec"]
    ns, name, node = meta.get("namespace", "default"), meta["name"], spec["nodeName"]
    sa = spec.get("serviceAccountName") or "default"
    labels = dict(meta.get("labels") or {}) | {LABEL_NAMESPACE: ns, LABEL_ORCH: "k8s"}
    if len(sa) < 63:
        labels[LABEL_SA] = sa
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": wep_name(node, "k8s", name, "eth0"),
                "namespace": ns,
                "labels": labels,
                "resourceVersion": meta.get("resourceVersion"),
                "uid": meta.get("uid"),
            },
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": name,
                "endpoint": "eth0",
                "containerID": (meta.get("annotations") or {}).get(ANN_CONTAINER_ID),
                "serviceAccountName": sa,
                "ipNetworks": _pod_ips(pod),
                "interfaceName": veth_name_for_workload(ns, name, prefix=interface_prefix),
                "profiles": [f"kns.{ns}", f"ksa.{ns}.{sa}"],
                "ports": _named_ports(pod),
                "allowSpoofedSourcePrefixes": _allowed_sources(pod),
            },
        }
    )


def wep_to_pod_patch(wep: WorkloadEndpoint) -> dict[str, Any]:
    """The merge patch the CNI path writes on the Pod (Calico's annotations) instead of storing a WEP."""
    ips = [n.split("/")[0] for n in wep.spec.ip_networks]
    annotations: dict[str, str | None] = {
        ANN_POD_IP: ips[0] if ips else None,
        ANN_POD_IPS: ",".join(ips) if ips else None,
        ANN_CONTAINER_ID: wep.spec.container_id,
    }
    return {"metadata": {"annotations": annotations}}


def _get_dotted(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def _set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def k8s_node_to_node(obj: dict[str, Any]) -> Node:
    meta = obj["metadata"]
    ann = meta.get("annotations") or {}
    spec: dict[str, Any] = {}
    for field, key in NODE_ANNOTATIONS.items():
        if ann.get(key):
            _set_dotted(spec, field, ann[key])
    addresses = (obj.get("status") or {}).get("addresses") or []
    spec["addresses"] = [{"address": a["address"], "type": a.get("type")} for a in addresses]
    spec["orchRefs"] = [{"nodeName": meta["name"], "orchestrator": "k8s"}]
    doc: dict[str, Any] = {
        "metadata": {
            "name": meta["name"],
            "labels": meta.get("labels") or {},
            "resourceVersion": meta.get("resourceVersion"),
            "uid": meta.get("uid"),
        },
        "spec": spec,
    }
    status = {field: ann[key] for field, key in NODE_STATUS_ANNOTATIONS.items() if ann.get(key)}
    if status:
        doc["status"] = status
    return Node.model_validate(doc)


def node_to_k8s_patch(node: Node) -> dict[str, Any]:
    """Merge patch writing the Node's BGP and WireGuard fields as annotations (absent fields removed)
    and its labels."""
    doc = node.to_dict()
    spec, status = doc.get("spec", {}), doc.get("status") or {}
    annotations = {key: _str_or_none(_get_dotted(spec, field)) for field, key in NODE_ANNOTATIONS.items()}
    annotations |= {key: status.get(field) or None for field, key in NODE_STATUS_ANNOTATIONS.items()}
    return {"metadata": {"annotations": annotations, "labels": dict(node.metadata.labels)}}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


PROFILE_NS_PREFIX = "pcns."  # = policy.entities.NAMESPACE_PREFIX (a test keeps them equal)
PROFILE_SA_PREFIX = "pcsa."  # = policy.entities.SERVICE_ACCOUNT_PREFIX
PROFILE_NAME_LABEL = "projectcalico.org/name"
NAMESPACE_PROFILE_PREFIX = "kns."
SA_PROFILE_PREFIX = "ksa."
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"
_ALLOW_ALL = [{"action": "Allow"}]


def _profile(name: str, source: Resource | None, spec: dict[str, Any]) -> Profile:
    meta: dict[str, Any] = {"name": name}
    if source is not None:
        src = source.metadata
        meta |= {k: v for k, v in (("uid", src.uid), ("resourceVersion", src.resource_version)) if v}
        if src.creation_timestamp:
            meta["creationTimestamp"] = src.creation_timestamp
    return Profile.model_validate({"apiVersion": V3, "kind": "Profile", "metadata": meta, "spec": spec})


def namespace_profile(ns: Namespace) -> Profile:
    """The ``kns.<ns>`` profile of a Namespace: allow all, its labels re-prefixed."""
    labels = {PROFILE_NS_PREFIX + k: v for k, v in ns.metadata.labels.items()}
    labels[PROFILE_NS_PREFIX + PROFILE_NAME_LABEL] = ns.name
    spec = {"ingress": _ALLOW_ALL, "egress": _ALLOW_ALL, "labelsToApply": labels}
    return _profile(NAMESPACE_PROFILE_PREFIX + ns.name, ns, spec)


def service_account_profile(sa: ServiceAccount) -> Profile:
    """The ``ksa.<ns>.<sa>`` profile of a ServiceAccount: no rules, its labels re-prefixed."""
    labels = {PROFILE_SA_PREFIX + k: v for k, v in sa.metadata.labels.items()}
    labels[PROFILE_SA_PREFIX + PROFILE_NAME_LABEL] = sa.name
    return _profile(f"{SA_PROFILE_PREFIX}{sa.namespace}.{sa.name}", sa, {"labelsToApply": labels})


def default_allow_profile() -> Profile:
    return _profile(DEFAULT_ALLOW_PROFILE, None, {"ingress": _ALLOW_ALL, "egress": _ALLOW_ALL})


def crd_to_resource(kind: type[Resource], obj: dict[str, Any]) -> Resource:
    """A crd.projectcalico.org/v1 object (or a native Namespace / NetworkPolicy) as its felixpy model."""
    data = copy.deepcopy(obj)
    data["apiVersion"] = kind.API_VERSION
    meta = data.setdefault("metadata", {})
    keep = (
        "name",
        "namespace",
        "labels",
        "annotations",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
    )
    data["metadata"] = {k: v for k, v in meta.items() if k in keep and v is not None}
    if "status" not in kind.model_fields:  # kinds with a status (CalicoNodeStatus) keep it
        data.pop("status", None)
    if kind is Namespace:
        data["spec"] = {k: v for k, v in (obj.get("spec") or {}).items() if k == "finalizers"}
    if kind is ServiceAccount:  # name and labels only: its secrets and token settings are not ours
        data = {k: data[k] for k in ("apiVersion", "kind", "metadata") if k in data}
    return kind.model_validate(data)


def resource_to_crd(obj: Resource) -> dict[str, Any]:
    """The object to store for a felixpy resource: Calico kinds under crd.projectcalico.org/v1."""
    data = obj.to_dict()
    if data.get("apiVersion") == V3:
        data["apiVersion"] = CRD_API_VERSION
    meta = data.setdefault("metadata", {})
    for empty in ("labels", "annotations"):
        if not meta.get(empty):
            meta.pop(empty, None)
    if not type(obj).NAMESPACED:
        meta.pop("namespace", None)
    return data


def is_native(kind: type[Resource]) -> bool:
    """Kinds that are plain Kubernetes objects in this mode (not CRDs)."""
    return kind in (WorkloadEndpoint, Node, Namespace, K8sNetworkPolicy)
