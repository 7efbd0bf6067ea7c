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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog

from felixpy.calc.updates import ChainsUpdate, HooksUpdate, IpsetsUpdate, PolicyInputsUpdate, Update
from policy.convert import convert_policy, endpoint_from_wep, hep_key, network_set_key

if TYPE_CHECKING:
    from felixpy.resources import HostEndpoint, IPPool, Node, WorkloadEndpoint
    from felixpy.resources.k8s import Namespace, ServiceAccount
    from felixpy.resources.stored import GlobalNetworkSet, NetworkSet, Profile
    from policy.compiler import PolicyCompiler
    from policy.convert import AnyPolicy

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
    short = POLICY_IDS[kind]

    def feed(c: PolicyCompiler, key: Key, obj: Any | None) -> None:
        if obj is None:
            ns, name = key
            c.remove_policy(f"{short}/{ns}/{name}" if ns else f"{short}/{name}")
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
        self._logged = [_Logged() for _ in self.compilers]
        self._host_ips: dict[str, str] = {}  # node name -> its IPv4 address (cali40all-hosts-net)
        self._hooks_sent = False
        self._deleted_workloads: set[Key] = set()
        self._others = False
        self._tiering = self._workloads = self._hosts = False

    def on_resource(self, kind: str, key: Key, obj: Any | None) -> None:
        if kind == "Node":
            if self._on_node(key[1], cast("Node | None", obj)):
                self._hosts = self._others = True
            return
        feed = _FEEDS.get(kind)
        if feed is None:
            return
        if obj is not None and len(self.compilers) > 1:
            obj = _shared_model(kind, obj)
        for compiler in self.compilers:
            feed(compiler, key, obj)
        if kind == "WorkloadEndpoint" and obj is None:
            self._deleted_workloads.add(key)
        else:
            self._others = True
        self._tiering = self._tiering or kind in POLICY_IDS or kind == "Tier"
        self._workloads = self._workloads or kind == "WorkloadEndpoint"

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


def _shared_model(kind: str, obj: Any) -> Any:
    """A workload endpoint or policy converted once for every compiler (each would convert it again:
    with IPv6, 11,000 endpoints at start-up made 22,000 models); the compilers take either form."""
    if kind == "WorkloadEndpoint":
        return endpoint_from_wep(cast("WorkloadEndpoint", obj))
    if kind in POLICY_IDS:
        return convert_policy(cast("AnyPolicy", obj))
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
