"""A policy → its ``cali-pi-<id>`` / ``cali-po-<id>`` chain (reference 2.8).

Each policy rule becomes a match that sets a mark, then action rules conditioned on it:
Allow sets the accept bit and returns, Pass sets the pass bit and returns, Deny drops, Log
logs and goes on. Falling off the chain means "no rule matched". iptables cannot OR inside
one rule, so a rule whose ports need an OR (more than 15 numeric ports, or named ports
beside numeric ones) is emitted as several alternatives that each set scratch0, followed by
the action conditioned on scratch0. Everything else is ANDed inline: one CIDR as ``-s``,
several through a ``NetsSet``; selectors through ``SelectorSet``s; negations with ``!``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import ip_network

from felixpy.dataplane.kernel_objects import Chain, Rule
from policy.chain_names import (
    MARK_ACCEPT,
    MARK_PASS,
    MARK_SCRATCH0,
    mark,
    policy_chain,
    profile_chain,
    set_mark,
)
from policy.entities import (
    PROTOCOL_NAMES,
    Direction,
    EntityMatch,
    IcmpMatch,
    Policy,
    PolicyRule,
    PortRange,
    Profile,
)
from policy.selector import ALL
from policy.set_specs import NamedPortSet, NetsSet, SelectorSet, SetSpec

MULTIPORT_MAX = 15
LOG_PREFIX = "calico-packet"


@dataclass
class _Ctx:
    version: int
    sets: set[SetSpec]

    def use(self, spec: SetSpec) -> str:
        self.sets.add(spec)
        return spec.name


def render_policy(
    policy: Policy, direction: Direction, version: int = 4, *, trim_returns: bool = False
) -> tuple[Chain, frozenset[SetSpec]]:
    """The policy's chain for ``direction`` and the ipsets its rules reference.

    As Calico: a rule's own comment (its annotations) goes on each iptables rule it became and
    the chain's comment ("Policy <id> <direction>") on the first rule only (every comment is a
    match the kernel stores and, on legacy, copies with the whole table on every change);
    ``trim_returns`` (the filter table) drops the RETURNs at the end of the chain, which falling
    off the end does anyway."""
    comment = f"Policy {policy.id} {direction.lower()}"
    return _render_chain(
        policy_chain(policy.id, direction), policy.rules(direction), comment, version, trim_returns
    )


def render_profile(
    profile: Profile, direction: Direction, version: int = 4
) -> tuple[Chain, frozenset[SetSpec]]:
    """A stored profile's ``cali-pri-<name>`` (Ingress) / ``cali-pro-<name>`` (Egress) chain and the
    ipsets its rules reference: its rules as a policy's (Allow sets the accept bit and returns, which
    the endpoint's list chain turns into "Return if profile accepted"; Deny drops; Pass and falling off
    the end go on to the next profile)."""
    comment = f"Profile {profile.name} {direction.lower()}"
    name = profile_chain(profile.name, direction)
    return _render_chain(name, profile.rules(direction), comment, version, trim_returns=True)


def _render_chain(
    name: str, source: Iterable[PolicyRule], chain_comment: str, version: int, trim_returns: bool
) -> tuple[Chain, frozenset[SetSpec]]:
    """Rules rendered in order, each with its own comment, the chain's comment on the first rule."""
    ctx = _Ctx(version, set())
    rules: list[Rule] = []
    for rule in source:
        rules += render_rule(rule, ctx, rule.comment)
    while trim_returns and rules and rules[-1].action == "-j RETURN":
        rules.pop()
    if rules:
        first = rules[0]
        rules[0] = Rule(first.match, first.action, "; ".join(c for c in (first.comment, chain_comment) if c))
    return Chain(name, tuple(rules)), frozenset(ctx.sets)


def render_rule(rule: PolicyRule, ctx: _Ctx, comment: str) -> list[Rule]:
    if rule.ip_version is not None and rule.ip_version != ctx.version:
        return []
    common = _common_match(rule, ctx)
    if common is None:
        return []  # only addresses of the other IP family: cannot match
    src_alts = list(_port_alternatives(rule.source, rule, ctx, "src"))
    dst_alts = list(_port_alternatives(rule.destination, rule, ctx, "dst"))
    matches = [_join(common, s, d) for s in src_alts for d in dst_alts]
    if len(matches) == 1:
        return _action(rule, matches[0], comment)
    out = [Rule("", set_mark(0, MARK_SCRATCH0), comment)]
    out += [Rule(m, set_mark(MARK_SCRATCH0, MARK_SCRATCH0), comment) for m in matches]
    return out + _action(rule, mark(MARK_SCRATCH0, MARK_SCRATCH0), comment)


