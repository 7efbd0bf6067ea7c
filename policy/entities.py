"""The one internal policy model every policy kind compiles into, and the endpoint view.

Kubernetes ``networking.k8s.io/v1`` NetworkPolicy, Calico NetworkPolicy and
GlobalNetworkPolicy all become a ``Policy`` (see ``policy.convert``); the evaluator and the
compiler only ever see this model.

Namespaces in selectors. A policy rule's ``namespaceSelector`` is folded into its
``selector`` (as Calico does), so one label map per endpoint answers every question. The
endpoint's *label view* (``label_view``) is its own labels plus:

- ``projectcalico.org/namespace: <ns>`` (namespaced endpoints only),
- ``projectcalico.org/serviceaccount: <sa>`` when it has one,
- each label ``k: v`` of its Namespace as ``pcns.k: v``, and ``pcns.projectcalico.org/name: <ns>``,
- each label ``k: v`` of its ServiceAccount as ``pcsa.k: v``, and ``pcsa.projectcalico.org/name: <sa>``
  (Calico's ``ksa.<ns>.<sa>`` profile labels); a ``serviceAccounts.selector`` or a policy's
  ``serviceAccountSelector`` is rewritten over the ``pcsa.`` labels as a namespaceSelector is.
- the ``labelsToApply`` of each stored Profile the endpoint lists (``Endpoint.profiles``), for the
  keys none of the above set (the endpoint's own labels win; between profiles, the first listed wins,
  as Calico's label inheritance looks parents up in order).

A namespaceSelector ``env == "prod"`` is rewritten to
``(has(projectcalico.org/namespace) && pcns.env == "prod")``; ``all()`` becomes
``has(projectcalico.org/namespace)``; ``global()`` keeps its meaning (no namespace label).
In a namespaced policy a rule ``selector``/``notSelector`` without a namespaceSelector is
ANDed with ``projectcalico.org/namespace == "<policy ns>"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from policy.selector import NAMESPACE_LABEL, Selector

Action = Literal["Allow", "Deny", "Log", "Pass"]
Direction = Literal["Ingress", "Egress"]

SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_PREFIX = "pcns."
NAMESPACE_NAME_LABEL = "projectcalico.org/name"
SERVICE_ACCOUNT_PREFIX = "pcsa."

PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
PROTOCOL_NAMES: dict[int, str] = {v: k for k, v in PROTOCOL_NUMBERS.items()}
PORT_PROTOCOLS = frozenset((6, 17, 132, 136))


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


Port = PortRange | str  # a numeric range, or a named port resolved per endpoint


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    type: int
    code: int | None = None


@dataclass(frozen=True, slots=True)
class EntityMatch:
    """One side (source or destination) of a rule. Empty fields do not restrict."""

    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    selector: Selector | None = None  # None: any address; else an endpoint whose view matches
    not_selector: Selector | None = None
    ports: tuple[Port, ...] = ()
    not_ports: tuple[Port, ...] = ()

    @property
    def named_ports(self) -> tuple[str, ...]:
        return tuple(p for p in self.ports if isinstance(p, str))

    @property
    def named_not_ports(self) -> tuple[str, ...]:
        return tuple(p for p in self.not_ports if isinstance(p, str))


ANY = EntityMatch()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    action: Action
    protocol: int | None = None
    not_protocol: int | None = None
    ip_version: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: EntityMatch = ANY
    destination: EntityMatch = ANY
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy of any kind. ``selector`` already includes the namespace for namespaced kinds."""

    id: str  # knp/<ns>/<name>, np/<ns>/<name>, gnp/<name>
    selector: Selector
    types: frozenset[Direction]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    tier: str = "default"
    order: float | None = None  # None = after every ordered policy
    namespace: str | None = None
    apply_on_forward: bool = False  # GlobalNetworkPolicy only: also police forwarded host traffic
    pre_dnat: bool = False  # GlobalNetworkPolicy only: host endpoints, mangle table (compile_hostraw)
    do_not_track: bool = False  # GlobalNetworkPolicy only: host endpoints, raw table (compile_hostraw)

    def sort_key(self) -> tuple[float, str]:
        return (math.inf if self.order is None else self.order, self.id)

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction == "Ingress" else self.egress

    def applies(self, direction: Direction, labels: Mapping[str, str]) -> bool:
        return direction in self.types and self.selector.matches(labels)

    @property
    def filter_table(self) -> bool:
        """Enforced in the filter table: neither a pre-DNAT nor an untracked policy."""
        return not (self.pre_dnat or self.do_not_track)

    def enforced_on(self, labels: Mapping[str, str]) -> bool:
        """Selects an endpoint with these labels in the filter table (pre-DNAT and untracked policies
        are enforced in mangle/raw by ``policy.compile_hostraw``, on host endpoints only)."""
        return self.filter_table and self.selector.matches(labels)


