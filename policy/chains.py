"""Endpoint, dispatch and static chains, and the hooks into the kernel's chains (reference 2.1-2.7, 2.10).

Verdicts travel as Calico's do: an endpoint chain that allows *returns* with the accept
mark set (its caller was reached by goto from a dispatch chain, so the return lands in
``cali-FORWARD``/``cali-wl-to-host``), and the rule appended to the kernel's FORWARD chain
accepts marked packets; a deny is a DROP in place.

One difference in layout, not in verdicts: what Calico writes into every ``cali-tw-``/``cali-fw-``
chain (conntrack, tiers, profiles) lives in a ``cali-tp-``/``cali-fp-`` chain shared by every
endpoint with the same policies and profiles, and the endpoint chain is one goto to it (see
:func:`policy_list_chain`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from felixpy.dataplane.kernel_objects import Chain, Rule, Table
from policy.chain_names import (
    ALL_HOSTS_ID,
    ALL_POOLS_ID,
    FAILSAFE_IN,
    FAILSAFE_OUT,
    FORWARD,
    FROM_WL_DISPATCH,
    INPUT,
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    MARK_SCRATCH0,
    MARK_SCRATCH1,
    MASQ_POOLS_ID,
    MAX_CHAIN_NAME,
    NAT_OUTGOING,
    NAT_POSTROUTING,
    OUTPUT,
    POLICY_LIST_FROM,
    POLICY_LIST_TO,
    TO_WL_DISPATCH,
    WL_TO_HOST,
    from_endpoint_chain,
    ipset_name,
    mark,
    policy_chain,
    profile_chain,
    set_mark,
    to_endpoint_chain,
)
from policy.selector import b64hash

DEFAULT_FAILSAFE_IN = (
    ("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667),
)  # fmt: skip
DEFAULT_FAILSAFE_OUT = (
    ("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380),
    ("tcp", 5473), ("tcp", 6443), ("tcp", 6666), ("tcp", 6667),
)  # fmt: skip
ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED"
INVALID = "-m conntrack --ctstate INVALID"
RETURN_IF_ACCEPTED = Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j RETURN", "Return if policy accepted")


@dataclass(frozen=True)
class ChainConfig:
    """The FelixConfiguration knobs the static chains depend on."""

    iface_prefixes: tuple[str, ...] = ("cali",)
    endpoint_to_host_action: Literal["ACCEPT", "DROP", "RETURN"] = "ACCEPT"
    ipip_enabled: bool = False
    vxlan_enabled: bool = False
    vxlan_port: int = 4789
    allow_vxlan_from_workloads: bool = False
    allow_ipip_from_workloads: bool = False
    failsafe_in: tuple[tuple[str, int], ...] = DEFAULT_FAILSAFE_IN
    failsafe_out: tuple[tuple[str, int], ...] = DEFAULT_FAILSAFE_OUT
    masq_random_fully: bool = True
    version: int = 4
    # FelixConfiguration workloadSourceSpoofing: "Any" honours endpoints' allowSpoofedSourcePrefixes.
    workload_source_spoofing: Literal["Disabled", "Any"] = "Disabled"


@dataclass(frozen=True)
class Hook:
    """One rule the agent owns in a kernel chain: ``insert`` at the top or ``append`` at the end."""

    table: Table
    chain: str
    rule: Rule
    position: Literal["insert", "append"] = "insert"


@dataclass(frozen=True)
class TierPolicies:
    """The policies of one tier that apply to an endpoint in one direction, in order."""

    tier: str
    policy_ids: tuple[str, ...] = field(default_factory=tuple)
    default_action: Literal["Deny", "Pass"] = "Deny"  # the tier's end when no policy decided


def hooks() -> tuple[Hook, ...]:
    return (
        Hook("filter", "INPUT", Rule("", f"-j {INPUT}", "felixpy hook")),
        Hook("filter", "FORWARD", Rule("", f"-j {FORWARD}", "felixpy hook")),
        Hook("filter", "OUTPUT", Rule("", f"-j {OUTPUT}", "felixpy hook")),
        Hook(
            "filter",
            "FORWARD",
            Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Policy explicitly accepted packet."),
            "append",
        ),
        Hook(
            "filter", "FORWARD", Rule("", set_mark(MARK_ACCEPT, MARK_ACCEPT), "Mark as forwarded"), "append"
        ),
        Hook("nat", "POSTROUTING", Rule("", f"-j {NAT_POSTROUTING}", "felixpy hook"), "append"),
    )


# ------------------------------------------------------------------------------ endpoints


def endpoint_chain(
    iface: str,
    direction: Literal["Ingress", "Egress"],
    tiers: Sequence[TierPolicies],
    profiles: Sequence[str],
    cfg: ChainConfig = ChainConfig(),
) -> Chain:
    """``cali-tw-<iface>`` (Ingress: traffic to the workload) or ``cali-fw-<iface>`` (Egress): a goto
    to the endpoint's :func:`policy_list_chain`, which every endpoint with the same policies and
    profiles shares (the chain keeps Calico's name and per-endpoint packet counters)."""
    return endpoint_chain_to(iface, direction, policy_list_chain(direction, tiers, profiles, cfg))


def endpoint_chain_to(iface: str, direction: Literal["Ingress", "Egress"], body: Chain) -> Chain:
    """The endpoint chain of ``iface`` that goes to the policy list chain ``body``."""
    name = to_endpoint_chain(iface) if direction == "Ingress" else from_endpoint_chain(iface)
    return Chain(name, (Rule("", f"-g {body.name}"),))


def policy_list_chain(
    direction: Literal["Ingress", "Egress"],
    tiers: Sequence[TierPolicies],
    profiles: Sequence[str],
    cfg: ChainConfig = ChainConfig(),
) -> Chain:
    """What Calico puts in each endpoint chain, as one chain shared by every endpoint with the same
    policies and profiles (reference 2.7).

    Conntrack (established accepted, invalid dropped), clear the accept and pass marks, (egress)
    drop encapsulated packets, then the tiers and the profiles, then drop. Reached by goto from
    ``cali-tw-``/``cali-fw-<iface>``, so a RETURN here (accepted) lands where the endpoint chain's
    own return would. Pods of one deployment share labels and namespace, hence policies and
    profiles: one chain serves them all, which keeps the table small (a transaction's cost grows
    with the whole table: legacy replaces it, nft re-validates every reachable rule).
    Named ``cali-tp-`` (to workload) / ``cali-fp-`` (from workload) + a hash of the rules.
    """
    rules = [
        Rule(ESTABLISHED, "-j ACCEPT", "Accept established and related"),
        Rule(INVALID, "-j DROP", "Drop invalid"),
        Rule("", set_mark(0, MARK_ACCEPT | MARK_PASS), "Clear accept and pass marks"),
    ]
    if direction == "Egress":
        rules += _encap_from_workload(cfg)
    rules += tier_rules(tiers, direction)
    rules += profile_rules(profiles, direction)
    return Chain(policy_list_chain_name(direction, rules), tuple(rules))


def policy_list_chain_name(direction: Literal["Ingress", "Egress"], rules: Sequence[Rule]) -> str:
    prefix = POLICY_LIST_TO if direction == "Ingress" else POLICY_LIST_FROM
    digest = b64hash("\n".join(f"{r.match}\t{r.action}\t{r.comment}" for r in rules))
    return prefix + digest[: MAX_CHAIN_NAME - len(prefix)]


def tier_rules(tiers: Sequence[TierPolicies], direction: Literal["Ingress", "Egress"]) -> list[Rule]:
    """Each tier: clear pass, jump to its policies in order (return once one accepts), then the
    end-of-tier drop, unless the tier's defaultAction is Pass (then on to the next tier, or profiles)."""
    rules = []
    for tier in tiers:
        rules.append(Rule("", set_mark(0, MARK_PASS), f"Start of tier {tier.tier}"))
        for pid in tier.policy_ids:  # the jump carries no comment, as in Calico
            rules.append(Rule(mark(0, MARK_PASS), f"-j {policy_chain(pid, direction)}"))
            rules.append(RETURN_IF_ACCEPTED)
        if tier.default_action != "Pass":
            drop = f"End of tier {tier.tier}. Drop if no policies passed packet"
            rules.append(Rule(mark(0, MARK_PASS), "-j DROP", drop))
    return rules


def profile_rules(profiles: Sequence[str], direction: Literal["Ingress", "Egress"]) -> list[Rule]:
    """Jump to each profile (return once one accepts), then drop."""
    rules = []
    for profile in profiles:
        rules.append(Rule("", f"-j {profile_chain(profile, direction)}", f"Profile {profile}"))
        rules.append(Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j RETURN", "Return if profile accepted"))
    rules.append(Rule("", "-j DROP", "Drop if no profiles matched"))
    return rules


def _encap_from_workload(cfg: ChainConfig) -> list[Rule]:
    out = []
    if not cfg.allow_vxlan_from_workloads:
        out.append(
            Rule(
                f"-p udp -m udp --dport {cfg.vxlan_port}",
                "-j DROP",
                "Drop VXLAN encapped packets from workloads",
            )
        )
    if not cfg.allow_ipip_from_workloads:
        out.append(Rule("-p 4", "-j DROP", "Drop IPinIP encapped packets from workloads"))
    return out


def isolated_endpoint_chains(iface: str) -> tuple[Chain, Chain]:
    """tw/fw chains that drop every new flow: installed before the endpoint's policy is known."""
    rules = (
        Rule(ESTABLISHED, "-j ACCEPT", "Accept established and related"),
        Rule("", "-j DROP", "Isolated until the endpoint's policy is programmed"),
    )
    return Chain(to_endpoint_chain(iface), rules), Chain(from_endpoint_chain(iface), rules)


def profile_chains(profile: str) -> tuple[Chain, Chain]:
    """The chains of a profile nobody stored (a stored one: ``policy.rules.render_profile``): Kubernetes
    namespace profiles (``kns.<ns>``) and ``projectcalico-default-allow`` allow all; others carry no rules."""
    allow: tuple[Rule, ...] = ()
    if profile_allows_all(profile):
        allow = (Rule("", set_mark(MARK_ACCEPT, MARK_ACCEPT), f"Profile {profile} allows all"),)
        allow += (Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j RETURN", f"Profile {profile} allows all"),)
    return Chain(profile_chain(profile, "Ingress"), allow), Chain(profile_chain(profile, "Egress"), allow)


DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


def profile_allows_all(profile: str) -> bool:
    return profile.startswith("kns.") or profile == DEFAULT_ALLOW_PROFILE


def dispatch_tree(ifaces: Iterable[str]) -> tuple[Chain, ...]:
    """Calico's dispatch tree (reference 2.6): the roots, then one child chain per group.

    Names are sorted and grouped by the character after their common prefix; a group of more
    than one gets a child ``<root>-<char>`` reached by ``-i <prefix><char>+ -g <child>``,
    singletons stay in the root. A packet is then matched against about ``16 + n/16`` rules
    instead of ``n``: with 1,000 endpoints the flat chains cost forwarding throughput.
    """
    names = sorted(set(ifaces))
    frm = _dispatch_tree(FROM_WL_DISPATCH, "-i", from_endpoint_chain, "From", names)
    to = _dispatch_tree(TO_WL_DISPATCH, "-o", to_endpoint_chain, "To", names)
    return (frm[0], to[0], *frm[1:], *to[1:])


def _dispatch_tree(
    root: str, flag: str, target: Callable[[str], str], verb: str, names: Sequence[str]
) -> list[Chain]:
    unknown = Rule("", "-j DROP", "Unknown interface")
    prefix = _common_prefix(names) if len(names) > 1 else ""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name[len(prefix) : len(prefix) + 1], []).append(name)
    root_rules: list[Rule] = []
    children: list[Chain] = []
    for char, members in sorted(groups.items()):
        leaves = [_dispatch_leaf(flag, n, target(n)) for n in members]  # no comment: as Calico
        if len(members) == 1 or not char:
            root_rules += leaves
            continue
        child = f"{root}-{char}"
        root_rules.append(Rule(f"{flag} {prefix}{char}+", f"-g {child}", f"{verb} {prefix}{char}*"))
        children.append(Chain(child, (*leaves, unknown)))
    return [Chain(root, (*root_rules, unknown)), *children]


@functools.lru_cache(maxsize=1 << 16)
def _dispatch_leaf(flag: str, iface: str, chain: str) -> Rule:
    """One interface's dispatch rule; the same object each time, so the tree re-rendered for one new
    endpoint compares equal to the last one rule by identity, not field by field."""
    return Rule(f"{flag} {iface}", f"-g {chain}")


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def dispatch_chains(ifaces: Iterable[str]) -> tuple[Chain, Chain]:
    """Flat ``cali-from-wl-dispatch`` / ``cali-to-wl-dispatch`` (the compiler uses ``dispatch_tree``)."""
    names = sorted(set(ifaces))
    unknown = Rule("", "-j DROP", "Unknown interface")
    from_rules = [Rule(f"-i {i}", f"-g {from_endpoint_chain(i)}", f"From {i}") for i in names]
    to_rules = [Rule(f"-o {i}", f"-g {to_endpoint_chain(i)}", f"To {i}") for i in names]
    return Chain(FROM_WL_DISPATCH, (*from_rules, unknown)), Chain(TO_WL_DISPATCH, (*to_rules, unknown))


# ------------------------------------------------------------------------------ static chains


def static_chains(cfg: ChainConfig = ChainConfig()) -> tuple[Chain, ...]:
    return (
        _forward(cfg),
        _input(cfg),
        _wl_to_host(cfg),
        _output(cfg),
        _failsafe(FAILSAFE_IN, cfg.failsafe_in),
        _failsafe(FAILSAFE_OUT, cfg.failsafe_out),
        Chain(NAT_POSTROUTING, (Rule("", f"-j {NAT_OUTGOING}", "NAT outgoing"),), "nat"),
    )


def _forward(cfg: ChainConfig) -> Chain:
    rules = [Rule("", set_mark(0, MARK_PASS | MARK_SCRATCH0 | MARK_SCRATCH1), "Clear marks except accept")]
    rules += [Rule(f"-i {p}+", f"-j {FROM_WL_DISPATCH}", "From workload") for p in cfg.iface_prefixes]
    rules += [Rule(f"-o {p}+", f"-j {TO_WL_DISPATCH}", "To workload") for p in cfg.iface_prefixes]
    return Chain(FORWARD, tuple(rules))


def _input(cfg: ChainConfig) -> Chain:
    hosts = ipset_name(ALL_HOSTS_ID, cfg.version)
    rules: list[Rule] = []
    if cfg.ipip_enabled:
        ipip = f"-p 4 -m set --match-set {hosts} src -m addrtype --dst-type LOCAL"
        rules.append(Rule(ipip, "-j ACCEPT", "Allow IPIP packets from Calico hosts"))
        rules.append(Rule("-p 4", "-j DROP", "Drop IPIP packets from non-Calico hosts"))
    if cfg.vxlan_enabled:
        udp = f"-p udp -m udp --dport {cfg.vxlan_port}"
        allow = f"{udp} -m set --match-set {hosts} src -m addrtype --dst-type LOCAL"
        rules.append(Rule(allow, "-j ACCEPT", "Allow VXLAN packets from Calico hosts"))
        rules.append(
            Rule(f"{udp} -m addrtype --dst-type LOCAL", "-j DROP", "Drop VXLAN packets from non-Calico hosts")
        )
    rules += [Rule(f"-i {p}+", f"-g {WL_TO_HOST}", "From workload to host") for p in cfg.iface_prefixes]
    rules.append(Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Accepted earlier"))
    return Chain(INPUT, tuple(rules))


# ICMPv6 a workload must always be able to send to its host, whatever its egress policy: multicast
# listener query/report/done (130-132), router solicitation (133), neighbour solicitation and
# advertisement (135, 136). Without them a pod cannot resolve its gateway (the host veth's link-local
# address) and loses all IPv6. Calico allows the same set here.
ICMPV6_TO_HOST = (130, 131, 132, 133, 135, 136)


def _wl_to_host(cfg: ChainConfig) -> Chain:
    rules = []
    if cfg.version == 6:
        rules += [
            Rule(
                f"-p ipv6-icmp -m icmp6 --icmpv6-type {t}", "-j ACCEPT", "Workload to host ICMPv6 (NDP, MLD)"
            )
            for t in ICMPV6_TO_HOST
        ]
    rules += [
        Rule("", f"-j {FROM_WL_DISPATCH}", "Workload egress policy"),
        Rule("", f"-j {cfg.endpoint_to_host_action}", "Configured DefaultEndpointToHostAction"),
    ]
    return Chain(WL_TO_HOST, tuple(rules))


def _output(cfg: ChainConfig) -> Chain:
    hosts = ipset_name(ALL_HOSTS_ID, cfg.version)
    rules = [Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Accepted earlier")]
    rules += [Rule(f"-o {p}+", "-j RETURN", "Host to workload is not policed") for p in cfg.iface_prefixes]
    if cfg.ipip_enabled:
        ipip = f"-p 4 -m set --match-set {hosts} dst -m addrtype --src-type LOCAL"
        rules.append(Rule(ipip, "-j ACCEPT", "Allow IPIP packets to other Calico hosts"))
    if cfg.vxlan_enabled:
        udp = f"-p udp -m udp --dport {cfg.vxlan_port}"
        vxlan = f"{udp} -m set --match-set {hosts} dst -m addrtype --src-type LOCAL"
        rules.append(Rule(vxlan, "-j ACCEPT", "Allow VXLAN packets to other Calico hosts"))
    rules.append(Rule("", set_mark(0, MARK_ALL), "Clear all marks"))
    return Chain(OUTPUT, tuple(rules))


def _failsafe(name: str, ports: Iterable[tuple[str, int]]) -> Chain:
    rules = tuple(
        Rule(f"-p {proto} -m {proto} --dport {port}", "-j ACCEPT", "Failsafe host port")
        for proto, port in ports
    )
    return Chain(name, rules)


def nat_outgoing_chain(any_nat_pool: bool, cfg: ChainConfig = ChainConfig()) -> Chain:
    """``cali-nat-outgoing``: masquerade pool sources leaving for outside every pool."""
    if not any_nat_pool:
        return Chain(NAT_OUTGOING, (), "nat")
    masq = ipset_name(MASQ_POOLS_ID, cfg.version)
    pools = ipset_name(ALL_POOLS_ID, cfg.version)
    action = "-j MASQUERADE" + (" --random-fully" if cfg.masq_random_fully else "")
    match = f"-m set --match-set {masq} src -m set ! --match-set {pools} dst"
    return Chain(NAT_OUTGOING, (Rule(match, action, "NAT outgoing from natOutgoing pools"),), "nat")
