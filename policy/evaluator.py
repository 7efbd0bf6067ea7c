"""The reference evaluator: is this one packet (the first of a flow) allowed?

Slow and obviously correct, on purpose: it is the oracle the compiler's output is checked
against (tests/unit/test_policy_crosscheck.py) and the one the kernel conformance tests
compare the real dataplane with. It reads straight from the model, with no indexes.

Semantics (Calico's, reference 8.3): the egress policy of the source (when it is a
workload endpoint) and the ingress policy of the destination (when it is one) must both
allow. Per endpoint and direction: tiers in order, policies by (order, id), first matching
rule wins; Allow ends the direction allowed, Deny denied, Pass skips to the next tier, Log
goes on; a tier with an applicable policy where no rule decided ends with the tier's
defaultAction (Deny, or Pass: on to the next tier); a policy whose tier does not exist applies
to nothing (``policy.tiers``); when no tier applies (or all passed) the endpoint's profiles
decide, in the order the endpoint lists them: a stored profile (``profiles``) by its rules (first
matching rule: Allow allows, Deny denies, Pass or no match: the next profile), an unstored one by
name (a Kubernetes namespace profile ``kns.<ns>`` or ``projectcalico-default-allow`` allows
everything, any other nothing); no profile allowed: denied. A stored profile's ``labelsToApply``
join the label view of the endpoints listing it (``policy.entities.label_view``). A pod talking
to its own address never leaves the pod and is always allowed.

Network sets (``Endpoint.network_set``, passed among the endpoints) own no address and are never
enforced on; a rule ``selector`` matches an address when the endpoint at it matches, or when a network
set whose nets contain it matches; a ``notSelector`` rejects it when either matches (the address is
in the rule's selector ipset either way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

from policy.chains import DEFAULT_FAILSAFE_IN, DEFAULT_FAILSAFE_OUT, profile_allows_all
from policy.convert import protocol_number
from policy.entities import (
    PROTOCOL_NUMBERS,
    Direction,
    Endpoint,
    EntityMatch,
    IcmpMatch,
    Policy,
    PolicyRule,
    Profile,
    label_view,
    profile_labels,
)
from policy.selector import Selector
from policy.tiers import Tiers


@dataclass(frozen=True)
class Flow:
    """The first packet of a flow. ``protocol`` is a name ("TCP") or a number."""

    src_ip: str
    dst_ip: str
    protocol: int | str = "TCP"
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def proto(self) -> int:
        num = protocol_number(self.protocol)
        assert num is not None
        return num


class Evaluator:
    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        policies: Iterable[Policy],
        namespaces: Mapping[str, Mapping[str, str]] | None = None,
        *,
        tier_orders: Mapping[str, float] | None = None,
        tiers: Iterable[Any] = (),
        failsafe_in: Iterable[tuple[str, int]] = DEFAULT_FAILSAFE_IN,
        failsafe_out: Iterable[tuple[str, int]] = DEFAULT_FAILSAFE_OUT,
        service_accounts: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
        profiles: Iterable[Profile] = (),
    ):
        given = list(endpoints)
        self.endpoints = [e for e in given if not e.network_set]
        self.network_sets = [e for e in given if e.network_set]
        self.policies = list(policies)
        self.namespaces = dict(namespaces or {})
        self.service_accounts = dict(service_accounts or {})  # (namespace, name) → labels
        self.profiles = {p.name: p for p in profiles}  # stored profiles
        self.tiers = Tiers(tiers, orders=tier_orders)  # Tier resources or TierInfos; `default` built in
        self.failsafe_in = _failsafe_set(failsafe_in)
        self.failsafe_out = _failsafe_set(failsafe_out)

    # ------------------------------------------------------------------------- lookups

    def endpoint_at(self, ip: str) -> Endpoint | None:
        addr = ip_address(ip)
        for ep in self.endpoints:
            if any(ip_address(a) == addr for a in ep.ips):
                return ep
        return None

    def workload_at(self, ip: str) -> Endpoint | None:
        """The workload endpoint owning ``ip`` (host endpoints' expectedIPs only feed selectors)."""
        ep = self.endpoint_at(ip)
        if ep is not None and ep.host:
            addr = ip_address(ip)
            ep = next((e for e in self.endpoints if not e.host and addr in map(ip_address, e.ips)), None)
        return ep

    def host_endpoint_for(self, iface: str, node: str) -> Endpoint | None:
        """The host endpoint policing ``iface`` on ``node``: the one naming it (earliest key wins,
        as in Felix), else the all-interfaces one (``"*"``), else None (not policed)."""
        heps = sorted((e for e in self.endpoints if e.host and e.node == node), key=lambda e: e.key)
        named = [e for e in heps if e.iface == iface]
        if named or iface.startswith("cali"):
            return named[0] if named else None
        return next((e for e in heps if e.iface == "*"), None)

    def view(self, ep: Endpoint) -> dict[str, str]:
        ns_labels = self.namespaces.get(ep.namespace) if ep.namespace else None
        return label_view(
            ep,
            ns_labels,
            self.service_accounts.get((ep.namespace or "", ep.service_account or "")),
            profile_labels(ep, self.profiles),
        )

    # ------------------------------------------------------------------------- verdicts

    def allowed(self, flow: Flow) -> bool:
        src = self.workload_at(flow.src_ip)
        dst = self.workload_at(flow.dst_ip)
        if src is not None and dst is not None and src.key == dst.key:
            return True
        if src is not None and not self.direction_allows(src, "Egress", flow):
            return False
        return dst is None or self.direction_allows(dst, "Ingress", flow)

    def host_allows(
        self, hep: Endpoint, direction: Direction, flow: Flow, *, forwarded: bool = False
    ) -> bool:
        """A flow into (Ingress) or out of (Egress) the host through ``hep``'s interface, or, with
        ``forwarded``, routed through it (only applyOnForward policies apply; none: allowed)."""
        if not forwarded:
            failsafes = self.failsafe_in if direction == "Ingress" else self.failsafe_out
            if (flow.proto, flow.dst_port) in failsafes:
                return True
        for tier in self.applicable(hep, direction, forwarded=forwarded):
            verdict = self._tier_verdict(tier, direction, flow)
            if verdict != "Pass":
                return verdict == "Allow"
        return forwarded or self.profiles_allow(hep.profiles, direction, flow)

    def applicable(
        self, ep: Endpoint, direction: Direction, *, forwarded: bool = False
    ) -> list[list[Policy]]:
        """The policies that apply, grouped by tier, both in evaluation order."""
        view = self.view(ep)
        tiers: dict[str, list[Policy]] = {}
        for p in self.policies:
            wanted = direction in p.types and (p.apply_on_forward or not forwarded)
            if wanted and p.tier in self.tiers and p.enforced_on(view):
                tiers.setdefault(p.tier, []).append(p)
        return [sorted(tiers[t], key=Policy.sort_key) for t in self.tiers.ordered(tiers)]

    def direction_allows(self, ep: Endpoint, direction: Direction, flow: Flow) -> bool:
        for tier in self.applicable(ep, direction):
            verdict = self._tier_verdict(tier, direction, flow)
            if verdict != "Pass":
                return verdict == "Allow"
        return self.profiles_allow(ep.profiles, direction, flow)

    def profiles_allow(self, names: Iterable[str], direction: Direction, flow: Flow) -> bool:
        """The endpoint's profiles, in order, decide what no policy did (see the module docstring)."""
        for name in names:
            stored = self.profiles.get(name)
            if stored is None:
                if profile_allows_all(name):
                    return True
                continue
            for rule in stored.rules(direction):
                if rule.action != "Log" and self.rule_matches(rule, flow):
                    if rule.action == "Pass":
                        break
                    return rule.action == "Allow"
        return False

    def _tier_verdict(self, tier: list[Policy], direction: Direction, flow: Flow) -> str:
        for policy in tier:
            for rule in policy.rules(direction):
                if rule.action != "Log" and self.rule_matches(rule, flow):
                    return rule.action
        return self.tiers.default_action(tier[0].tier)

    # ------------------------------------------------------------------------- matching

    def rule_matches(self, rule: PolicyRule, flow: Flow) -> bool:
        proto = flow.proto
        version = ip_address(flow.src_ip).version
        if rule.ip_version is not None and rule.ip_version != version:
            return False
        if rule.protocol is not None and rule.protocol != proto:
            return False
        if rule.not_protocol is not None and rule.not_protocol == proto:
            return False
        if rule.icmp is not None and not _icmp_matches(rule.icmp, flow):
            return False
        if rule.not_icmp is not None and _icmp_matches(rule.not_icmp, flow):
            return False
        return self.entity_matches(rule.source, flow.src_ip, flow.src_port, proto) and self.entity_matches(
            rule.destination, flow.dst_ip, flow.dst_port, proto
        )

    def entity_matches(self, m: EntityMatch, ip: str, port: int | None, proto: int) -> bool:
        addr = ip_address(ip)
        if m.nets and not any(_in_net(addr, n) for n in m.nets):
            return False
        if any(_in_net(addr, n) for n in m.not_nets):
            return False
        ep = self.endpoint_at(ip)
        if m.selector is not None and not self._selected(m.selector, ep, addr):
            return False
        if m.not_selector is not None and self._selected(m.not_selector, ep, addr):
            return False
        if m.ports and not any(_port_matches(p, port, proto, ep) for p in m.ports):
            return False
        return not any(_port_matches(p, port, proto, ep) for p in m.not_ports)

    def _selected(self, selector: Selector, ep: Endpoint | None, addr: object) -> bool:
        """``addr`` is in ``selector``'s ipset: the endpoint at it, or a network set holding it, matches."""
        if ep is not None and selector.matches(self.view(ep)):
            return True
        return any(
            any(_in_net(addr, n) for n in s.ips) and selector.matches(self.view(s)) for s in self.network_sets
        )


def _failsafe_set(ports: Iterable[tuple[str, int]]) -> frozenset[tuple[int, int]]:
    return frozenset((PROTOCOL_NUMBERS[proto.lower()], port) for proto, port in ports)


def _in_net(addr: object, net: str) -> bool:
    n = ip_network(net, strict=False)
    return getattr(addr, "version", 0) == n.version and addr in n


def _port_matches(p: object, port: int | None, proto: int, ep: Endpoint | None) -> bool:
    if port is None:
        return False
    if isinstance(p, str):
        return ep is not None and ep.named_port(p, proto) == port
    return port in p  # type: ignore[operator]


def _icmp_matches(m: IcmpMatch, flow: Flow) -> bool:
    if flow.proto not in (1, 58):
        return False
    return flow.icmp_type == m.type and (m.code is None or flow.icmp_code == m.code)