@dataclass(frozen=True)
class Profile:
    """A stored Profile (``projectcalico.org/v3``): rules an endpoint listing it falls through to when no
    policy decided (``cali-pri-<name>``/``cali-pro-<name>``) and ``labelsToApply`` it inherits. Rules are
    Calico rules of a cluster-wide scope (as a GlobalNetworkPolicy's: no namespace is ANDed in).
    First matching rule: Allow accepts, Deny drops, Pass and no match go on to the next profile."""

    name: str
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction == "Ingress" else self.egress


@dataclass(frozen=True, slots=True)
class NamedPort:
    name: str
    protocol: int
    port: int


@dataclass(frozen=True)
class Endpoint:
    """An endpoint, the one model of it: what the policy compilers select and enforce on, and the local
    workload endpoints calc hands the dataplane (``felixpy.calc.updates.EndpointUpdate``).

    Workload endpoints: ``key`` is ``<namespace>/<name>``. Host endpoints (``host=True``):
    ``key`` is ``hep:<name>`` (``:`` cannot appear in a namespace, so the keys never clash),
    ``namespace`` is None, ``ips`` are its ``expectedIPs`` and ``iface`` its ``interfaceName``
    (``"*"``: every interface of the host). Network sets (``network_set=True``): ``key`` is
    ``gns:<name>`` (GlobalNetworkSet, no namespace) or ``netset:<ns>/<name>`` (NetworkSet), ``ips``
    are its ``nets`` (CIDRs); they have no node or interface, so they only ever feed the selector
    ipsets of rules (Calico's label index treats them as endpoints; reference 5.2 of calico-wave2).
    """

    key: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()  # addresses, without prefix length
    ports: tuple[NamedPort, ...] = ()
    iface: str | None = None
    node: str | None = None
    profiles: tuple[str, ...] = ()
    service_account: str | None = None
    host: bool = False
    network_set: bool = False  # a (Global)NetworkSet: ``ips`` are its nets (CIDRs); never enforced on
    allowed_source_prefixes: tuple[str, ...] = ()  # allowSpoofedSourcePrefixes (workloads; policy.rpf)
    # What the dataplane keeps of a workload endpoint (calc's endpoint deltas, the orphan report).
    mac: str | None = None
    pod: str | None = None
    container_id: str | None = None

    @property
    def name(self) -> str:
        """Its own name: the key without namespace or kind prefix (``default/a`` → ``a``)."""
        return self.key.rsplit("/", 1)[-1].rsplit(":", 1)[-1]

    @property
    def nets(self) -> tuple[str, ...]:
        """Its addresses as host CIDRs, as routes name them (``10.0.0.1/32``, ``fd00::1/128``); a network
        set's nets as they are."""
        return tuple(ip if "/" in ip else f"{ip}/{128 if ':' in ip else 32}" for ip in self.ips)

    def named_port(self, name: str, protocol: int) -> int | None:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


_ENDPOINT_FIELDS = frozenset(f.name for f in fields(Endpoint))
_ENDPOINT_DEFAULTS = {f.name: f.default for f in fields(Endpoint) if f.default is not MISSING}


def new_endpoint(**values: Any) -> Endpoint:
    """``Endpoint(**values)`` without the frozen dataclass's ``__init__``, which sets each of its 15
    fields through ``object.__setattr__`` (~7 µs an endpoint loaded, ~1 µs this way): the x10
    start-up builds 11,000 workload endpoints. ``values`` must name every field without a default
    (``key``, ``namespace``, ``labels``); the object is the same (equal, same fields, frozen)."""
    assert _ENDPOINT_FIELDS.issuperset(values) and "labels" in values, values.keys()
    ep = object.__new__(Endpoint)
    attrs = ep.__dict__
    attrs.update(_ENDPOINT_DEFAULTS)
    attrs.update(values)
    return ep


def label_view(
    ep: Endpoint,
    namespace_labels: Mapping[str, str] | None,
    service_account_labels: Mapping[str, str] | None = None,
    profile_labels: Iterable[Mapping[str, str]] = (),
) -> dict[str, str]:
    """The labels selectors are evaluated against (see the module docstring)."""
    view = dict(ep.labels)
    if ep.namespace is not None:
        view[NAMESPACE_LABEL] = ep.namespace
        for k, v in (namespace_labels or {}).items():
            view[NAMESPACE_PREFIX + k] = v
        view[NAMESPACE_PREFIX + NAMESPACE_NAME_LABEL] = ep.namespace
    if ep.service_account:
        view[SERVICE_ACCOUNT_LABEL] = ep.service_account
        for k, v in (service_account_labels or {}).items():
            view[SERVICE_ACCOUNT_PREFIX + k] = v
        view[SERVICE_ACCOUNT_PREFIX + NAMESPACE_NAME_LABEL] = ep.service_account
    for labels in profile_labels:
        for k, v in labels.items():
            view.setdefault(k, v)
    return view


def profile_labels(ep: Endpoint, profiles: Mapping[str, Profile]) -> list[Mapping[str, str]]:
    """The ``labelsToApply`` of the stored profiles ``ep`` lists, in its order (``label_view``'s input)."""
    return [p.labels for p in (profiles.get(name) for name in ep.profiles) if p is not None and p.labels]
