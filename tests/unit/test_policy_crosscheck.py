"""The compiler's chains and ipsets, run by a tiny iptables interpreter, agree with the evaluator.

The interpreter understands exactly the subset the compiler emits (and fails loudly on
anything else), follows jump/goto/RETURN and mark semantics, and sees every packet as the
first of a new flow (conntrack state NEW). A packet between two nodes crosses the source
node's FORWARD (egress policy) and the destination node's (ingress policy).
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from felixpy.dataplane.kernel_objects import Chain, IpSet
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet
from policy.chains import Hook
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_network_set, policy_from_doc, profile_from_doc, protocol_number
from policy.entities import PROTOCOL_NAMES, Endpoint, Profile
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import (
    CASES,
    DEFAULT_IPS,
    POD_KEYS,
    NetpolCase,
    block,
    calico,
    knp,
    namespace_labels,
    peer,
    port,
    topology,
)

# --------------------------------------------------------------------------- the interpreter


@dataclass
class Packet:
    src: str
    dst: str
    proto: int
    sport: int | None
    dport: int | None
    iif: str
    oif: str
    icmp_type: int | None = None
    icmp_code: int | None = None
    mark: int = 0


class Interpreter:
    def __init__(
        self, chains: dict[tuple[str, str], Chain], ipsets: dict[str, IpSet], hooks: tuple[Hook, ...]
    ):
        self.chains = {name: c for (table, name), c in chains.items() if table == "filter"}
        self.ipsets = ipsets
        self.hooks = hooks
        self.steps = 0

    def forward(self, pkt: Packet) -> bool:
        inserts = [h.rule for h in self.hooks if h.chain == "FORWARD" and h.position == "insert"]
        appends = [h.rule for h in self.hooks if h.chain == "FORWARD" and h.position == "append"]
        verdict = self._run_rules(inserts + appends, pkt)
        return verdict in (None, "ACCEPT")  # kernel FORWARD policy ACCEPT

    def _run(self, name: str, pkt: Packet) -> str | None:
        return self._run_rules(list(self.chains[name].rules), pkt)

    def _run_rules(self, rules: list[Any], pkt: Packet) -> str | None:
        for rule in rules:
            self.steps += 1
            assert self.steps < 100_000, "interpreter loop"
            if not self.matches(rule.match, pkt):
                continue
            verdict = self._act(rule.action, pkt)
            if verdict is not None:
                return verdict
        return None

    def _act(self, action: str, pkt: Packet) -> str | None:
        words = _split(action)
        kind, target = words[0], words[1]
        if target in ("ACCEPT", "DROP", "RETURN"):
            return target
        if target == "MARK":
            value, mask = (int(x, 16) for x in words[3].split("/"))
            pkt.mark = (pkt.mark & ~mask) ^ value
            return None
        if target == "LOG":
            return None
        verdict = self._run(target, pkt)
        if verdict in ("ACCEPT", "DROP"):
            return verdict
        return "RETURN" if kind == "-g" else None

    def matches(self, match: str, pkt: Packet) -> bool:
        words = _split(match)
        i, negate = 0, False
        while i < len(words):
            w = words[i]
            if w == "!":
                negate = True
                i += 1
                continue
            if w == "-m":
                i += 2
                continue
            if w == "--match-set":
                ok, i = self._set_match(words[i + 1], words[i + 2], pkt), i + 3
            else:
                ok, i = self._option(w, words[i + 1], pkt), i + 2
            if ok == negate:
                return False
            negate = False
        return True

    def _option(self, opt: str, arg: str, pkt: Packet) -> bool:
        if opt == "-p":
            return protocol_number({"ipencap": "4"}.get(arg, arg)) == pkt.proto
        if opt in ("-s", "-d"):
            return ip_address(pkt.src if opt == "-s" else pkt.dst) in ip_network(arg)
        if opt in ("-i", "-o"):
            iface = pkt.iif if opt == "-i" else pkt.oif
            return iface.startswith(arg[:-1]) if arg.endswith("+") else iface == arg
        if opt == "--ctstate":
            return "NEW" in arg.split(",")
        if opt == "--mark":
            value, mask = (int(x, 16) for x in arg.split("/"))
            return pkt.mark & mask == value
        if opt in ("--destination-ports", "--source-ports", "--dport"):
            p = pkt.dport if opt != "--source-ports" else pkt.sport
            return p is not None and any(_in_range(p, r) for r in arg.split(","))
        if opt == "--icmp-type":
            t, _, c = arg.partition("/")
            return pkt.icmp_type == int(t) and (not c or pkt.icmp_code == int(c))
        raise AssertionError(f"interpreter does not know {opt} {arg}")

    def _set_match(self, name: str, dirs: str, pkt: Packet) -> bool:
        s = self.ipsets[name]
        parts = dirs.split(",")
        ip = pkt.src if parts[0] == "src" else pkt.dst
        if s.set_type == "hash:net":
            return any(ip_address(ip) in ip_network(m) for m in s.members)
        port = pkt.sport if parts[1] == "src" else pkt.dport
        return f"{ip},{PROTOCOL_NAMES.get(pkt.proto, pkt.proto)}:{port}" in s.members


@cache
def _split(text: str) -> list[str]:
    return shlex.split(text)


def _in_range(p: int, r: str) -> bool:
    lo, _, hi = r.partition(":")
    return int(lo) <= p <= int(hi or lo)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """One compiler per node, fed the same resources; packets cross the nodes' FORWARD chains."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        policies: list[Any],
        namespaces: dict[str, dict[str, str]],
        profiles: Sequence[Profile] = (),
    ):
        self.endpoints = {ip: ep for ep in endpoints if not ep.network_set for ip in ep.ips}
        nodes = sorted({ep.node or "node1" for ep in endpoints if not ep.network_set})
        self.compilers = {n: PolicyCompiler(n) for n in nodes}
        for c in self.compilers.values():
            for profile in profiles:
                c.update_profile(profile)
            for ns, labels in namespaces.items():
                c.update_namespace_labels(ns, labels)
            for ep in endpoints:
                if ep.network_set:
                    c.update_network_set(ep)
                else:
                    c.update_endpoint(ep)
            for p in policies:
                c.update_policy(p)

        self._interpreters: dict[str, Interpreter] = {}

    def interpreter(self, node: str) -> Interpreter:
        if node not in self._interpreters:
            c = self.compilers[node]
            self._interpreters[node] = Interpreter(c.chains(), c.ipsets(), c.hooks())
        return self._interpreters[node]

    def allowed(self, flow: Flow) -> bool:
        src, dst = self.endpoints.get(flow.src_ip), self.endpoints.get(flow.dst_ip)
        hops: list[tuple[str, str, str]] = []  # (node, in iface, out iface)
        if src is not None:
            out = dst.iface if dst is not None and dst.node == src.node else "eth0"
            hops.append((src.node or "", src.iface or "", out or ""))
        if dst is not None and (src is None or src.node != dst.node):
            hops.append((dst.node or "", "eth0", dst.iface or ""))
        for node, iif, oif in hops:
            pkt = Packet(
                flow.src_ip, flow.dst_ip, flow.proto, flow.src_port, flow.dst_port, iif, oif,
                flow.icmp_type, flow.icmp_code,
            )  # fmt: skip
            if not self.interpreter(node).forward(pkt):
                return False
        return True


