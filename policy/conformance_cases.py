"""NetworkPolicy conformance cases as data: the Kubernetes e2e topology and truth tables.

Topology (the upstream ``netpol`` e2e suite's): namespaces x, y, z labelled ``ns=<name>``;
in each, pods a, b, c labelled ``pod=<name>``, each serving TCP and UDP on ports 80 and 81
with named ports ``serve-80-tcp``, ``serve-81-tcp``, ``serve-80-udp``, ``serve-81-udp``.

A case is a list of policy documents (exactly what one would ``apply``), the probes to send
(protocol, port) and the expected reachability, written as ordered overrides of a default:
``Expect("*/*", "x/a", False)`` then ``Expect("x/b", "x/a", True)`` reads "nothing reaches
x/a, except x/b". A pod always reaches itself. The same cases run through the reference
evaluator (tests/unit/test_policy_conformance.py) and, later, on the real kernel.

Cases that need pod addresses (ipBlock) are built by ``cases(ips)`` from the actual
addresses, so a lab with its own IPAM can replay them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policy.model import PROTOCOL_NUMBERS, Endpoint, NamedPort

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
POD_KEYS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS)
DEFAULT_IPS: dict[str, str] = {
    f"{ns}/{pod}": f"10.8.{i}.{j + 1}" for i, ns in enumerate(NAMESPACES) for j, pod in enumerate(PODS)
}
NAMED_PORTS = tuple(
    (f"serve-{port}-{proto.lower()}", proto, port) for port in (80, 81) for proto in ("TCP", "UDP")
)

Probe = tuple[str, int]  # ("TCP", 80)
TCP80: Probe = ("TCP", 80)
TCP81: Probe = ("TCP", 81)
UDP80: Probe = ("UDP", 80)
UDP81: Probe = ("UDP", 81)
Doc = dict[str, Any]


@dataclass(frozen=True)
class Expect:
    src: str  # "x/a", "x/*", "*/a", "*/*"
    dst: str
    allowed: bool
    probes: tuple[Probe, ...] | None = None  # None: every probe of the case

    def covers(self, src: str, dst: str, probe: Probe) -> bool:
        return (
            _match(self.src, src) and _match(self.dst, dst) and (self.probes is None or probe in self.probes)
        )


def _match(pattern: str, pod: str) -> bool:
    p_ns, p_pod = pattern.split("/")
    ns, name = pod.split("/")
    return p_ns in ("*", ns) and p_pod in ("*", name)


@dataclass(frozen=True)
class NetpolCase:
    name: str
    policies: tuple[Doc, ...]
    expects: tuple[Expect, ...] = ()
    probes: tuple[Probe, ...] = (TCP80,)
    default: bool = True

    def expected(self, src: str, dst: str, probe: Probe) -> bool:
        if src == dst:
            return True
        allowed = self.default
        for e in self.expects:
            if e.covers(src, dst, probe):
                allowed = e.allowed
        return allowed

    def truth_table(self) -> dict[Probe, dict[tuple[str, str], bool]]:
        return {
            probe: {(s, d): self.expected(s, d, probe) for s in POD_KEYS for d in POD_KEYS}
            for probe in self.probes
        }


# ----------------------------------------------------------------------------- doc builders


def _labels(labels: Mapping[str, str] | None, exprs: Sequence[tuple[str, str, list[str]]] | None) -> Doc:
    sel: Doc = {}
    if labels:
        sel["matchLabels"] = dict(labels)
    if exprs:
        sel["matchExpressions"] = [{"key": k, "operator": op, "values": v} for k, op, v in exprs]
    return sel


def peer(
    pod: Mapping[str, str] | None = None,
    ns: Mapping[str, str] | None = None,
    *,
    pod_exprs: Sequence[tuple[str, str, list[str]]] | None = None,
    ns_exprs: Sequence[tuple[str, str, list[str]]] | None = None,
    any_ns: bool = False,
) -> Doc:
    out: Doc = {}
    if pod is not None or pod_exprs:
        out["podSelector"] = _labels(pod, pod_exprs)
    if ns is not None or ns_exprs or any_ns:
        out["namespaceSelector"] = _labels(ns, ns_exprs)
    return out


def block(cidr: str, *excepts: str) -> Doc:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


def port(p: int | str | None = None, proto: str = "TCP", end: int | None = None) -> Doc:
    out: Doc = {"protocol": proto}
    if p is not None:
        out["port"] = p
    if end is not None:
        out["endPort"] = end
    return out


def knp(
    name: str,
    ns: str,
    pod: Mapping[str, str] | None = None,
    *,
    types: Sequence[str] | None = None,
    ingress: Sequence[Doc] | None = None,
    egress: Sequence[Doc] | None = None,
) -> Doc:
    spec: Doc = {"podSelector": _labels(pod, None)}
    if types is not None:
        spec["policyTypes"] = list(types)
    if ingress is not None:
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["egress"] = list(egress)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def calico(kind: str, name: str, spec: Doc, ns: str | None = None) -> Doc:
    meta: Doc = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


A = {"pod": "a"}
B = {"pod": "b"}
NS_Y = {"ns": "y"}
ALL_TCP = (TCP80, TCP81)
E = Expect


# ----------------------------------------------------------------------------- the cases


def _ingress_cases() -> list[NetpolCase]:
    deny_a = E("*/*", "x/a", False)
    return [
        NetpolCase("default-deny-ingress", (knp("deny", "x", types=["Ingress"]),), (E("*/*", "x/*", False),)),
        NetpolCase(
            "default-deny-all",
            (knp("deny", "x", types=["Ingress", "Egress"]),),
            (E("*/*", "x/*", False), E("x/*", "*/*", False)),
        ),
        NetpolCase("allow-all-ingress", (knp("allow", "x", ingress=[{}]),), ()),
        NetpolCase(
            "deny-then-allow-all", (knp("deny", "x", types=["Ingress"]), knp("allow", "x", ingress=[{}])), ()
        ),
        NetpolCase(
            "ingress-from-pod-same-ns",
            (knp("p", "x", A, ingress=[{"from": [peer(B)]}]),),
            (deny_a, E("x/b", "x/a", True)),
        ),
        NetpolCase(
            "ingress-from-namespace",
            (knp("p", "x", A, ingress=[{"from": [peer(ns=NS_Y)]}]),),
            (deny_a, E("y/*", "x/a", True)),
        ),
        NetpolCase(
            "ingress-namespace-match-expressions",
            (knp("p", "x", A, ingress=[{"from": [peer(ns_exprs=[("ns", "In", ["y"])])]}]),),
            (deny_a, E("y/*", "x/a", True)),
        ),
        NetpolCase(
            "ingress-pod-match-expressions",
            (knp("p", "x", A, ingress=[{"from": [peer(pod_exprs=[("pod", "In", ["b"])])]}]),),
            (deny_a, E("x/b", "x/a", True)),
        ),
        NetpolCase(
            "ingress-pod-or-namespace-peers",
            (knp("p", "x", A, ingress=[{"from": [peer(ns_exprs=[("ns", "NotIn", ["x"])]), peer(B)]}]),),
            (deny_a, E("y/*", "x/a", True), E("z/*", "x/a", True), E("x/b", "x/a", True)),
        ),
        NetpolCase(
            "ingress-pod-and-namespace-one-peer",
            (knp("p", "x", A, ingress=[{"from": [peer(B, ns_exprs=[("ns", "NotIn", ["x"])])]}]),),
            (deny_a, E("y/b", "x/a", True), E("z/b", "x/a", True)),
        ),
        NetpolCase(
            "ingress-multiple-pods-and-namespaces",
            (
                knp(
                    "p",
                    "x",
                    A,
                    ingress=[
                        {
                            "from": [
                                peer(pod_exprs=[("pod", "In", ["b", "c"])], ns_exprs=[("ns", "NotIn", ["x"])])
                            ]
                        }
                    ],
                ),
            ),
            (
                deny_a,
                E("y/b", "x/a", True),
                E("y/c", "x/a", True),
                E("z/b", "x/a", True),
                E("z/c", "x/a", True),
            ),
        ),
        NetpolCase(
            "ingress-pod-in-other-namespace",
            (knp("p", "x", A, ingress=[{"from": [peer(A, NS_Y)]}]),),
            (deny_a, E("y/a", "x/a", True)),
        ),
        NetpolCase(
            "ingress-all-namespaces-pod-b",
            (knp("p", "x", A, ingress=[{"from": [peer(B, any_ns=True)]}]),),
            (deny_a, E("*/b", "x/a", True)),
        ),
        NetpolCase(
            "ingress-namespace-exists-pod-notin",
            (
                knp(
                    "p",
                    "x",
                    A,
                    ingress=[
                        {"from": [peer(pod_exprs=[("pod", "NotIn", ["a"])], ns_exprs=[("ns", "Exists", [])])]}
                    ],
                ),
            ),
            (deny_a, E("*/b", "x/a", True), E("*/c", "x/a", True)),
        ),
    ]


def _port_cases() -> list[NetpolCase]:
    deny_a = E("*/*", "x/a", False)
    return [
        NetpolCase(
            "ingress-port-81-from-namespace",
            (knp("p", "x", A, ingress=[{"from": [peer(ns=NS_Y)], "ports": [port(81)]}]),),
            (deny_a, E("y/*", "x/a", True, (TCP81,))),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-named-port",
            (knp("p", "x", A, ingress=[{"ports": [port("serve-81-tcp")]}]),),
            (E("*/*", "x/a", False, (TCP80,)),),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-named-port-from-namespace",
            (knp("p", "x", A, ingress=[{"from": [peer(ns=NS_Y)], "ports": [port("serve-80-tcp")]}]),),
            (deny_a, E("y/*", "x/a", True, (TCP80,))),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-allow-all-takes-precedence",
            (knp("p80", "x", A, ingress=[{"ports": [port(80)]}]), knp("all", "x", A, ingress=[{}])),
            (),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-protocol-only",
            (knp("p", "x", A, ingress=[{"ports": [port(None, "TCP")]}]),),
            (E("*/*", "x/a", False, (UDP80,)),),
            (TCP80, TCP81, UDP80),
        ),
        NetpolCase(
            "sctp-is-not-tcp",
            (knp("p", "x", A, ingress=[{"ports": [port(80, "SCTP")]}]),),
            (deny_a,),
        ),
        NetpolCase(
            "ingress-end-port-range",
            (knp("p", "x", A, ingress=[{"ports": [port(81, end=82)]}]),),
            (E("*/*", "x/a", False, (TCP80,)),),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-udp-81",
            (knp("p", "x", A, ingress=[{"ports": [port(81, "UDP")]}]),),
            (deny_a, E("*/*", "x/a", True, (UDP81,))),
            (UDP80, UDP81, TCP81),
        ),
        NetpolCase(
            "ingress-all-namespaces-port-81",
            (knp("p", "x", ingress=[{"from": [peer(any_ns=True)], "ports": [port(81)]}]),),
            (E("*/*", "x/*", False, (TCP80,)),),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-empty-from-list",
            (knp("p", "x", A, ingress=[{"from": [], "ports": [port(80)]}]),),
            (E("*/*", "x/a", False, (TCP81,)),),
            ALL_TCP,
        ),
    ]


def _egress_cases(ips: Mapping[str, str]) -> list[NetpolCase]:
    deny_out = E("x/a", "*/*", False)
    yb = ips["y/b"] + "/32"
    return [
        NetpolCase("egress-deny-pod", (knp("p", "x", A, types=["Egress"]),), (deny_out,)),
        NetpolCase("egress-deny-namespace", (knp("p", "x", types=["Egress"]),), (E("x/*", "*/*", False),)),
        NetpolCase(
            "egress-named-port",
            (knp("p", "x", A, types=["Egress"], egress=[{"ports": [port("serve-80-tcp")]}]),),
            (E("x/a", "*/*", False, (TCP81,)),),
            ALL_TCP,
        ),
        NetpolCase(
            "egress-to-pod-in-other-namespace",
            (knp("p", "x", A, types=["Egress"], egress=[{"to": [peer(A, NS_Y)]}]),),
            (deny_out, E("x/a", "y/a", True)),
        ),
        NetpolCase(
            "egress-allow-all-takes-precedence",
            (
                knp("p80", "x", A, types=["Egress"], egress=[{"ports": [port(80)]}]),
                knp("all", "x", A, types=["Egress"], egress=[{}]),
            ),
            (),
            ALL_TCP,
        ),
        NetpolCase(
            "ingress-and-egress-together",
            (
                knp(
                    "p",
                    "x",
                    A,
                    types=["Ingress", "Egress"],
                    ingress=[{"from": [peer(B)]}],
                    egress=[{"to": [peer(ns=NS_Y)]}],
                ),
            ),
            (E("*/*", "x/a", False), E("x/b", "x/a", True), deny_out, E("x/a", "y/*", True)),
        ),
        NetpolCase(
            "egress-denied-on-client-even-if-server-allows",
            (
                knp("p", "x", A, types=["Egress"], egress=[{"to": [peer(ns=NS_Y)]}]),
                knp("all", "z", ingress=[{}]),
            ),
            (deny_out, E("x/a", "y/*", True)),
        ),
        NetpolCase(
            "egress-ip-block",
            (knp("p", "x", A, types=["Egress"], egress=[{"to": [block(yb)]}]),),
            (deny_out, E("x/a", "y/b", True)),
        ),
        NetpolCase(
            "egress-ip-block-except",
            (knp("p", "x", A, types=["Egress"], egress=[{"to": [block("0.0.0.0/0", yb)]}]),),
            (E("x/a", "y/b", False),),
        ),
        NetpolCase(
            "egress-except-allowed-by-other-policy",
            (
                knp("p", "x", A, types=["Egress"], egress=[{"to": [block("0.0.0.0/0", yb)]}]),
                knp("q", "x", A, types=["Egress"], egress=[{"to": [block(yb)]}]),
            ),
            (),
        ),
        NetpolCase(
            "ingress-ip-block",
            (knp("p", "x", A, ingress=[{"from": [block(ips["z/c"] + "/32")]}]),),
            (E("*/*", "x/a", False), E("z/c", "x/a", True)),
        ),
        NetpolCase(
            "ingress-and-egress-independent",
            (knp("in", "x", A, types=["Ingress"]), knp("out", "x", A, types=["Egress"], egress=[{}])),
            (E("*/*", "x/a", False),),
        ),
        NetpolCase(
            "policy-types-egress-ignores-ingress-rules",
            (
                knp(
                    "p",
                    "x",
                    A,
                    types=["Egress"],
                    ingress=[{"from": [peer(B)]}],
                    egress=[{"to": [peer(ns=NS_Y)]}],
                ),
            ),
            (deny_out, E("x/a", "y/*", True)),
        ),
        NetpolCase(
            "policy-types-default-with-egress",
            (knp("p", "x", A, egress=[{"to": [peer(ns={"ns": "z"})]}]),),
            (E("*/*", "x/a", False), deny_out, E("x/a", "z/*", True)),
        ),
    ]


def _calico_cases(ips: Mapping[str, str]) -> list[NetpolCase]:
    gnp_deny = calico(
        "GlobalNetworkPolicy",
        "deny-y-to-x",
        {
            "order": 10,
            "namespaceSelector": "ns == 'x'",
            "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}],
        },
    )
    pass_np = calico(
        "NetworkPolicy",
        "pass-b",
        {
            "order": 100,
            "selector": "pod == 'a'",
            "ingress": [{"action": "Log"}, {"action": "Pass", "source": {"selector": "pod == 'b'"}}],
        },
        ns="x",
    )
    not_sel = calico(
        "NetworkPolicy",
        "not-c",
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"notSelector": "pod == 'c'"},
                    "destination": {"ports": [80]},
                }
            ]
        },
        ns="x",
    )
    nets = calico(
        "GlobalNetworkPolicy",
        "a-not-to-zb",
        {
            "selector": "pod == 'a'",
            "egress": [
                {"action": "Allow", "destination": {"nets": ["0.0.0.0/0"], "notNets": [ips["z/b"] + "/32"]}}
            ],
        },
    )
    return [
        NetpolCase(
            "calico-deny-before-k8s-allow",
            (gnp_deny, knp("all", "x", ingress=[{}])),
            (E("y/*", "x/*", False),),
        ),
        NetpolCase(
            "calico-pass-skips-k8s-deny",
            (pass_np, knp("deny", "x", types=["Ingress"])),
            (E("*/*", "x/*", False), E("x/b", "x/a", True)),
        ),
        NetpolCase(
            "calico-not-selector-in-namespace",
            (not_sel,),
            (E("*/*", "x/*", False), E("*/*", "x/*", True, (TCP80,)), E("x/c", "x/*", False)),
            ALL_TCP,
        ),
        NetpolCase("calico-global-not-nets", (nets,), (E("*/a", "z/b", False),)),
    ]


def cases(ips: Mapping[str, str] | None = None) -> list[NetpolCase]:
    """Every case, with ipBlock addresses taken from ``ips`` (pod key → address)."""
    ips = dict(ips or DEFAULT_IPS)
    return [*_ingress_cases(), *_port_cases(), *_egress_cases(ips), *_calico_cases(ips)]


CASES: tuple[NetpolCase, ...] = tuple(cases())


# ----------------------------------------------------------------------------- the topology


def namespace_labels() -> dict[str, dict[str, str]]:
    return {ns: {"ns": ns} for ns in NAMESPACES}


def topology(
    ips: Mapping[str, str] | None = None, *, node_of: Mapping[str, str] | None = None
) -> list[Endpoint]:
    """The nine pods as policy endpoints (interface ``cali<ns><pod>``, node from ``node_of``)."""
    ips = dict(ips or DEFAULT_IPS)
    ports = tuple(NamedPort(name, PROTOCOL_NUMBERS[proto.lower()], p) for name, proto, p in NAMED_PORTS)
    return [
        Endpoint(
            key=key,
            namespace=key.split("/")[0],
            labels={"pod": key.split("/")[1]},
            ips=(ips[key],),
            ports=ports,
            iface="cali" + key.replace("/", ""),
            node=(node_of or {}).get(key, "node1"),
            profiles=("kns." + key.split("/")[0],),
        )
        for key in POD_KEYS
    ]
