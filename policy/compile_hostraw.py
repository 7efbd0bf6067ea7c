"""Untracked (``doNotTrack``, raw table) and pre-DNAT (``preDNAT``, mangle table) host endpoint policy.

Calico's semantics (reference 2.9, 2.14, 8.3; the Calico host endpoint docs "Pre-DNAT policy",
"Summary of host endpoint policies"), enforced for this node's host endpoints only:

- *Untracked* policies run in the raw table, before connection tracking. raw ``cali-PREROUTING``
  (packets arriving on an interface) clears our mark bits, does the workload anti-spoofing check
  (``policy.rpf``) and jumps with packets not from a workload to raw
  ``cali-from-host-endpoint``, which sends ``-i <iface>`` to raw ``cali-fh-<iface>`` (the ingress
  untracked policies); raw ``cali-OUTPUT`` (packets the host sends) does the same through
  ``cali-to-host-endpoint`` to ``cali-th-<iface>`` (egress untracked policies). A rule's Allow
  sets the accept mark, NOTRACKs the packet and returns; the top chain then ACCEPTs it, and the
  filter table accepts it at once on the mark ("Accepted earlier"). Deny is a DROP before
  conntrack ever sees the packet. Since replies are not tracked either, the reply direction
  needs its own untracked Allow (e.g. egress ``source.ports``). Forwarded packets only meet the
  ingress policies of the interface they arrive on (raw has no FORWARD hook).
- *Pre-DNAT* policies run in mangle ``cali-PREROUTING``, before the nat table: they match the
  packet's original destination (a NodePort, not the pod it is DNATed to). Ingress only.
  RELATED/ESTABLISHED packets, packets already accepted in raw and packets from workloads are
  ACCEPTed first; then mangle ``cali-from-host-endpoint`` → ``cali-fh-<iface>``. Allow sets the
  accept mark and stops pre-DNAT processing; the packet goes on to nat and filter, where the
  mark skips normal host endpoint policy (Calico: "if a packet is explicitly allowed by pre-DNAT
  policy, it skips over any normal policy"); a forwarded packet still meets the policy of the
  workload it goes to. Deny is a DROP.
- Neither kind has a default deny: a packet no untracked/pre-DNAT policy decides on (no rule
  matched, or every tier passed) falls through to the normal, tracked processing. Failsafe
  ports are never blocked: each endpoint chain first jumps to the table's own
  ``cali-failsafe-in``/``-out``, whose ACCEPT ends the table without the accept mark, so the
  packet is tracked and the filter failsafes accept it. In raw, before conntrack, they also
  accept the replies of failsafe connections (inbound ports as source ports on the way out,
  outbound ports as source ports on the way in), so half a failsafe connection is never untracked.
- Policy chains are named as in filter (``cali-pi-<id>``, ``cali-po-<id>``) in their own table;
  ipsets are shared with the filter chains (reference counted by the compiler).

What felixpy adds where Calico is silent or always-on: these chains, and the jump to them from
the kernel's raw OUTPUT and mangle PREROUTING, exist only while a local host endpoint has an
untracked (raw) or pre-DNAT (mangle) policy, as the filter host endpoint chains exist only while
there are host endpoints. raw ``cali-PREROUTING`` and its hook are always there (the workload RPF
check, with ``cali-rpf-skip``, which the compiler renders); only its untracked part comes and goes.
Only interfaces with such policies are dispatched (a named host endpoint without any is returned
early, so an all-interfaces ``*`` endpoint cannot police it); traffic to or from workload
interfaces (``cali+``: the from-workload mark in raw ``cali-PREROUTING``) is never dispatched here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from felixpy.dataplane.kernel_objects import Chain, Rule, Table
from policy.chain_names import (
    FAILSAFE_IN,
    FAILSAFE_OUT,
    FROM_HOST_ENDPOINT,
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    TO_HOST_ENDPOINT,
    host_endpoint_chain,
    mark,
    policy_chain,
    set_mark,
)
from policy.chains import RETURN_IF_ACCEPTED, ChainConfig, Hook, TierPolicies
from policy.entities import Direction, Policy
from policy.rpf import NOT_FROM_WORKLOAD, workload_rpf_rules
from policy.rules import render_policy
from policy.set_specs import SetSpec
from policy.tiers import Tiers

Kind = Literal["untracked", "prednat"]
TABLES: dict[Kind, Table] = {"untracked": "raw", "prednat": "mangle"}
DIRECTIONS: dict[Kind, tuple[Direction, ...]] = {"untracked": ("Ingress", "Egress"), "prednat": ("Ingress",)}
PREROUTING = "cali-PREROUTING"  # raw and mangle
RAW_OUTPUT = "cali-OUTPUT"
ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED"
# Calico writes "-j NOTRACK", an alias iptables-save prints as this; python-iptables builds the alias
# as a bare CT target (which tracks), so felixpy writes the real target.
NOTRACK = "-j CT --notrack"
ChainKey = tuple[Table, str]


def kind_of(policy: Policy) -> Kind | None:
    """Which pre-filter table enforces ``policy`` (None: the filter table)."""
    if policy.do_not_track:
        return "untracked"
    if policy.pre_dnat:
        return "prednat"
    return None


# ------------------------------------------------------------------------------ policy chains


def prefilter_policy_chain(
    policy: Policy, kind: Kind, direction: Direction, version: int = 4
) -> tuple[Chain, frozenset[SetSpec]]:
    """The policy's chain in raw (untracked: Allow also NOTRACKs) or mangle (pre-DNAT)."""
    chain, sets = render_policy(policy, direction, version)
    rules = chain.rules
    if kind == "untracked":
        rules = _with_notrack(rules)
    return Chain(chain.name, rules, TABLES[kind]), sets