# --------------------------------------------------------------------------- conformance cases


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_compiled_chains_agree_with_truth_table(case: NetpolCase) -> None:
    nodes = {key: ("node1" if i % 2 == 0 else "node2") for i, key in enumerate(POD_KEYS)}
    cluster = Cluster(
        topology(node_of=nodes), [policy_from_doc(d) for d in case.policies], namespace_labels()
    )
    wrong = []
    for (proto, p), table in case.truth_table().items():
        for (src, dst), expected in table.items():
            if src == dst:
                continue
            if (
                cluster.allowed(Flow(DEFAULT_IPS[src], DEFAULT_IPS[dst], proto, p, src_port=40000))
                != expected
            ):
                wrong.append(f"{proto}/{p} {src}->{dst}: expected {'allow' if expected else 'deny'}")
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------- random scenarios

SELECTORS = ["pod == 'a'", "pod != 'b'", "pod in {'a', 'c'}", "has(pod)", "all()", "!has(pod)", ""]
NS_SELECTORS = ["ns == 'y'", "ns != 'x'", "all()", ""]
PORTS: list[Any] = [80, 81, "80:81", "81:90", "serve-80-tcp", "serve-81-udp", 443]


def _random_calico_rule(rng: random.Random) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": rng.choice(["Allow", "Allow", "Deny", "Pass", "Log"])}
    proto = rng.choice([None, "TCP", "UDP"])
    if proto:
        rule["protocol"] = proto
    elif rng.random() < 0.2:
        rule["notProtocol"] = "UDP"
    for side in ("source", "destination"):
        ent: dict[str, Any] = {}
        if rng.random() < 0.4 and (sel := rng.choice(SELECTORS)):
            ent["selector"] = sel
        if rng.random() < 0.2:
            ent["notSelector"] = rng.choice(SELECTORS[:4])
        if rng.random() < 0.25 and (nss := rng.choice(NS_SELECTORS)):
            ent["namespaceSelector"] = nss
        if rng.random() < 0.25:
            ent["nets"] = rng.sample(
                ["10.8.0.0/24", "10.8.1.0/25", DEFAULT_IPS["z/c"] + "/32", "0.0.0.0/0"], rng.randint(1, 2)
            )
        if rng.random() < 0.2:
            ent["notNets"] = rng.sample([DEFAULT_IPS["x/b"] + "/32", "10.8.2.0/24"], rng.randint(1, 2))
        if proto and rng.random() < 0.5:
            ent["ports"] = rng.sample(PORTS, rng.randint(1, 3))
        if proto and rng.random() < 0.2:
            ent["notPorts"] = rng.sample(PORTS, 1)
        if ent:
            rule[side] = ent
    return rule


