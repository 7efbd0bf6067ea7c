"""Policy as a calc stage: the synced resources feed the policy compilers (one per IP version), whose
output leaves calc as typed updates (`ChainsUpdate`, `IpsetsUpdate`, `HooksUpdate`), plus one
`PolicyInputsUpdate` per batch saying which inputs changed (the policy writers' deferral decides
from it whether a batch's writes may wait, see ``felixpy.dataplane.deferral``).

What each kind means to the compilers (one table, ``_FEEDS``): workload and host endpoints (every
node's: the compiler enforces only this node's, but any endpoint's addresses belong in the selector
ipsets of rules that pick it by label), GlobalNetworkSets and NetworkSets (their nets join the selector
ipsets of the rules whose selectors match their labels), stored Profiles (their rules decide what no
policy did for the endpoints listing them, their ``labelsToApply`` join those endpoints' labels), the
three policy kinds, tiers, namespaces, IP pools, and every
node's IPv4 address (``cali40all-hosts-net``: VXLAN/IPIP packets are accepted only from these).

A workload endpoint's ``allowSpoofedSourcePrefixes`` is honoured only with FelixConfiguration
``workloadSourceSpoofing: Any`` (``policy.rpf``); each time the set of endpoints whose prefixes are
ignored changes, it is logged (``policy.source_spoofing_ignored``). A policy naming a tier that does
not exist is not applied; each time the set of such policies changes, it is logged
(``policy.tier_missing``).

A policy is never refused here (one stored policy must not stop the agent): each rule part felixpy
does not enforce as written (``http``, ``services``) is logged once per change of the policy
(``policy.rule_unenforced``: policy, rule index, field, reason, what the rule does instead) and
counted (`PolicyCalc.unenforced_counts`, the ``felixpy_policy_rules_unenforced`` gauge); the rule
fails closed (``policy.convert``). A policy that cannot be converted at all (``policy.unconvertible``)
keeps its previously programmed version, or, if it has none, stands as a policy that denies
everything its selected endpoints send/receive in its tier (``policy.convert.deny_all_stand_in``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog

from felixpy.calc.updates import ChainsUpdate, HooksUpdate, IpsetsUpdate, PolicyInputsUpdate, Update
from policy.compiler import SelectionShare
from policy.convert import (
    Unenforced,
    convert_policy,
    deny_all_stand_in,
    endpoint_from_wep,
    hep_key,
    network_set_key,
    unenforced,
)
from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.resources import HostEndpoint, IPPool, Node, WorkloadEndpoint
    from felixpy.resources.k8s import Namespace, ServiceAccount
    from felixpy.resources.stored import GlobalNetworkSet, NetworkSet, Profile
    from policy.compiler import PolicyCompiler
    from policy.convert import AnyPolicy
    from policy.entities import Policy

log = structlog.get_logger(__name__)
Key = tuple[str, str]
# Policy ids are "<short>/<namespace>/<name>" or "<short>/<name>" (policy.convert).
POLICY_IDS = {"NetworkPolicy": "np", "GlobalNetworkPolicy": "gnp", "K8sNetworkPolicy": "knp"}


def _feed_wep(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_endpoint(f"{key[0]}/{key[1]}")
    else:
        c.update_endpoint(cast("WorkloadEndpoint", obj))


def _feed_hep(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_endpoint(hep_key(key[1]))
    else:
        c.update_endpoint(cast("HostEndpoint", obj))


def _policy_feed(kind: str) -> Callable[[PolicyCompiler, Key, Any | None], None]:
    def feed(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
        if obj is None:
            c.remove_policy(_policy_id(kind, key))
        else:
            c.update_policy(cast("AnyPolicy", obj))

    return feed


def _feed_tier(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_tier(key[1])
    else:
        c.update_tier(obj)


def _feed_namespace(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_namespace(key[1])
    else:
        c.update_namespace(cast("Namespace", obj))


def _feed_service_account(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    labels = None if obj is None else dict(cast("ServiceAccount", obj).metadata.labels)
    c.update_service_account_labels(key[0] or "default", key[1], labels)


def _feed_network_set(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_network_set(network_set_key(key[0] or None, key[1]))
    else:
        c.update_network_set(cast("GlobalNetworkSet | NetworkSet", obj))


def _feed_profile(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_profile(key[1])
    else:
        c.update_profile(cast("Profile", obj))


def _feed_pool(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
    if obj is None:
        c.remove_pool(key[1])
    else:
        c.update_pool(cast("IPPool", obj))


# The kinds the compilers consume (Node is handled apart: only its address counts).
_FEEDS: dict[str, Callable[[PolicyCompiler, Key, Any | None], None]] = {
    "WorkloadEndpoint": _feed_wep,
    "HostEndpoint": _feed_hep,
    **{kind: _policy_feed(kind) for kind in POLICY_IDS},
    "Tier": _feed_tier,
    "Namespace": _feed_namespace,
    "ServiceAccount": _feed_service_account,
    "IPPool": _feed_pool,
    "GlobalNetworkSet": _feed_network_set,
    "NetworkSet": _feed_network_set,
    "Profile": _feed_profile,
}


class _Logged:
    """What was last logged of one compiler's ignored inputs (logged again only when it changes)."""

    def __init__(self) -> None:
        self.untiered: dict[str, str] = {}  # policy id -> missing tier
        self.spoof_ignored: dict[str, tuple[str, ...]] = {}  # endpoint -> ignored prefixes


