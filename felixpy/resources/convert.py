"""What ``felixctl convert`` converts, as calicoctl convert does: pure functions, dict in, dicts out.

- Calico API v1 documents (``apiVersion: v1``, calicoctl 1.x/2.x kinds) → projectcalico.org/v3:
  ``ipPool`` (name from the CIDR, ``10.1.0.0/16`` → ``10-1-0-0-16``; ``ipip.enabled``/``mode`` →
  ``ipipMode`` Always | CrossSubnet | Never; ``nat-outgoing`` → ``natOutgoing``), ``policy`` (→
  GlobalNetworkPolicy: v1 policies were cluster-wide), ``profile`` (rules; ``labels`` →
  ``labelsToApply``; v1 tags have no v3 form and are refused by name), ``bgpPeer`` (``scope: global`` →
  a global peer, ``scope: node`` → a peer with ``node``), ``hostEndpoint``, ``node`` (the name
  normalised as Calico's upgrade does: lower case, other characters than ``[-.a-z0-9]`` → ``-``;
  ``bgp`` addresses, AS number, ``orchRefs``) and ``workloadEndpoint`` (named
  ``<node>-<orchestrator>-<pod|containerID|workload>-<endpoint>``; a ``k8s`` workload ID
  ``<namespace>.<pod>`` gives the namespace and pod, ``activeInstanceID`` the container ID;
  ``k8s_ns.<ns>`` profiles → ``kns.<ns>``, label ``calico/k8s_ns`` → ``projectcalico.org/namespace``;
  names changed by normalising get Calico's 8-hex-digit SHA-1 suffix). Rule fields are renamed as
  v3 spells them (``!selector`` → ``notSelector``, ``net`` → ``nets``, actions and protocols
  capitalised, ``next-tier`` → ``Pass``).
- Kubernetes ``networking.k8s.io/v1`` NetworkPolicy → Calico NetworkPolicy ``knp.default.<name>``,
  order 1000, selectors as Calico writes them (``projectcalico.org/orchestrator == 'k8s'`` first in a
  pod selector; an empty namespace selector is ``all()``), one rule per peer, ports kept together.
- projectcalico.org/v3 documents pass through unchanged.

Anything else raises ConvertError naming the document, the field and the reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from felixpy.resources.name_rules import wep_name

V3 = "projectcalico.org/v3"
K8S_POLICY_ORDER = 1000.0
K8S_POLICY_PREFIX = "knp.default."
ORCHESTRATOR = "projectcalico.org/orchestrator == 'k8s'"
_ACTIONS = {"allow": "Allow", "deny": "Deny", "log": "Log", "pass": "Pass", "next-tier": "Pass"}
_PROTOCOLS = {
    "tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "ICMPv6", "sctp": "SCTP", "udplite": "UDPLite",
}  # fmt: skip
_IPIP_MODES = {"always": "Always", "cross-subnet": "CrossSubnet", "": "Always"}
_POLICY_FIELDS = {
    "ingress", "egress", "order", "selector", "doNotTrack", "preDNAT", "applyOnForward", "types",
}  # fmt: skip
_V1_KINDS = ("ipPool", "policy", "profile", "bgpPeer", "hostEndpoint", "node", "workloadEndpoint")


class ConvertError(ValueError):
    def __init__(self, reason: str, *, field: str = ""):
        self.reason = reason
        self.field = field
        super().__init__(f"field '{field}': {reason}" if field else reason)


def convert(doc: Any) -> dict[str, Any]:
    """One input document → its v3 form (a dict for felixpy.resources.parse to validate)."""
    if not isinstance(doc, dict):
        raise ConvertError(f"a resource must be a mapping, not {type(doc).__name__}")
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if api == V3:
        return doc
    if api == "networking.k8s.io/v1" and kind == "NetworkPolicy":
        return k8s_network_policy(doc)
    if api == "v1":
        if kind not in _V1_KINDS:
            raise ConvertError(
                f"v1 kind {kind!r} cannot be converted (convertible: {', '.join(_V1_KINDS)})", field="kind"
            )
        return _V1[str(kind)](doc)
    raise ConvertError(
        f"'{api}' {kind} is not a convertible resource (Calico v1, networking.k8s.io/v1 NetworkPolicy "
        f"or projectcalico.org/v3)",
        field="apiVersion",
    )


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ConvertError("must be a mapping", field="metadata")
    return meta


def _spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConvertError("must be a mapping", field="spec")
    return spec


def _v3(kind: str, metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": kind, "metadata": metadata, "spec": spec}


def name_from_cidr(cidr: str) -> str:
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-").strip("-").lower()


# ---- Calico v1 ---------------------------------------------------------------------------------------
def _ip_pool(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    cidr = meta.get("cidr")
    if not isinstance(cidr, str):
        raise ConvertError("required: the pool's CIDR", field="metadata.cidr")
    ipip = spec.get("ipip") or {}
    mode = "Never"
    if ipip.get("enabled"):
        found = _IPIP_MODES.get(str(ipip.get("mode") or ""))
        if found is None:
            raise ConvertError(f"unknown mode {ipip.get('mode')!r} (always, cross-subnet)",
                               field="spec.ipip.mode")  # fmt: skip
        mode = found
    nat = bool(spec.get("nat-outgoing", False))
    out: dict[str, Any] = {"cidr": cidr, "ipipMode": mode, "natOutgoing": nat}
    if spec.get("disabled"):
        out["disabled"] = True
    return _v3("IPPool", {"name": name_from_cidr(cidr)}, out)


def _entity(side: Any, where: str) -> dict[str, Any]:
    if side is None:
        return {}
    if not isinstance(side, dict):
        raise ConvertError("must be a mapping", field=where)
    out: dict[str, Any] = {}
    for key, value in side.items():
        if key == "tag" or key == "!tag":
            raise ConvertError("v1 tags have no v3 form; use a label selector", field=f"{where}.{key}")
        if key in ("net", "!net"):
            out["notNets" if key.startswith("!") else "nets"] = [value]
        elif key in ("nets", "selector", "ports"):
            out[key] = value
        elif key == "!nets":
            out["notNets"] = value
        elif key == "!selector":
            out["notSelector"] = value
        elif key == "!ports":
            out["notPorts"] = value
        else:
            raise ConvertError("unknown v1 field", field=f"{where}.{key}")
    return out


def _protocol(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if value.lower() not in _PROTOCOLS:
            raise ConvertError(f"unknown protocol {value!r}", field=where)
        return _PROTOCOLS[value.lower()]
    return value


def _rule(rule: Any, where: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise ConvertError("must be a mapping", field=where)
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if key == "action":
            action = _ACTIONS.get(str(value).lower())
            if action is None:
                raise ConvertError(f"unknown action {value!r}", field=f"{where}.action")
            out["action"] = action
        elif key in ("protocol", "!protocol"):
            out["notProtocol" if key.startswith("!") else "protocol"] = _protocol(value, f"{where}.{key}")
        elif key in ("icmp", "!icmp"):
            out["notICMP" if key.startswith("!") else "icmp"] = value
        elif key in ("source", "destination"):
            out[key] = _entity(value, f"{where}.{key}")
        elif key == "ipVersion":
            out["ipVersion"] = value
        else:
            raise ConvertError("unknown v1 rule field", field=f"{where}.{key}")
    if "action" not in out:
        raise ConvertError("required", field=f"{where}.action")
    return out


def _rules(spec: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    rules = spec.get(direction) or []
    if not isinstance(rules, list):
        raise ConvertError("must be a list", field=f"spec.{direction}")
    return [_rule(r, f"spec.{direction}[{i}]") for i, r in enumerate(rules)]


def _policy(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    out: dict[str, Any] = {"ingress": _rules(spec, "ingress"), "egress": _rules(spec, "egress")}
    for key, new in (("order", "order"), ("selector", "selector"), ("doNotTrack", "doNotTrack"),
                     ("preDNAT", "preDNAT"), ("applyOnForward", "applyOnForward")):  # fmt: skip
        if key in spec:
            out[new] = spec[key]
    if "types" in spec:
        out["types"] = [str(t).capitalize() for t in spec["types"]]
    unknown = set(spec) - _POLICY_FIELDS
    if unknown:
        raise ConvertError("unknown v1 policy field", field=f"spec.{sorted(unknown)[0]}")
    return _v3("GlobalNetworkPolicy", {"name": meta.get("name")}, out)


def _profile(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    if meta.get("tags"):
        raise ConvertError("v1 tags have no v3 form; label the endpoints instead", field="metadata.tags")
    out: dict[str, Any] = {"ingress": _rules(spec, "ingress"), "egress": _rules(spec, "egress")}
    if meta.get("labels"):
        out["labelsToApply"] = meta["labels"]
    return _v3("Profile", {"name": meta.get("name")}, out)


def _bgp_peer(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    ip, scope = meta.get("peerIP"), meta.get("scope", "global")
    if not isinstance(ip, str):
        raise ConvertError("required: the peer's address", field="metadata.peerIP")
    out: dict[str, Any] = {"peerIP": ip, "asNumber": spec.get("asNumber")}
    if scope == "node":
        node = meta.get("node")
        if not isinstance(node, str):
            raise ConvertError("required with scope: node", field="metadata.node")
        out["node"] = node
        name = f"{node}.{name_from_cidr(ip)}"
    elif scope == "global":
        name = f"bgppeer-global-{name_from_cidr(ip)}"
    else:
        raise ConvertError(f"unknown scope {scope!r} (global, node)", field="metadata.scope")
    return _v3("BGPPeer", {"name": name}, out)


def _host_endpoint(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    out: dict[str, Any] = {"node": meta.get("node")}
    for key in ("interfaceName", "expectedIPs", "profiles", "ports"):
        if key in spec:
            out[key] = spec[key]
    v3meta: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("labels"):
        v3meta["labels"] = meta["labels"]
    return _v3("HostEndpoint", v3meta, out)


_NON_NAME = re.compile(r"[^-.a-z0-9]+")
_DOT_DASH = re.compile(r"[.-]*[.][.-]*")


def normalize_name(name: str) -> str:
    """Calico's v1 → v3 name normalisation: lower case, '/' → '.', any other character outside
    ``[-.a-z0-9]`` → '-', a run of '.' and '-' holding a '.' → one '.', no leading/trailing '.' '-'."""
    name = _NON_NAME.sub("-", name.lower().replace("/", "."))
    return _DOT_DASH.sub(".", name).strip(".-")


def qualified_name(v1_name: str) -> str:
    """``normalize_name``, plus ``-<first 8 hex digits of SHA-1 of the v1 name>`` when it changed."""
    name = normalize_name(v1_name)
    if name == v1_name:
        return name
    return f"{name}-{hashlib.sha1(v1_name.encode()).hexdigest()[:8]}"  # Calico's name suffix


def _text(meta: dict[str, Any], key: str, where: str, why: str) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or not value:
        raise ConvertError(f"required: {why}", field=f"{where}.{key}")
    return value


def _node(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    name = normalize_name(_text(meta, "name", "metadata", "the node's name"))
    out: dict[str, Any] = {}
    bgp = spec.get("bgp")
    if bgp is not None:
        if not isinstance(bgp, dict):
            raise ConvertError("must be a mapping", field="spec.bgp")
        if not bgp.get("ipv4Address") and not bgp.get("ipv6Address"):
            raise ConvertError("needs ipv4Address or ipv6Address (as Calico's converter)", field="spec.bgp")
        out["bgp"] = {k: bgp[k] for k in ("ipv4Address", "ipv6Address", "asNumber") if bgp.get(k) is not None}
    refs = spec.get("orchRefs")
    if refs:
        if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
            raise ConvertError("must be a list of {nodeName, orchestrator}", field="spec.orchRefs")
        out["orchRefs"] = [{k: r[k] for k in ("nodeName", "orchestrator") if k in r} for r in refs]
    return _v3("Node", {"name": name}, out)


def _profile_name(v1_name: str) -> str:
    if v1_name.startswith("k8s_ns."):
        return "kns." + v1_name.removeprefix("k8s_ns.")
    return qualified_name(v1_name)


def _network(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))  # masked, as Calico stores it
    except ValueError:
        raise ConvertError(f"{value!r} is not an IP network", field=where) from None


def _workload_endpoint(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    node = normalize_name(_text(meta, "node", "metadata", "the endpoint's node"))
    orch_v1 = _text(meta, "orchestrator", "metadata", "the orchestrator (k8s, cni, libnetwork, ...)")
    workload_v1 = _text(meta, "workload", "metadata", "the workload ID")
    endpoint = qualified_name(str(meta.get("name") or "eth0"))
    namespace, pod, container, workload = "default", "", "", ""
    if orch_v1 == "k8s":
        ns, dot, pod = workload_v1.partition(".")
        if not dot or not ns or not pod:
            raise ConvertError(
                f"malformed k8s workload ID {workload_v1!r}: <namespace>.<pod> (an endpoint the Calico CNI "
                "plugin did not add cannot be converted)",
                field="metadata.workload",
            )
        namespace, container = ns, str(meta.get("activeInstanceID") or "")
    elif orch_v1 == "cni":
        container = workload_v1
    elif orch_v1 == "libnetwork":
        workload = "libnetwork"
    else:
        workload = qualified_name(workload_v1)
    orchestrator = qualified_name(orch_v1)
    out: dict[str, Any] = {"orchestrator": orchestrator, "node": node, "endpoint": endpoint}
    for key, value in (("workload", workload), ("pod", pod), ("containerID", container)):
        if value:
            out[key] = value
    nets = spec.get("ipNetworks") or []
    out["ipNetworks"] = [_network(n, f"spec.ipNetworks[{i}]") for i, n in enumerate(nets)]
    nats = spec.get("ipNATs") or []
    if nats:
        out["ipNATs"] = [{"internalIP": n.get("internalIP"), "externalIP": n.get("externalIP")} for n in nats]
    if spec.get("profiles"):
        out["profiles"] = [_profile_name(str(p)) for p in spec["profiles"]]
    for key in ("interfaceName", "mac", "ipv4Gateway", "ipv6Gateway"):
        if spec.get(key):
            out[key] = spec[key]
    ports = spec.get("ports") or []
    if ports:
        if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
            raise ConvertError("must be a list of {name, protocol, port}", field="spec.ports")
        out["ports"] = [
            {**p, "protocol": _PROTOCOLS.get(str(p.get("protocol", "")).lower(), p.get("protocol"))}
            for p in ports
        ]
    labels = dict(meta.get("labels") or {})
    if "calico/k8s_ns" in labels:
        labels["projectcalico.org/namespace"] = labels.pop("calico/k8s_ns")
    name = wep_name(node, orchestrator, pod or container or workload, endpoint)
    v3meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        v3meta["labels"] = labels
    return _v3("WorkloadEndpoint", v3meta, out)


_V1 = {
    "ipPool": _ip_pool,
    "policy": _policy,
    "profile": _profile,
    "bgpPeer": _bgp_peer,
    "hostEndpoint": _host_endpoint,
    "node": _node,
    "workloadEndpoint": _workload_endpoint,
}


# ---- Kubernetes NetworkPolicy ------------------------------------------------------------------------
def k8s_selector(sel: Any, *, pods: bool, where: str) -> str:
    """A Kubernetes LabelSelector in Calico's selector language, as Calico's converter writes it."""
    terms = [ORCHESTRATOR] if pods else []
    if sel is None:
        return " && ".join(terms)
    if not isinstance(sel, dict):
        raise ConvertError("must be a mapping", field=where)
    labels = sel.get("matchLabels") or {}
    exprs = sel.get("matchExpressions") or []
    if not pods and not labels and not exprs:
        return "all()"
    for key in sorted(labels):
        terms.append(f"{key} == '{labels[key]}'")
    for i, e in enumerate(exprs):
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        quoted = "', '".join(str(v) for v in values)
        if op == "In":
            terms.append(f"{key} in {{ '{quoted}' }}")
        elif op == "NotIn":
            terms.append(f"{key} not in {{ '{quoted}' }}")
        elif op == "Exists":
            terms.append(f"has({key})")
        elif op == "DoesNotExist":
            terms.append(f"! has({key})")
        else:
            raise ConvertError(f"unknown operator {op!r}", field=f"{where}.matchExpressions[{i}].operator")
    return " && ".join(terms)


def _k8s_ports(ports: list[Any], where: str) -> list[tuple[str, list[Any]]]:
    """(protocol, ports) groups; no ports = [("", [])] (any protocol, any port)."""
    if not ports:
        return [("", [])]
    groups: dict[str, list[Any]] = {}
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            raise ConvertError("must be a mapping", field=f"{where}[{i}]")
        proto = str(p.get("protocol") or "TCP").upper()
        values = groups.setdefault(proto, [])
        if "port" in p and p["port"] is not None:
            end = p.get("endPort")
            values.append(f"{p['port']}:{end}" if end is not None else p["port"])
    return list(groups.items())


def _k8s_peer(peer: dict[str, Any], where: str) -> dict[str, Any]:
    if "ipBlock" in peer and peer["ipBlock"] is not None:
        block = peer["ipBlock"]
        out: dict[str, Any] = {"nets": [block.get("cidr")]}
        if block.get("except"):
            out["notNets"] = list(block["except"])
        return out
    out = {}
    if peer.get("namespaceSelector") is not None:
        out["namespaceSelector"] = k8s_selector(peer["namespaceSelector"], pods=False,
                                                where=f"{where}.namespaceSelector")  # fmt: skip
    out["selector"] = k8s_selector(peer.get("podSelector"), pods=True, where=f"{where}.podSelector")
    return out


def _k8s_rules(rules: list[Any], direction: str) -> list[dict[str, Any]]:
    peer_key, side, other = ("from", "source", "destination") if direction == "ingress" else (
        "to", "destination", "source")  # fmt: skip
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rules or []):
        where = f"spec.{direction}[{i}]"
        if not isinstance(r, dict):
            raise ConvertError("must be a mapping", field=where)
        peers = r.get(peer_key) or [None]
        for proto, ports in _k8s_ports(r.get("ports") or [], f"{where}.ports"):
            for j, peer in enumerate(peers):
                rule: dict[str, Any] = {"action": "Allow"}
                if proto:
                    rule["protocol"] = proto
                if peer is not None:
                    rule[side] = _k8s_peer(peer, f"{where}.{peer_key}[{j}]")
                if ports:
                    rule[other] = {"ports": ports}
                out.append(rule)
    return out


def k8s_network_policy(doc: dict[str, Any]) -> dict[str, Any]:
    meta, spec = _meta(doc), _spec(doc)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConvertError("required", field="metadata.name")
    types = spec.get("policyTypes")
    if not types:
        types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    out: dict[str, Any] = {
        "order": K8S_POLICY_ORDER,
        "selector": k8s_selector(spec.get("podSelector") or {}, pods=True, where="spec.podSelector"),
        "types": list(types),
        "ingress": _k8s_rules(spec.get("ingress") or [], "ingress"),
        "egress": _k8s_rules(spec.get("egress") or [], "egress"),
    }
    v3meta = {"name": K8S_POLICY_PREFIX + name, "namespace": meta.get("namespace") or "default"}
    return _v3("NetworkPolicy", v3meta, out)