def _action(rule: PolicyRule, match: str, comment: str) -> list[Rule]:
    if rule.action == "Allow":
        return [
            Rule(match, set_mark(MARK_ACCEPT, MARK_ACCEPT), comment),
            Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j RETURN", comment),
        ]
    if rule.action == "Pass":
        return [
            Rule(match, set_mark(MARK_PASS, MARK_PASS), comment),
            Rule(mark(MARK_PASS, MARK_PASS), "-j RETURN", comment),
        ]
    if rule.action == "Deny":
        return [Rule(match, "-j DROP", comment)]
    return [Rule(match, f'-j LOG --log-prefix "{LOG_PREFIX}: " --log-level 5', comment)]


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# Names every backend parses (iptables-restore and python-iptables, which knows no "udplite"
# or "ipencap"); any other protocol is written as its number, as Calico's ProtocolNum does.
PORTABLE_PROTOCOL_NAMES = frozenset(("tcp", "udp", "icmp", "icmpv6", "sctp"))


def _proto(num: int) -> str:
    name = PROTOCOL_NAMES.get(num, "")
    return name if name in PORTABLE_PROTOCOL_NAMES else str(num)


def _common_match(rule: PolicyRule, ctx: _Ctx) -> str | None:
    parts: list[str] = []
    if rule.protocol is not None:
        parts.append(f"-p {_proto(rule.protocol)}")
    if rule.not_protocol is not None:
        parts.append(f"! -p {_proto(rule.not_protocol)}")
    for entity, side in ((rule.source, "src"), (rule.destination, "dst")):
        m = _entity_match(entity, rule, ctx, side)
        if m is None:
            return None
        parts.append(m)
    if rule.icmp is not None:
        parts.append(_icmp(rule.icmp, ctx.version, negate=False))
    if rule.not_icmp is not None:
        parts.append(_icmp(rule.not_icmp, ctx.version, negate=True))
    return _join(*parts)


def _icmp(m: IcmpMatch, version: int, *, negate: bool) -> str:
    value = str(m.type) if m.code is None else f"{m.type}/{m.code}"
    bang = "! " if negate else ""
    if version == 4:
        return f"-m icmp {bang}--icmp-type {value}"
    return f"-m icmp6 {bang}--icmpv6-type {value}"


def _family_nets(nets: tuple[str, ...], version: int) -> tuple[str, ...]:
    return tuple(n for n in nets if ip_network(n).version == version)


def _entity_match(m: EntityMatch, rule: PolicyRule, ctx: _Ctx, side: str) -> str | None:
    """The ANDed part of one side; None when its nets are all of the other family."""
    flag = "-s" if side == "src" else "-d"
    nets = _family_nets(m.nets, ctx.version)
    if m.nets and not nets:
        return None
    not_nets = _family_nets(m.not_nets, ctx.version)
    parts: list[str] = []
    if len(nets) == 1:
        parts.append(f"{flag} {nets[0]}")
    elif nets:
        parts.append(f"-m set --match-set {ctx.use(NetsSet(tuple(sorted(nets)), ctx.version))} {side}")
    if len(not_nets) == 1 and not nets:
        parts.append(f"! {flag} {not_nets[0]}")
    elif not_nets:
        parts.append(f"-m set ! --match-set {ctx.use(NetsSet(tuple(sorted(not_nets)), ctx.version))} {side}")
    if m.selector is not None:
        parts.append(f"-m set --match-set {ctx.use(SelectorSet(m.selector, ctx.version))} {side}")
    if m.not_selector is not None:
        parts.append(f"-m set ! --match-set {ctx.use(SelectorSet(m.not_selector, ctx.version))} {side}")
    numeric = [p for p in m.not_ports if isinstance(p, PortRange)]
    for chunk in _chunks(numeric):
        parts.append(f"-m multiport ! --{_ports_flag(side)} {chunk}")
    for name in m.named_not_ports:
        parts.append(f"-m set ! --match-set {ctx.use(_named(m, rule, name, ctx))} {side},{side}")
    return _join(*parts)


def _named(m: EntityMatch, rule: PolicyRule, name: str, ctx: _Ctx) -> NamedPortSet:
    assert rule.protocol is not None, "named ports need a protocol"
    return NamedPortSet(m.selector or ALL, rule.protocol, name, ctx.version)


def _ports_flag(side: str) -> str:
    return "source-ports" if side == "src" else "destination-ports"


def _port_alternatives(m: EntityMatch, rule: PolicyRule, ctx: _Ctx, side: str) -> Iterator[str]:
    """The ORed port matches of one side ("" when it has no positive ports)."""
    if not m.ports:
        yield ""
        return
    numeric = [p for p in m.ports if isinstance(p, PortRange)]
    for chunk in _chunks(numeric):
        yield f"-m multiport --{_ports_flag(side)} {chunk}"
    for name in m.named_ports:
        yield f"-m set --match-set {ctx.use(_named(m, rule, name, ctx))} {side},{side}"


def _chunks(ports: list[PortRange]) -> Iterator[str]:
    """Comma lists for multiport, at most 15 port slots each (a range takes two)."""
    chunk: list[str] = []
    used = 0
    for p in ports:
        weight = 1 if p.first == p.last else 2
        if used + weight > MULTIPORT_MAX:
            yield ",".join(chunk)
            chunk, used = [], 0
        chunk.append(str(p))
        used += weight
    if chunk:
        yield ",".join(chunk)