class PolicyCalc:
    """The policy compilers of this node (one per IP version) and what they emitted."""

    def __init__(self, compilers: Sequence[PolicyCompiler]) -> None:
        self.compilers = tuple(compilers)
        # One policy's local selection, computed by the first compiler, taken by the others
        # (policy.compiler.SelectionShare): every compiler gets the same inputs in the same order.
        self._share: SelectionShare | None = None
        if len(self.compilers) > 1:
            self._share = SelectionShare()
            for compiler in self.compilers:
                compiler.selection_share = self._share
        self._logged = [_Logged() for _ in self.compilers]
        self._host_ips: dict[str, str] = {}  # node name -> its IPv4 address (cali40all-hosts-net)
        self._hooks_sent = False
        self._deleted_workloads: set[Key] = set()
        self._others = False
        self._tiering = self._workloads = self._hosts = False
        self._unenforced: dict[str, tuple[Unenforced, ...]] = {}  # policy id -> its unenforced parts
        self._unconvertible: dict[str, str] = {}  # policy id -> why it cannot be converted
        self._programmed: set[str] = set()  # policy ids given to the compilers

    def on_resource(self, kind: str, key: Key, obj: Any | None) -> None:
        if kind == "Node":
            if self._on_node(key[1], cast("Node | None", obj)):
                self._hosts = self._others = True
            return
        feed = _FEEDS.get(kind)
        if feed is None:
            return
        if kind in POLICY_IDS:
            pid = _policy_id(kind, key)
            if obj is None:
                self._forget_policy(pid)
            else:
                obj = self._policy_model(pid, cast("AnyPolicy", obj))
                if obj is None:
                    return  # unconvertible: its previous version stays
                self._programmed.add(pid)
        elif obj is not None and len(self.compilers) > 1:
            obj = _shared_model(kind, obj)
        try:
            for compiler in self.compilers:
                feed(compiler, key, obj)
        finally:
            if self._share is not None:
                self._share.clear()
        if kind == "WorkloadEndpoint" and obj is None:
            self._deleted_workloads.add(key)
        else:
            self._others = True
        self._tiering = self._tiering or kind in POLICY_IDS or kind == "Tier"
        self._workloads = self._workloads or kind == "WorkloadEndpoint"

    def _policy_model(self, pid: str, res: AnyPolicy) -> Policy | None:
        """The policy as the compilers get it; None to keep its previous version (fail closed)."""
        self._note_unenforced(pid, tuple(unenforced(res)))
        try:
            model = convert_policy(res)
        except ValueError as exc:  # ConversionError, or a selector the parser refuses
            keep = pid in self._programmed
            if self._unconvertible.get(pid) != str(exc):
                log.error(
                    "policy.unconvertible",
                    policy=pid,
                    reason=str(exc),
                    action="previous version kept" if keep else "its endpoints denied everything in its tier",
                )
            self._unconvertible[pid] = str(exc)
            if keep:
                return None
            try:
                return deny_all_stand_in(res)
            except ValueError as again:
                log.error("policy.unconvertible", policy=pid, reason=str(again), action="not applied")
                return None
        if self._unconvertible.pop(pid, None) is not None:
            log.info("policy.unconvertible", policy=pid, reason="converts now", action="applied")
        return model

    def _note_unenforced(self, pid: str, notes: tuple[Unenforced, ...]) -> None:
        """Log the policy's unenforced rule parts when they change."""
        if self._unenforced.get(pid, ()) == notes:
            return
        if notes:
            self._unenforced[pid] = notes
            for n in notes:
                log.warning(
                    "policy.rule_unenforced",
                    policy=pid,
                    direction=n.direction,
                    rule=n.index,
                    field=n.field,
                    reason=n.reason,
                    action=n.action,
                    effect=n.message.rsplit("; ", 1)[-1],
                )
        else:
            self._unenforced.pop(pid, None)
            log.info("policy.rule_unenforced", policy=pid, reason="every rule is enforced as written now")

    def _forget_policy(self, pid: str) -> None:
        self._programmed.discard(pid)
        self._unconvertible.pop(pid, None)
        self._unenforced.pop(pid, None)

    def unenforced_counts(self) -> dict[str, int]:
        """Reason -> rule parts not enforced as written, over every policy (safe from another thread)."""
        counts: dict[str, int] = {}
        for notes in tuple(self._unenforced.values()):
            for n in notes:
                counts[n.reason] = counts.get(n.reason, 0) + 1
        return counts

    def unconvertible_count(self) -> int:
        return len(self._unconvertible)

    def _on_node(self, name: str, node: Node | None) -> bool:
        """Track every node's IP; True when it changed."""
        bgp = node.spec.bgp if node is not None else None
        ip = str(bgp.ipv4_address).split("/")[0] if bgp is not None and bgp.ipv4_address else None
        if self._host_ips.get(name) == ip:
            return False
        if ip is None:
            self._host_ips.pop(name, None)
        else:
            self._host_ips[name] = ip
        return True

    def flush(self) -> list[Update]:
        """What the compilers changed since the last flush, IPv4 first."""
        out: list[Update] = []
        if self._deleted_workloads or self._others:
            out.append(PolicyInputsUpdate(frozenset(self._deleted_workloads), self._others))
        for compiler, logged in zip(self.compilers, self._logged, strict=True):
            if self._hosts:
                compiler.set_host_ips(sorted(set(self._host_ips.values())))
            if self._tiering:
                _log_untiered(compiler, logged)
            if self._workloads:
                _log_spoofing_ignored(compiler, logged)
            out += _compiled(compiler, first=not self._hooks_sent)
        self._hooks_sent = True
        self._deleted_workloads.clear()
        self._others = self._tiering = self._workloads = self._hosts = False
        return out


