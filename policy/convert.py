"""Resources → the internal model (``policy.entities``).

Kubernetes NetworkPolicy semantics implemented here:

- a policy isolates the pods its ``podSelector`` selects, in its namespace, for each
  direction listed in ``policyTypes`` (default: Ingress, plus Egress when egress rules exist);
- each ingress/egress rule allows; missing and empty ``from``/``to`` both mean every peer,
  missing and empty ``ports`` every port;
- a peer with podSelector *and* namespaceSelector selects those pods in those namespaces;
  separate peers are a union; podSelector alone means the policy's namespace;
  ``namespaceSelector: {}`` every namespace; ``ipBlock`` is ``cidr`` minus ``except``;
- ports default to TCP, may be named (resolved per endpoint) and have an ``endPort``;
- the result lives in tier ``default`` with order 1000.

Calico rule matches felixpy cannot enforce (``http``: application-layer policy; ``source.services`` /
``destination.services``: Service matches) never make conversion fail (one stored policy must not
stop the agent); the rule fails closed instead (`UNSUPPORTED_EFFECT`): an Allow or Pass rule never
matches (it is left out), a Deny or Log rule is kept without that part (it matches a superset).
`unenforced` names each such part, for the agent's log and metric and for ``felixctl``'s warnings.
A policy that cannot be converted at all (`ConversionError`) is replaced by `deny_all_stand_in`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_interface, ip_network
from sys import intern
from typing import Any

from pydantic_core import from_json

from felixpy.resources.base import _VALID_NAMESPACES as VALID_NAMESPACES
from felixpy.resources.endpoint import EndpointPort, HostEndpoint, WorkloadEndpoint, check_iface
from felixpy.resources.fields import _CANONICAL_V4_HOST, canonical_v4_host, check_cidr, check_ip, check_mac
from felixpy.resources.k8s import (
    K8sNetworkPolicy,
    LabelSelector,
    NetworkPolicyPeer,
    NetworkPolicyPort,
)
from felixpy.resources.name_rules import _VALID_LABELS as VALID_LABELS
from felixpy.resources.name_rules import (
    check_annotation_keys,
    check_labels,
    check_subdomain,
    check_wep_name,
)
from felixpy.resources.policy import EntityRule, GlobalNetworkPolicy, ICMPFields, NetworkPolicy
from felixpy.resources.policy import Rule as CalicoRule
from felixpy.resources.registry import kind_for
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet
from felixpy.resources.stored import Profile as ProfileResource
from policy.entities import (
    ANY,
    NAMESPACE_NAME_LABEL,
    PORT_PROTOCOLS,
    PROTOCOL_NUMBERS,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
    Direction,
    Endpoint,
    EntityMatch,
    IcmpMatch,
    NamedPort,
    Policy,
    PolicyRule,
    Port,
    PortRange,
    Profile,
    new_endpoint,
)
from policy.selector import (
    ALL,
    NAMESPACE_LABEL,
    Compare,
    Has,
    In,
    Not,
    Selector,
    and_,
    map_labels,
    parse,
)

K8S_POLICY_ORDER = 1000.0
AnyPolicy = K8sNetworkPolicy | NetworkPolicy | GlobalNetworkPolicy


class ConversionError(ValueError):
    """A resource cannot be expressed in the policy model (bad port, unsupported match...)."""


# Rule matches felixpy does not enforce: metric reason -> why (docs/architecture.md, Departures).
HTTP_MATCH = "http_match"
SERVICE_MATCH = "service_match"
UNSUPPORTED_REASONS: dict[str, str] = {
    HTTP_MATCH: "HTTP (L7) matches need application-layer policy, which felixpy does not implement",
    SERVICE_MATCH: "Service matches are not implemented",
}
# What becomes of a rule with such a match, by its action (fail closed).
UNSUPPORTED_EFFECT: dict[str, str] = {
    "Allow": "the rule never allows",
    "Pass": "the rule never passes",
    "Deny": "the rule denies without that match (a superset)",
    "Log": "the rule logs without that match (a superset)",
}


@dataclass(frozen=True, slots=True)
class Unenforced:
    """One part of a policy rule felixpy does not enforce as written."""

    policy: str  # policy id
    direction: Direction
    index: int  # the rule's index in spec.ingress / spec.egress
    field: str  # spec.ingress[0].destination.services
    reason: str  # HTTP_MATCH | SERVICE_MATCH
    action: str

    @property
    def message(self) -> str:
        """``<field>: not enforced by felixpy (<why>); <effect>``."""
        return (
            f"{self.field}: not enforced by felixpy ({UNSUPPORTED_REASONS[self.reason]}); "
            f"{UNSUPPORTED_EFFECT[self.action]}"
        )


def policy_id(kind: str, name: str, namespace: str | None = None) -> str:
    """Calico's policy ID: ``<kind short>/[<namespace>/]<name>`` (knp, np, gnp)."""
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def policy_from_doc(doc: Mapping[str, Any]) -> Policy:
    """A policy document as written in YAML (any of the three kinds) → ``Policy``."""
    cls = kind_for(str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    if cls not in (K8sNetworkPolicy, NetworkPolicy, GlobalNetworkPolicy):
        raise ConversionError(f"not a policy document: {doc.get('apiVersion')} {doc.get('kind')}")
    return convert_policy(cls.model_validate(doc))


def convert_policy(res: AnyPolicy) -> Policy:
    if isinstance(res, K8sNetworkPolicy):
        return from_k8s(res)
    return from_calico(res)


# ----------------------------------------------------------------------------------- helpers


def protocol_number(proto: str | int | None) -> int | None:
    if proto is None:
        return None
    if isinstance(proto, int) or proto.isdigit():
        num = int(proto)
        if not 1 <= num <= 255:
            raise ConversionError(f"protocol {proto!r} out of range 1..255")
        return num
    try:
        return PROTOCOL_NUMBERS[proto.lower()]
    except KeyError:
        raise ConversionError(f"unknown protocol {proto!r}") from None


def parse_port(port: int | str) -> Port:
    """80 → 80..80, "8080:8090" → range, "http" → named port."""
    if isinstance(port, int) or port.isdigit():
        return _port_range(int(port), int(port))
    if ":" in port:
        lo, _, hi = port.partition(":")
        if not (lo.isdigit() and hi.isdigit()):
            raise ConversionError(f"bad port range {port!r}")
        return _port_range(int(lo), int(hi))
    if not port:
        raise ConversionError("empty port name")
    return port


def _port_range(first: int, last: int) -> PortRange:
    if not 0 <= first <= last <= 65535:
        raise ConversionError(f"bad port range {first}:{last}")
    return PortRange(first, last)


def _cidr(net: str) -> str:
    try:
        return str(ip_network(net, strict=False))
    except ValueError as e:
        raise ConversionError(f"bad CIDR {net!r}") from e


def namespace_selector(text_or_ast: str | Selector) -> Selector:
    """A namespaceSelector rewritten over the endpoint view's ``pcns.`` labels."""
    sel = parse(text_or_ast) if isinstance(text_or_ast, str) else text_or_ast
    if "global()" in sel.canonical():
        return map_labels(sel, lambda k: "pcns." + k)
    return and_(Has(NAMESPACE_LABEL), map_labels(sel, lambda k: "pcns." + k))


def service_account_selector(text_or_ast: str | Selector) -> Selector:
    """A serviceAccounts.selector / serviceAccountSelector over the endpoint view's ``pcsa.`` labels:
    only endpoints that run as a ServiceAccount can match (``all()`` = any of them)."""
    sel = parse(text_or_ast) if isinstance(text_or_ast, str) else text_or_ast
    return and_(
        Has(SERVICE_ACCOUNT_PREFIX + NAMESPACE_NAME_LABEL),
        map_labels(sel, lambda k: SERVICE_ACCOUNT_PREFIX + k),
    )


def in_namespace(namespace: str) -> Selector:
    return Compare(NAMESPACE_LABEL, "==", namespace)


# ----------------------------------------------------------------------------------- Kubernetes


def from_k8s(res: K8sNetworkPolicy) -> Policy:
    ns = res.namespace or "default"
    spec = res.spec
    types = _k8s_types(res)
    ingress: list[PolicyRule] = []
    egress: list[PolicyRule] = []
    if "Ingress" in types:
        for r in spec.ingress or []:
            ingress += _k8s_rules(r.from_, r.ports, ns, "Ingress")
    if "Egress" in types:
        for e in spec.egress or []:
            egress += _k8s_rules(e.to, e.ports, ns, "Egress")
    return Policy(
        id=policy_id("knp", res.name, ns),
        selector=and_(in_namespace(ns), from_label_selector(spec.pod_selector)),
        types=types,
        ingress=tuple(ingress),
        egress=tuple(egress),
        tier="default",
        order=K8S_POLICY_ORDER,
        namespace=ns,
    )


def _k8s_rules(
    peers: Sequence[NetworkPolicyPeer] | None,
    ports: Sequence[NetworkPolicyPort] | None,
    ns: str,
    direction: Direction,
) -> list[PolicyRule]:
    """One Allow rule per (protocol group x peer)."""
    peer_matches = [_k8s_peer(p, ns) for p in peers] if peers else [ANY]
    out: list[PolicyRule] = []
    for proto, port_list in _k8s_port_groups(ports):
        for peer in peer_matches:
            if direction == "Ingress":
                src, dst = peer, EntityMatch(ports=port_list)
            else:
                src, dst = ANY, _with_ports(peer, port_list)
            out.append(PolicyRule("Allow", protocol=proto, source=src, destination=dst))
    return out


def _with_ports(m: EntityMatch, ports: tuple[Port, ...]) -> EntityMatch:
    return EntityMatch(m.nets, m.not_nets, m.selector, m.not_selector, ports, m.not_ports)


def _k8s_port_groups(ports: Sequence[NetworkPolicyPort] | None) -> list[tuple[int | None, tuple[Port, ...]]]:
    """[(protocol, ports)], protocols in first-seen order; () ports = every port of it."""
    if not ports:
        return [(None, ())]
    groups: dict[int, list[Port] | None] = {}
    for p in ports:
        proto = PROTOCOL_NUMBERS[p.protocol.lower()]
        if p.port is None:
            groups[proto] = None  # the whole protocol
            continue
        if isinstance(p.port, int) or p.port.isdigit():
            first = int(p.port)
            port: Port = _port_range(first, p.end_port if p.end_port is not None else first)
        else:
            port = p.port
        current = groups.setdefault(proto, [])
        if current is not None and port not in current:
            current.append(port)
    return [(proto, tuple(lst) if lst else ()) for proto, lst in groups.items()]


def _k8s_peer(peer: NetworkPolicyPeer, ns: str) -> EntityMatch:
    if peer.ip_block is not None:
        return EntityMatch(
            nets=(_cidr(peer.ip_block.cidr),),
            not_nets=tuple(_cidr(c) for c in peer.ip_block.except_),
        )
    pods = from_label_selector(peer.pod_selector)
    if peer.namespace_selector is None:
        return EntityMatch(selector=and_(in_namespace(ns), pods))
    return EntityMatch(selector=and_(namespace_selector(from_label_selector(peer.namespace_selector)), pods))


# ----------------------------------------------------------------------------------- Calico


def from_calico(res: NetworkPolicy | GlobalNetworkPolicy) -> Policy:
    spec = res.spec
    ns = res.namespace if isinstance(res, NetworkPolicy) else None
    selector = parse(spec.selector)
    if ns is not None:
        selector = and_(in_namespace(ns), selector)
    elif isinstance(res, GlobalNetworkPolicy) and res.spec.namespace_selector:
        selector = and_(namespace_selector(res.spec.namespace_selector), selector)
    if spec.service_account_selector:
        selector = and_(service_account_selector(spec.service_account_selector), selector)
    types = _calico_types(res)
    kind = "np" if ns is not None else "gnp"
    return Policy(
        id=policy_id(kind, res.name, ns),
        selector=selector,
        types=types,
        ingress=_calico_rules(spec.ingress, ns) if "Ingress" in types else (),
        egress=_calico_rules(spec.egress, ns) if "Egress" in types else (),
        tier=spec.tier or "default",
        order=spec.order,
        namespace=ns,
        **_host_flags(res),
    )


def profile_from_resource(res: ProfileResource) -> Profile:
    """A stored Profile → ``Profile``: its rules as a GlobalNetworkPolicy's (cluster-wide selectors),
    its ``labelsToApply``."""
    spec = res.spec
    return Profile(
        name=res.name,
        ingress=_calico_rules(spec.ingress, None),
        egress=_calico_rules(spec.egress, None),
        labels=dict(spec.labels_to_apply),
    )


def profile_from_doc(doc: Mapping[str, Any]) -> Profile:
    """A Profile document as written in YAML → ``Profile``."""
    return profile_from_resource(ProfileResource.model_validate(doc))


def _calico_types(res: NetworkPolicy | GlobalNetworkPolicy) -> frozenset[Direction]:
    spec = res.spec
    if spec.types:
        return frozenset(spec.types)
    if spec.egress and not spec.ingress:
        return frozenset(("Egress",))
    if spec.egress:
        return frozenset(("Ingress", "Egress"))
    return frozenset(("Ingress",))


def _k8s_types(res: K8sNetworkPolicy) -> frozenset[Direction]:
    spec = res.spec
    if spec.policy_types:
        return frozenset(spec.policy_types)
    return frozenset(("Ingress", "Egress") if spec.egress else ("Ingress",))


def _calico_rules(rules: Sequence[CalicoRule], ns: str | None) -> tuple[PolicyRule, ...]:
    """The rules felixpy enforces: an Allow/Pass rule with an unsupported match is left out."""
    out = []
    for r in rules:
        converted = _calico_rule(r, ns)
        if converted is not None:
            out.append(converted)
    return tuple(out)


def unsupported_parts(rule: CalicoRule) -> list[tuple[str, str]]:
    """(field within the rule, reason) of each match felixpy does not enforce."""
    parts = [("http", HTTP_MATCH)] if rule.http is not None else []
    for side in ("source", "destination"):
        if getattr(rule, side).services is not None:
            parts.append((f"{side}.services", SERVICE_MATCH))
    return parts


def unenforced(res: AnyPolicy) -> list[Unenforced]:
    """Each rule part of ``res`` felixpy does not enforce as written (rules of a direction the
    policy does not apply to are not enforced at all, and not listed)."""
    if isinstance(res, K8sNetworkPolicy):
        return []
    ns = res.namespace if isinstance(res, NetworkPolicy) else None
    pid = policy_id("np" if ns is not None else "gnp", res.name, ns)
    types = _calico_types(res)
    out: list[Unenforced] = []
    for direction, rules in (("Ingress", res.spec.ingress), ("Egress", res.spec.egress)):
        if direction not in types:
            continue
        for i, rule in enumerate(rules):
            for part, reason in unsupported_parts(rule):
                field = f"spec.{direction.lower()}[{i}].{part}"
                out.append(Unenforced(pid, direction, i, field, reason, rule.action))
    return out


def deny_all_stand_in(res: AnyPolicy) -> Policy:
    """What stands for a policy that cannot be converted (and had no earlier version): the same
    selection, tier, order and types, with one rule that denies everything in each direction
    (fail closed). Raises `ConversionError` (or the selector's ValueError) when even its selection
    cannot be converted."""
    if isinstance(res, K8sNetworkPolicy):
        types = _k8s_types(res)
        bare: AnyPolicy = res.model_copy(
            update={"spec": res.spec.model_copy(update={"ingress": None, "egress": None})}
        )
    else:
        types = _calico_types(res)
        bare = res.model_copy(update={"spec": res.spec.model_copy(update={"ingress": [], "egress": []})})
    p = convert_policy(bare)
    deny = (PolicyRule("Deny"),)
    return replace(
        p,
        types=types,
        ingress=deny if "Ingress" in types else (),
        egress=deny if "Egress" in types else (),
    )


def _host_flags(res: NetworkPolicy | GlobalNetworkPolicy) -> dict[str, bool]:
    if not isinstance(res, GlobalNetworkPolicy):
        return {}
    spec = res.spec
    return {
        "apply_on_forward": spec.apply_on_forward,
        "pre_dnat": spec.pre_dnat,
        "do_not_track": spec.do_not_track,
    }


def _calico_rule(rule: CalicoRule, ns: str | None) -> PolicyRule | None:
    """The rule as felixpy enforces it; None for an Allow/Pass rule with an unsupported match
    (it never matches). A Deny/Log rule's unsupported matches are ignored (``http`` simply, and
    ``services`` by `_entity`): it matches a superset."""
    if unsupported_parts(rule) and rule.action in ("Allow", "Pass"):
        return None
    protocol = protocol_number(rule.protocol)
    src, dst = _entity(rule.source, ns), _entity(rule.destination, ns)
    if (src.ports or src.not_ports or dst.ports or dst.not_ports) and protocol not in PORT_PROTOCOLS:
        raise ConversionError("ports need protocol TCP, UDP, SCTP or UDPLite")
    comment = ""
    if rule.metadata is not None:
        comment = "; ".join(f"{k}={v}" for k, v in sorted(rule.metadata.annotations.items()))
    return PolicyRule(
        action=rule.action,
        protocol=protocol,
        not_protocol=protocol_number(rule.not_protocol),
        ip_version=rule.ip_version,
        icmp=_icmp(rule.icmp),
        not_icmp=_icmp(rule.not_icmp),
        source=src,
        destination=dst,
        comment=comment,
    )


def _icmp(f: ICMPFields | None) -> IcmpMatch | None:
    if f is None or f.type is None:
        if f is not None and f.code is not None:
            raise ConversionError("ICMP code requires a type")
        return None
    return IcmpMatch(f.type, f.code)


def _entity(e: EntityRule, ns: str | None) -> EntityMatch:
    """One side of a rule (a ``services`` match is left out: see `_calico_rule`)."""
    sel = parse(e.selector) if e.selector else None
    not_sel = parse(e.not_selector) if e.not_selector else None
    if e.service_accounts is not None:
        sas: list[Selector] = []
        if e.service_accounts.names:
            sas.append(In(SERVICE_ACCOUNT_LABEL, frozenset(e.service_accounts.names)))
        if e.service_accounts.selector:
            sas.append(service_account_selector(e.service_accounts.selector))
        for sa in sas:
            sel = and_(sel, sa) if sel is not None else sa
    scope: Selector | None = None
    if e.namespace_selector:
        scope = namespace_selector(e.namespace_selector)
        sel = and_(scope, sel) if sel is not None else scope
    elif ns is not None:
        scope = in_namespace(ns)
        sel = and_(scope, sel) if sel is not None else None
    if not_sel is not None and scope is not None:
        not_sel = and_(scope, not_sel)
    return EntityMatch(
        nets=tuple(_cidr(n) for n in e.nets),
        not_nets=tuple(_cidr(n) for n in e.not_nets),
        selector=sel,
        not_selector=not_sel,
        ports=tuple(parse_port(p) for p in e.ports),
        not_ports=tuple(parse_port(p) for p in e.not_ports),
    )


# ----------------------------------------------------------------------------------- endpoints


def _interned_labels(labels: dict[str, str]) -> dict[str, str]:
    """A copy of ``labels`` with keys and values interned: thousands of endpoints share a few
    label keys and values (namespace, app, ...), and each decode made its own copy of each."""
    return {intern(k): intern(v) for k, v in labels.items()}


def _opt_intern(text: str | None) -> str | None:
    return intern(text) if text else text


def endpoint_from_wep(wep: WorkloadEndpoint) -> Endpoint:
    ns = intern(wep.namespace or "default")
    spec = wep.spec
    return new_endpoint(
        key=f"{ns}/{wep.name}",
        namespace=ns,
        labels=_interned_labels(wep.metadata.labels),
        ips=tuple(n[:-3] if canonical_v4_host(n) else str(ip_interface(n).ip) for n in spec.ip_networks),
        ports=tuple(_named_ports(spec.ports)),
        iface=spec.interface_name,
        node=intern(spec.node),
        profiles=tuple(intern(p) for p in spec.profiles) or (intern(f"kns.{ns}"),),
        service_account=_opt_intern(spec.service_account_name),
        allowed_source_prefixes=tuple(spec.allow_spoofed_source_prefixes),
        mac=spec.mac,
        pod=spec.pod,
        container_id=spec.container_id,
    )


# The stored WorkloadEndpoint fields `endpoint_from_stored_wep` checks itself; any other key (or an
# ``ipNATs``/``ports`` entry) sends the document through the full model (`WorkloadEndpoint`).
_WEP_TOP = frozenset({"apiVersion", "kind", "metadata", "spec"})
_WEP_META_TEXT = frozenset({"name", "namespace", "uid", "creationTimestamp", "resourceVersion"})
_WEP_SPEC_TEXT = frozenset({"workload", "containerID", "pod", "serviceAccountName"})  # str or null
_WEP_SPEC_KNOWN = frozenset(
    {"node", "interfaceName", "orchestrator", "endpoint", "ipNetworks", "ipNATs", "ipv4Gateway",
     "ipv6Gateway", "profiles", "mac", "ports", "allowSpoofedSourcePrefixes"}
) | _WEP_SPEC_TEXT  # fmt: skip


def endpoint_from_stored_wep(raw: bytes | str) -> Endpoint | None:
    """``endpoint_from_wep(WorkloadEndpoint.model_validate_json(raw))`` without the pydantic model, for
    a stored WorkloadEndpoint of the common shape; None when the document must go through the model
    (the caller then builds it: a malformed one is refused there, with pydantic's error naming the
    field, exactly as before). Every field the model checks is checked here with the same functions
    (names, namespace, labels, annotations keys, node, interface, CIDRs, MAC, gateways, types, no
    unknown field); any doubt returns None. At start-up that is 11,000 endpoints at x10 (10,000 of
    them other nodes'), each a model of three pydantic objects built and converted at once."""
    try:
        doc = from_json(raw)
        return _stored_wep(doc) if type(doc) is dict else None
    except (ValueError, TypeError):  # (FieldError is a ValueError; bad JSON too)
        return None


# Label maps already checked, each with its interned copy, shared by every endpoint carrying it (a
# deployment's pods carry one map; the x10 bench's 11,000 endpoints carry 20): a map seen before
# costs one lookup, and 11,000 endpoints hold 20 dicts, not 11,000. Node names already checked
# (a cluster's nodes: 51 at x10). Both pure checks, bounded: cleared when full.
_SHARED_LABELS: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
_VALID_NODES: set[str] = set()
STORED_WEP_MEMO_MAX = 4096
_canonical_v4_host = _CANONICAL_V4_HOST.fullmatch


def _stored_wep(doc: dict[str, Any]) -> Endpoint | None:
    meta, spec = doc.get("metadata"), doc.get("spec")
    if type(meta) is not dict or type(spec) is not dict or not _WEP_TOP.issuperset(doc):
        return None
    if type(doc.get("apiVersion", "")) is not str or type(doc.get("kind", "")) is not str:
        return None
    # metadata (felixpy.resources.base.ObjectMeta and Resource._metadata)
    for k, v in meta.items():
        if k in _WEP_META_TEXT:
            if v is not None and type(v) is not str:
                return None
        elif k not in ("labels", "annotations") or type(v) is not dict:
            return None
    name = meta.get("name", "")
    if type(name) is not str:  # (null is refused by the model)
        return None
    if name:
        check_wep_name(name)
    ns = meta.get("namespace")
    if ns and ns not in VALID_NAMESPACES:  # the model's check, remembered there: the first goes through it
        return None
    labels = _checked_labels(meta.get("labels"))
    if labels is None:
        return None
    annotations = meta.get("annotations")
    if annotations:
        if any(type(v) is not str for v in annotations.values()):
            return None
        check_annotation_keys(annotations)
    # spec (felixpy.resources.endpoint.WorkloadEndpointSpec)
    if not _WEP_SPEC_KNOWN.issuperset(spec):
        return None
    get = spec.get
    node, iface, pod, cid = get("node"), get("interfaceName"), get("pod"), get("containerID")
    sa, workload = get("serviceAccountName"), get("workload")
    if type(node) is not str or type(iface) is not str:
        return None
    for text in (pod, cid, sa, workload):
        if text is not None and type(text) is not str:
            return None
    if node not in _VALID_NODES:
        check_subdomain(node, what="node name")
        if len(_VALID_NODES) >= STORED_WEP_MEMO_MAX:
            _VALID_NODES.clear()
        _VALID_NODES.add(node)
    check_iface(iface)
    if type(get("orchestrator", "")) is not str or type(get("endpoint", "")) is not str:
        return None
    nets, profiles, spoof = get("ipNetworks", []), get("profiles", []), get("allowSpoofedSourcePrefixes", [])
    if type(nets) is not list or type(profiles) is not list or type(spoof) is not list:
        return None
    if get("ipNATs", []) != [] or get("ports", []) != []:  # (items that are models of their own)
        return None
    gw4, gw6, mac = get("ipv4Gateway"), get("ipv6Gateway"), get("mac")
    if gw4 is not None:
        check_ip(gw4)
    if gw6 is not None:
        check_ip(gw6)
    if mac is not None:
        check_mac(mac)
    interned = []
    for p in profiles:
        if type(p) is not str:
            return None
        interned.append(intern(p))
    ips = []
    for n in nets:
        if type(n) is str and _canonical_v4_host(n):  # (check_cidr would return it as it is)
            ips.append(n[:-3])
        else:
            cidr = check_cidr(n)
            ips.append(cidr[:-3] if _canonical_v4_host(cidr) else str(ip_interface(cidr).ip))
    ns = intern(ns or "default")
    return new_endpoint(
        key=f"{ns}/{name}",
        namespace=ns,
        labels=labels,
        ips=tuple(ips),
        iface=iface,
        node=intern(node),
        profiles=tuple(interned) or (intern(f"kns.{ns}"),),
        service_account=_opt_intern(sa),
        allowed_source_prefixes=tuple(map(check_cidr, spoof)) if spoof else (),
        mac=mac,
        pod=pod,
        container_id=cid,
    )


def _checked_labels(labels: dict[str, Any] | None) -> dict[str, str] | None:
    """The shared interned copy of a checked label map (`_SHARED_LABELS`: never to be changed);
    None: not a map of strings (the model refuses it). A bad label raises the model's FieldError."""
    if not labels:  # absent or empty (a null or non-map one is refused before)
        return {}
    items = tuple(labels.items())
    shared = _SHARED_LABELS.get(items)  # (an unhashable value raises TypeError: the model's to refuse)
    if shared is None:
        valid = VALID_LABELS
        for pair in items:
            if pair not in valid:
                if type(pair[1]) is not str:
                    return None
                check_labels(dict((pair,)))
        if len(_SHARED_LABELS) >= STORED_WEP_MEMO_MAX:
            _SHARED_LABELS.clear()
        shared = _SHARED_LABELS[items] = {intern(k): intern(v) for k, v in items}
    return shared


def endpoint_from_hep(hep: HostEndpoint) -> Endpoint:
    """A HostEndpoint: its own labels only (no namespace), ``expectedIPs`` as its addresses."""
    spec = hep.spec
    return Endpoint(
        key=hep_key(hep.name),
        namespace=None,
        labels=_interned_labels(hep.metadata.labels),
        ips=tuple(str(ip) for ip in spec.expected_i_ps),
        ports=tuple(_named_ports(spec.ports)),
        iface=spec.interface_name or None,
        node=intern(spec.node),
        profiles=tuple(intern(p) for p in spec.profiles),
        host=True,
    )


def hep_key(name: str) -> str:
    return f"hep:{name}"


def network_set_key(namespace: str | None, name: str) -> str:
    """``gns:<name>`` for a GlobalNetworkSet, ``netset:<ns>/<name>`` for a NetworkSet."""
    return f"netset:{namespace}/{name}" if namespace else f"gns:{name}"


def endpoint_from_network_set(netset: GlobalNetworkSet | NetworkSet) -> Endpoint:
    """A network set as policy sees it: its labels (a NetworkSet also gets its namespace's, as a
    workload does) and its ``nets`` in place of addresses; no node, so never enforced on."""
    namespace = (netset.namespace or "default") if isinstance(netset, NetworkSet) else None
    return Endpoint(
        key=network_set_key(namespace, netset.name),
        namespace=namespace,
        labels=dict(netset.metadata.labels),
        ips=tuple(str(ip_network(n, strict=False)) for n in netset.spec.nets),
        network_set=True,
    )


def _named_ports(ports: Iterable[EndpointPort]) -> Iterable[NamedPort]:
    for p in ports:
        yield NamedPort(p.name, protocol_number(p.protocol) or 6, p.port)


# --- Kubernetes label selectors (here, not in policy.selector: the selector language knows no resource)
def from_label_selector(sel: LabelSelector | None) -> Selector:
    """A Kubernetes ``matchLabels``/``matchExpressions`` selector as an AST (empty/None = all())."""
    if sel is None:
        return ALL
    terms: list[Selector] = [Compare(k, "==", v) for k, v in sorted(sel.match_labels.items())]
    for expr in sel.match_expressions:
        terms.append(_requirement(expr.key, expr.operator, expr.values))
    return and_(*terms)


def _requirement(key: str, operator: str, values: Iterable[str]) -> Selector:
    if operator == "In":
        return In(key, frozenset(values))
    if operator == "NotIn":
        return In(key, frozenset(values), negated=True)
    if operator == "Exists":
        return Has(key)
    if operator == "DoesNotExist":
        return Not(Has(key))
    raise ValueError(f"unknown label selector operator {operator!r}")