def _random_policy(rng: random.Random, i: int) -> dict[str, Any]:
    if rng.random() < 0.5:
        pod = rng.choice([None, {"pod": "a"}, {"pod": "b"}])
        direction = rng.choice(["ingress", "egress"])
        peers: list[dict[str, Any]] = rng.choice(
            [
                [],
                [peer({"pod": "b"})],
                [peer(ns={"ns": "y"})],
                [peer({"pod": "c"}, any_ns=True)],
                [block("10.8.0.0/16", DEFAULT_IPS["y/a"] + "/32")],
            ]
        )
        ports = rng.choice(
            [[], [port(80)], [port("serve-81-udp", "UDP")], [port(80, end=81)], [port(None, "UDP")]]
        )
        rule = {("from" if direction == "ingress" else "to"): peers, "ports": ports}
        types = ["Ingress"] if direction == "ingress" else ["Egress"]
        kw = {direction: [rule] if rng.random() < 0.8 else []}
        return knp(f"k{i}", rng.choice(["x", "y", "z"]), pod, types=types, **kw)
    spec: dict[str, Any] = {"selector": rng.choice(SELECTORS[:-1])}
    if rng.random() < 0.7:
        spec["order"] = rng.choice([1, 5, 100, 1000, 2000])
    spec["ingress"] = [_random_calico_rule(rng) for _ in range(rng.randint(0, 3))]
    spec["egress"] = [_random_calico_rule(rng) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        return calico("NetworkPolicy", f"c{i}", spec, ns=rng.choice(["x", "y", "z"]))
    return calico("GlobalNetworkPolicy", f"g{i}", spec)


def _random_flow(rng: random.Random) -> Flow:
    src = rng.choice([*DEFAULT_IPS.values(), "192.0.2.7"])
    dst = rng.choice([*DEFAULT_IPS.values(), "198.51.100.9"])
    proto = rng.choice(["TCP", "UDP", "ICMP"])
    if proto == "ICMP":
        return Flow(src, dst, proto, icmp_type=8, icmp_code=0)
    return Flow(src, dst, proto, rng.choice([80, 81, 85, 443]), src_port=rng.choice([80, 40000]))


@pytest.mark.parametrize("seed", range(60))
def test_random_scenarios_agree_with_evaluator(seed: int) -> None:
    rng = random.Random(seed)
    policies = [policy_from_doc(_random_policy(rng, i)) for i in range(rng.randint(1, 5))]
    nodes = {key: rng.choice(["node1", "node2"]) for key in POD_KEYS}
    endpoints = topology(node_of=nodes)
    cluster = Cluster(endpoints, policies, namespace_labels())
    oracle = Evaluator(endpoints, policies, namespace_labels())
    for _ in range(60):
        flow = _random_flow(rng)
        if flow.src_ip == flow.dst_ip:
            continue
        assert cluster.allowed(flow) == oracle.allowed(flow), (flow, policies)


NETWORK_SETS = [
    GlobalNetworkSet.model_validate(
        {"metadata": {"name": "outside", "labels": {"pod": "a"}}, "spec": {"nets": ["192.0.2.0/24"]}}
    ),
    NetworkSet.model_validate(
        {
            "metadata": {"name": "partners", "namespace": "y", "labels": {"pod": "b"}},
            "spec": {"nets": ["198.51.100.0/24", DEFAULT_IPS["z/c"]]},  # overlaps a pod's address
        }
    ),
    NetworkSet.model_validate(
        {
            "metadata": {"name": "other", "namespace": "x", "labels": {"role": "x"}},
            "spec": {"nets": ["192.0.2.7"]},
        }
    ),
]


@pytest.mark.parametrize("seed", range(40))
def test_random_scenarios_with_network_sets_agree_with_evaluator(seed: int) -> None:
    """Rule selectors reach network sets (their nets in the selector ipsets) as the evaluator says."""
    rng = random.Random(1000 + seed)
    policies = [policy_from_doc(_random_policy(rng, i)) for i in range(rng.randint(1, 5))]
    nodes = {key: rng.choice(["node1", "node2"]) for key in POD_KEYS}
    endpoints = [*topology(node_of=nodes), *map(endpoint_from_network_set, NETWORK_SETS)]
    cluster = Cluster(endpoints, policies, namespace_labels())
    oracle = Evaluator(endpoints, policies, namespace_labels())
    for _ in range(60):
        flow = _random_flow(rng)
        if flow.src_ip == flow.dst_ip:
            continue
        assert cluster.allowed(flow) == oracle.allowed(flow), (flow, policies)


def _random_profile(rng: random.Random, name: str) -> Profile:
    spec: dict[str, Any] = {
        "ingress": [_random_calico_rule(rng) for _ in range(rng.randint(0, 3))],
        "egress": [_random_calico_rule(rng) for _ in range(rng.randint(0, 3))],
    }
    if rng.random() < 0.6:
        spec["labelsToApply"] = rng.choice([{"team": "blue"}, {"team": "red", "pod": "c"}, {"app": "web"}])
    return profile_from_doc({"kind": "Profile", "metadata": {"name": name}, "spec": spec})


PROFILE_SELECTORS = ["team == 'blue'", "app == 'web' && pod != 'a'", "has(team)"]


@pytest.mark.parametrize("seed", range(40))
def test_random_scenarios_with_profiles_agree_with_evaluator(seed: int) -> None:
    """Stored profiles' rules (cali-pri-/cali-pro- chains, reached when no tier decided) and their
    labelsToApply (in the label view policy selectors see) agree with the evaluator."""
    rng = random.Random(2000 + seed)
    names = ["p0", "p1", "kns.y"]  # a stored kns.y replaces the built-in allow-all
    profiles = [_random_profile(rng, n) for n in names]
    policies = [policy_from_doc(_random_policy(rng, i)) for i in range(rng.randint(0, 3))]
    for i in range(rng.randint(0, 2)):
        rules = [_random_calico_rule(rng) for _ in range(rng.randint(1, 2))]
        doc = {"selector": rng.choice(PROFILE_SELECTORS), "ingress": rules, "egress": rules}
        policies.append(policy_from_doc(calico("GlobalNetworkPolicy", f"pl{i}", doc)))
    nodes = {key: rng.choice(["node1", "node2"]) for key in POD_KEYS}
    endpoints = [
        replace(ep, profiles=tuple(rng.sample([*ep.profiles, *names[:2]], rng.randint(0, 3))))
        for ep in topology(node_of=nodes)
    ]
    cluster = Cluster(endpoints, policies, namespace_labels(), profiles)
    oracle = Evaluator(endpoints, policies, namespace_labels(), profiles=profiles)
    for _ in range(60):
        flow = _random_flow(rng)
        if flow.src_ip == flow.dst_ip:
            continue
        assert cluster.allowed(flow) == oracle.allowed(flow), (flow, policies, profiles)