def _with_notrack(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """Before every "accept mark → RETURN" of an Allow, a NOTRACK of the accepted packet."""
    out: list[Rule] = []
    accepted = mark(MARK_ACCEPT, MARK_ACCEPT)
    for rule in rules:
        if rule.match == accepted and rule.action == "-j RETURN":
            out.append(Rule(accepted, NOTRACK, rule.comment))
        out.append(rule)
    return tuple(out)


# ------------------------------------------------------------------------------ endpoint chains


def prefilter_endpoint_chain(
    iface: str, kind: Kind, direction: Direction, tiers: Sequence[TierPolicies]
) -> Chain:
    """raw ``cali-fh-``/``cali-th-<iface>`` or mangle ``cali-fh-<iface>``: failsafes, then the
    tiers; no end-of-tier drop, no profiles: undecided packets return to tracked processing."""
    failsafe = FAILSAFE_IN if direction == "Ingress" else FAILSAFE_OUT
    rules = [
        Rule("", f"-j {failsafe}", "Failsafe ports"),
        Rule("", set_mark(0, MARK_ACCEPT | MARK_PASS), "Clear accept and pass marks"),
    ]
    for tier in tiers:
        rules.append(Rule("", set_mark(0, MARK_PASS), f"Start of tier {tier.tier}"))
        for pid in tier.policy_ids:
            rules.append(Rule(mark(0, MARK_PASS), f"-j {policy_chain(pid, direction)}", f"Policy {pid}"))
            rules.append(RETURN_IF_ACCEPTED)
    return Chain(host_endpoint_chain(iface, direction), tuple(rules), TABLES[kind])


def prefilter_dispatch_chain(
    kind: Kind, direction: Direction, policed: Iterable[str], unpoliced: Iterable[str] = ()
) -> Chain:
    """``cali-from-host-endpoint`` (``-i``) or ``cali-to-host-endpoint`` (``-o``) of raw/mangle.

    ``policed``: interfaces with policy of this kind ("*": every other interface); ``unpoliced``:
    named host endpoints without any, returned early only when a "*" endpoint would catch them."""
    names = sorted(set(policed) - {"*"})
    flag, verb = ("-i", "From") if direction == "Ingress" else ("-o", "To")
    rules = [Rule(f"{flag} {n}", f"-g {host_endpoint_chain(n, direction)}", f"{verb} {n}") for n in names]
    if "*" in set(policed):
        skip = sorted(set(unpoliced) - set(names) - {"*"})
        rules += [Rule(f"{flag} {n}", "-j RETURN", f"{verb} {n}: no {kind} policy") for n in skip]
        target = host_endpoint_chain("*", direction)
        rules.append(Rule("", f"-g {target}", f"{verb} any other interface"))
    root = FROM_HOST_ENDPOINT if direction == "Ingress" else TO_HOST_ENDPOINT
    return Chain(root, tuple(rules), TABLES[kind])


# ------------------------------------------------------------------------------ static chains


def raw_prerouting_chain(cfg: ChainConfig = ChainConfig(), *, untracked: bool = False) -> Chain:
    """raw ``cali-PREROUTING`` (Calico's order): clear our marks, the workload RPF check, then with
    ``untracked`` the host endpoint dispatch for packets not from a workload and the accept."""
    rules = [Rule("", set_mark(0, MARK_ALL), "Clear all marks"), *workload_rpf_rules(cfg.iface_prefixes)]
    if untracked:
        rules += [
            Rule(NOT_FROM_WORKLOAD, f"-j {FROM_HOST_ENDPOINT}", "Untracked host endpoint ingress policy"),
            Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Untracked policy accepted packet"),
        ]
    return Chain(PREROUTING, tuple(rules), "raw")


def raw_static_chains(cfg: ChainConfig = ChainConfig()) -> tuple[Chain, ...]:
    """raw ``cali-PREROUTING`` (with its untracked part), ``cali-OUTPUT`` and the raw failsafe chains."""
    clear = Rule("", set_mark(0, MARK_ALL), "Clear all marks")
    accepted = Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Untracked policy accepted packet")
    out = [clear]
    out += [
        Rule(f"-o {p}+", "-j RETURN", "Workload traffic: no untracked policy") for p in cfg.iface_prefixes
    ]
    out += [Rule("", f"-j {TO_HOST_ENDPOINT}", "Untracked host endpoint egress policy"), accepted]
    return (
        raw_prerouting_chain(cfg, untracked=True),
        Chain(RAW_OUTPUT, tuple(out), "raw"),
        _failsafe(FAILSAFE_IN, cfg.failsafe_in, cfg.failsafe_out, "raw"),
        _failsafe(FAILSAFE_OUT, cfg.failsafe_out, cfg.failsafe_in, "raw"),
    )


def mangle_static_chains(cfg: ChainConfig = ChainConfig()) -> tuple[Chain, ...]:
    """mangle ``cali-PREROUTING`` and the mangle ``cali-failsafe-in``."""
    rules = [
        Rule(ESTABLISHED, "-j ACCEPT", "Accept established and related"),
        Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Accepted earlier by untracked policy"),
    ]
    rules += [
        Rule(f"-i {p}+", "-j ACCEPT", "Workload traffic: no pre-DNAT policy") for p in cfg.iface_prefixes
    ]
    rules += [
        Rule("", f"-j {FROM_HOST_ENDPOINT}", "Pre-DNAT host endpoint policy"),
        Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Host endpoint policy accepted packet."),
    ]
    return Chain(PREROUTING, tuple(rules), "mangle"), _failsafe(FAILSAFE_IN, cfg.failsafe_in, (), "mangle")


def _failsafe(
    name: str, ports: Iterable[tuple[str, int]], reply_ports: Iterable[tuple[str, int]], table: Table
) -> Chain:
    """ACCEPT the failsafe ports (as destination), and the replies of the other direction's
    failsafe connections (their ports as source: needed in raw, which runs before conntrack)."""
    rules = [
        Rule(f"-p {proto} -m {proto} --dport {port}", "-j ACCEPT", "Failsafe host port")
        for proto, port in ports
    ]
    rules += [
        Rule(f"-p {proto} -m {proto} --sport {port}", "-j ACCEPT", "Failsafe host port reply")
        for proto, port in reply_ports
    ]
    return Chain(name, tuple(rules), table)


def prefilter_hooks(kinds: Iterable[Kind]) -> tuple[Hook, ...]:
    """The jumps from the kernel's chains: raw PREROUTING always (workload RPF), the others for the
    kinds of policy in use."""
    wanted = set(kinds)
    out = [Hook("raw", "PREROUTING", Rule("", f"-j {PREROUTING}", "felixpy hook"))]
    if "untracked" in wanted:
        out.append(Hook("raw", "OUTPUT", Rule("", f"-j {RAW_OUTPUT}", "felixpy hook")))
    if "prednat" in wanted:
        out.append(Hook("mangle", "PREROUTING", Rule("", f"-j {PREROUTING}", "felixpy hook")))
    return tuple(out)


# ------------------------------------------------------------------------------ state


@dataclass(frozen=True)
class Delta:
    """What the compiler must do: acquire sets, put chains, drop chains, then release sets."""

    put: tuple[Chain, ...] = ()
    drop: frozenset[ChainKey] = frozenset()
    acquire: frozenset[SetSpec] = frozenset()
    release: frozenset[SetSpec] = frozenset()


@dataclass
class _Hep:
    iface: str
    view: Mapping[str, str] = field(default_factory=dict)


class HostRawPolicies:
    """The untracked and pre-DNAT policies and this node's host endpoints.

    Inputs mark the state dirty; :meth:`sync` re-renders every raw/mangle chain (there are few host
    endpoints and few such policies; rendered policy chains are cached) and returns the difference
    from what it returned before; the first sync brings raw ``cali-PREROUTING``, always present.
    Workload endpoints never get here (``cali-rpf-skip`` is the compiler's).
    """

    def __init__(self, config: ChainConfig | None = None, tiers: Tiers | Mapping[str, float] | None = None):
        self.config = config or ChainConfig()
        self.tiers = tiers if isinstance(tiers, Tiers) else Tiers(orders=tiers)  # shared with the compiler
        self._policies: dict[str, tuple[Policy, Kind]] = {}
        self._heps: dict[str, _Hep] = {}
        self._rendered: dict[tuple[str, Direction], tuple[Policy, Chain, frozenset[SetSpec]]] = {}
        self._chains: dict[ChainKey, Chain] = {}
        self._sets: frozenset[SetSpec] = frozenset()
        self._kinds: frozenset[Kind] = frozenset()
        self._dirty = True  # raw cali-PREROUTING (workload RPF) from the first sync on

    def update_policy(self, policy: Policy) -> None:
        kind = kind_of(policy)
        if kind is None:
            self.remove_policy(policy.id)
        elif self._policies.get(policy.id) != (policy, kind):
            self._policies[policy.id] = (policy, kind)
            self._dirty = True

    def remove_policy(self, policy_id: str) -> None:
        if self._policies.pop(policy_id, None) is not None:
            self._dirty = True

    def update_host_endpoint(self, key: str, iface: str | None, view: Mapping[str, str] | None) -> None:
        """A local host endpoint (``iface`` None or ``view`` None: gone or not local)."""
        if iface is None or view is None:
            if self._heps.pop(key, None) is not None:
                self._dirty = True
            return
        new = _Hep(iface, dict(view))
        if self._heps.get(key) != new:
            self._heps[key] = new
            self._dirty = True

    def tiers_changed(self) -> None:
        """The (shared) tier table changed: orders, or which tiers exist."""
        self._dirty = True

    def knows(self, key: str) -> bool:
        return key in self._heps

    def hooks(self) -> tuple[Hook, ...]:
        return prefilter_hooks(sorted(self._kinds))

    def sync(self) -> Delta | None:
        """Re-render if an input changed; None when nothing did."""
        if not self._dirty:
            return None
        self._dirty = False
        chains, sets, kinds = self._render()
        put = tuple(c for key, c in sorted(chains.items()) if self._chains.get(key) != c)
        drop = frozenset(self._chains.keys() - chains.keys())
        delta = Delta(put, drop, sets - self._sets, self._sets - sets)
        self._chains, self._sets, self._kinds = chains, sets, kinds
        return delta

    # -------------------------------------------------------------------------- rendering

    def _render(self) -> tuple[dict[ChainKey, Chain], frozenset[SetSpec], frozenset[Kind]]:
        chains: dict[ChainKey, Chain] = {}
        sets: set[SetSpec] = set()
        kinds: set[Kind] = set()
        owners = self._owners()
        for stale in [k for k in self._rendered if k[0] not in self._policies]:
            del self._rendered[stale]
        for kind in ("untracked", "prednat"):
            policed: dict[Direction, list[str]] = {}
            for iface, hep in sorted(owners.items()):
                for direction in DIRECTIONS[kind]:
                    tiers = self._tiers(kind, direction, hep.view)
                    if not tiers:
                        continue
                    policed.setdefault(direction, []).append(iface)
                    chain = prefilter_endpoint_chain(iface, kind, direction, tiers)
                    chains[(chain.table, chain.name)] = chain
                    for tier in tiers:
                        for pid in tier.policy_ids:
                            pchain, used = self._policy_chain(pid, kind, direction)
                            chains[(pchain.table, pchain.name)] = pchain
                            sets |= used
            if not policed:
                continue
            kinds.add(kind)
            static = (
                raw_static_chains(self.config) if kind == "untracked" else mangle_static_chains(self.config)
            )
            for direction in DIRECTIONS[kind]:
                dispatch = prefilter_dispatch_chain(kind, direction, policed.get(direction, ()), owners)
                static += (dispatch,)
            chains.update(((c.table, c.name), c) for c in static)
        prerouting = raw_prerouting_chain(self.config, untracked="untracked" in kinds)
        chains[(prerouting.table, prerouting.name)] = prerouting
        return chains, frozenset(sets), frozenset(kinds)

    def _owners(self) -> dict[str, _Hep]:
        """Interface → the host endpoint policing it (earliest key, as in the filter table)."""
        out: dict[str, _Hep] = {}
        for key in sorted(self._heps):
            out.setdefault(self._heps[key].iface, self._heps[key])
        return out

    def _tiers(self, kind: Kind, direction: Direction, view: Mapping[str, str]) -> list[TierPolicies]:
        by_tier: dict[str, list[Policy]] = {}
        for p, k in self._policies.values():
            if k == kind and direction in p.types and p.tier in self.tiers and p.selector.matches(view):
                by_tier.setdefault(p.tier, []).append(p)
        order = self.tiers.ordered(by_tier)
        return [TierPolicies(t, tuple(p.id for p in sorted(by_tier[t], key=Policy.sort_key))) for t in order]

    def _policy_chain(self, pid: str, kind: Kind, direction: Direction) -> tuple[Chain, frozenset[SetSpec]]:
        policy = self._policies[pid][0]
        cached = self._rendered.get((pid, direction))
        if cached is None or cached[0] != policy or cached[1].table != TABLES[kind]:
            chain, used = prefilter_policy_chain(policy, kind, direction, self.config.version)
            cached = self._rendered[(pid, direction)] = (policy, chain, used)
        return cached[1], cached[2]