def _policy_id(kind: str, key: Key) -> str:
    ns, name = key
    short = POLICY_IDS[kind]
    return f"{short}/{ns}/{name}" if ns else f"{short}/{name}"


def _shared_model(kind: str, obj: Any) -> Any:
    """A workload endpoint converted once for every compiler (each would convert it again: with IPv6,
    11,000 endpoints at start-up made 22,000 models); the compilers take either form. Policies are
    always converted here (`PolicyCalc._policy_model`)."""
    if kind == "WorkloadEndpoint" and not isinstance(obj, Endpoint):
        return endpoint_from_wep(cast("WorkloadEndpoint", obj))
    return obj


def _compiled(compiler: PolicyCompiler, *, first: bool) -> list[Update]:
    changes = compiler.dirty()
    version = compiler.version
    out: list[Update] = []
    hooks = compiler.hooks() if first else changes.hooks
    if hooks is not None:
        out.append(HooksUpdate(version, tuple(hooks)))
    if changes.ipsets or changes.removed_ipsets:
        out.append(IpsetsUpdate(version, tuple(changes.ipsets.values()), changes.removed_ipsets))
    if changes.chains or changes.removed_chains:
        out.append(ChainsUpdate(version, tuple(changes.chains.values()), changes.removed_chains))
    return out


def _log_spoofing_ignored(compiler: PolicyCompiler, logged: _Logged) -> None:
    ignored = compiler.spoofing_ignored()
    if ignored != logged.spoof_ignored:
        added = {k: list(v) for k, v in ignored.items() if logged.spoof_ignored.get(k) != v}
        logged.spoof_ignored = ignored
        if added:
            log.warning(
                "policy.source_spoofing_ignored",
                endpoints=added,
                version=compiler.version,
                reason="allowSpoofedSourcePrefixes needs FelixConfiguration workloadSourceSpoofing: Any",
            )


def _log_untiered(compiler: PolicyCompiler, logged: _Logged) -> None:
    untiered = compiler.policies_without_tier()
    if untiered != logged.untiered:
        logged.untiered = untiered
        if untiered:
            log.warning(
                "policy.tier_missing", policies=untiered, reason="their tier does not exist: not applied"
            )
        else:
            log.info("policy.tier_missing", policies={}, reason="every policy's tier exists")
