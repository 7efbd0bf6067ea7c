"""Incremental policy compiler: resources in, Calico-layout chains and ipsets out.

One ``PolicyCompiler`` per node and IP version. Handlers update the inputs and recompute
only what depends on them; ``dirty()`` then returns what changed since its last call:

- a policy change re-renders that policy's chains, swaps the ipsets they reference, and
  re-renders the endpoint chains of the local endpoints whose policy list changed;
- an endpoint change re-evaluates it against every policy selector (local endpoints) and
  every ipset in use (all endpoints, local or not);
- a namespace change does the endpoint step for the endpoints in it.

Endpoint chains and the dispatch tree are rendered at ``dirty()`` (or ``chains()``), once per
batch, from the state then: a batch of N new endpoints renders the dispatch tree once. Each
endpoint chain is a goto to a reference-counted policy list chain (``cali-tp-``/``cali-fp-``,
``policy.chains.policy_list_chain``) shared by the endpoints with the same policies and profiles.

Host endpoints (``HostEndpoint``, key ``hep:<name>``) are endpoints too: every node's feed the
selector ipsets with their expectedIPs, this node's get the ``cali-fh-``/``cali-th-`` chains
and dispatch of ``policy.hostendpoints`` (see its docstring for the semantics). Pre-DNAT and
untracked policies select nothing in the filter table: ``policy.compile_hostraw`` renders their
mangle and raw chains (and the hooks into those tables) from the policies and this node's host
endpoints, which the compiler hands it (the ``hostraw`` hooks below).

A policy's chains and ipsets exist only while it applies to at least one local endpoint
(Calico programs only referenced chains). Writers must create ipsets before the chains
that reference them and delete chains before the ipsets.

Local workload endpoints' ``allowSpoofedSourcePrefixes`` (of this compiler's IP version) make raw
``cali-rpf-skip``, the exceptions to the anti-spoofing check in raw ``cali-PREROUTING``
(``policy.rpf``), when ``ChainConfig.workload_source_spoofing`` is ``Any``; otherwise they are
ignored and ``spoofing_ignored`` lists them. The chain is rendered at ``dirty()``, once per batch.

Network sets (``update_network_set``/``remove_network_set``, GlobalNetworkSet and NetworkSet) are
label-selectable members of the selector ipsets: a rule ``selector``/``notSelector`` matching a set's
label view (a NetworkSet's carries its namespace, as a workload's does, so a namespaced policy's rules
see only its own namespace's sets unless a namespaceSelector says otherwise; a GlobalNetworkSet has
no namespace, so only GlobalNetworkPolicy rules and ``namespaceSelector: global()`` reach it) puts the
set's ``nets`` of this IP version in the rule's ``hash:net`` ipset. A set's change (labels, nets,
removal, its namespace's labels) only changes ipset members: no chain is re-rendered.

Profiles (``update_profile``/``remove_profile``, stored ``Profile`` resources): a local endpoint's
list chain jumps to ``cali-pri-``/``cali-pro-<profile>`` for each profile it lists (``policy.chains``);
those chains exist while some local endpoint lists the profile, rendered from the stored profile's rules
(``policy.rules.render_profile``, their ipsets acquired like a policy's), or, for a profile nobody
stored, the built-in ones of ``policy.chains.profile_chains`` (``kns.<ns>`` and
``projectcalico-default-allow`` allow all: Kubernetes mode's synthesised profiles). A stored profile's
``labelsToApply`` joins the label view of every endpoint listing it (``policy.entities.label_view``).

Tiers (``update_tier``/``remove_tier``, see ``policy.tiers``) order the policies and end them; a
policy whose tier does not exist applies to nothing (``policies_without_tier`` lists them) until
the tier is created.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from felixpy.dataplane.kernel_objects import Chain, IpSet, Table
from felixpy.resources.endpoint import HostEndpoint, WorkloadEndpoint
from felixpy.resources.ippool import IPPool
from felixpy.resources.k8s import Namespace
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet
from felixpy.resources.stored import Profile as ProfileResource
from policy.chain_names import (
    ALL_HOSTS_ID,
    ALL_POOLS_ID,
    MASQ_POOLS_ID,
    from_endpoint_chain,
    policy_chain,
    profile_chain,
    to_endpoint_chain,
)
from policy.chains import (
    ChainConfig,
    Hook,
    TierPolicies,
    dispatch_tree,
    endpoint_chain_to,
    hooks,
    nat_outgoing_chain,
    policy_list_chain,
    profile_chains,
    static_chains,
)
from policy.compile_hostraw import HostRawPolicies
from policy.convert import (
    AnyPolicy,
    convert_policy,
    endpoint_from_hep,
    endpoint_from_network_set,
    endpoint_from_wep,
    profile_from_resource,
)
from policy.entities import Direction, Endpoint, Policy, Profile, label_view, profile_labels
from policy.hostendpoints import (
    host_dispatch_chains,
    host_endpoint_chain_names,
    host_endpoint_chains,
    with_host_endpoints,
)
from policy.rpf import rpf_skip_chain, version_prefixes
from policy.rules import render_policy, render_profile
from policy.selector import Selector, b64hash
from policy.set_specs import NetsSet, SetSpec, net_set
from policy.setindex import LabelIndex, SetIndex, scan_strategy
from policy.tiers import Tiers, tier_info

ChainKey = tuple[Table, str]
ListGroup = tuple[frozenset[str], tuple[str, ...]]  # what decides an endpoint's list chains
DIRECTIONS: tuple[Direction, Direction] = ("Ingress", "Egress")
COMPACT_AFTER = 4096  # (policy, endpoint) selection changes after which dirty() right-sizes the sets


@dataclass(frozen=True)
class Changes:
    """What changed since the previous ``dirty()``: write ``chains``/``ipsets``, delete the ``removed_*``;
    ``hooks``: the whole new set of hook rules when it changed (raw/mangle come and go), else None."""

    chains: dict[ChainKey, Chain] = field(default_factory=dict)
    removed_chains: frozenset[ChainKey] = frozenset()
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    removed_ipsets: frozenset[str] = frozenset()
    hooks: tuple[Hook, ...] | None = None

    def __bool__(self) -> bool:
        changed = self.chains or self.removed_chains or self.ipsets or self.removed_ipsets
        return bool(changed or self.hooks is not None)


class SelectionShare:
    """The local endpoints one policy selects, handed from one IP version's compiler to the next.

    Which local endpoints a policy selects does not depend on the IP version: a local endpoint is one
    of this node's with an interface (never left out for lacking an address of the version), its
    label view is made of labels only, and the tiers are the same. So when one caller feeds the same
    inputs to a compiler per IP version in turn (`felixpy.calc.policy_stage.PolicyCalc`), the second
    can take the first's selection of the very same ``Policy`` object instead of evaluating the
    selector over the local endpoints again. The caller empties it (``clear``) after each input."""

    __slots__ = ("policy", "selected")

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.selected: frozenset[str] = frozenset()

    def clear(self) -> None:
        self.policy, self.selected = None, frozenset()


class PolicyCompiler:
    def __init__(
        self,
        node: str,
        *,
        config: ChainConfig | None = None,
        tier_orders: Mapping[str, float] | None = None,
        tiers: Iterable[Any] = (),
    ):
        self.node = node
        self.config = config or ChainConfig()
        self.version = self.config.version
        self.tiers = Tiers(tiers, orders=tier_orders)  # Tier resources or TierInfos; `default` built in
        self.selection_share: SelectionShare | None = None  # set by a caller feeding every IP version
        self._policies: dict[str, Policy] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._netsets: dict[str, Endpoint] = {}  # network set key → the set as an Endpoint
        self._members = ChainMap(self._endpoints, self._netsets)  # what selector ipsets draw from
        self._views: dict[str, dict[str, str]] = {}
        self._by_label = LabelIndex()  # over every view: the candidates of a selector (start-up cost)
        self._by_label_local = LabelIndex()  # the same over the local endpoints' views only
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._sa_labels: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) → labels
        self._local: dict[str, str] = {}  # local endpoint key → interface (workloads and hosts)
        self._hep_keys: set[str] = set()  # the local host endpoints among them
        self._selected: dict[str, set[str]] = {}  # policy id → local endpoint keys it selects
        self._ep_policies: dict[str, set[str]] = {}  # local endpoint key → policy ids
        self._selection_changes = 0  # (policy, endpoint) pairs changed since the last compaction
        self._policy_sets: dict[str, frozenset[SetSpec]] = {}  # active policy id → sets it uses
        self._profile_refs: dict[str, int] = {}
        self._local_profiles: dict[str, tuple[str, ...]] = {}
        self._profiles: dict[str, Profile] = {}  # stored profiles, by name
        self._profile_sets: dict[str, frozenset[SetSpec]] = {}  # referenced profile -> sets its rules use
        self._pools: dict[str, tuple[str, bool]] = {}
        self._host_ips: frozenset[str] = frozenset()
        self._sets = SetIndex()
        self._chains: dict[ChainKey, Chain] = {}
        self._own_sets: dict[str, IpSet] = {}  # pools / hosts sets, outside the index
        self._own_dirty: set[str] = set()
        self._dirty_chains: set[ChainKey] = set()
        self._emitted_chains: dict[ChainKey, Chain] = {}
        self._emitted_sets: dict[str, IpSet] = {}
        self._dispatch_keys: set[ChainKey] = set()
        # Rendering that waits for dirty()/chains(): a batch of N endpoint updates renders the
        # dispatch tree once, not N times, and each endpoint's chains once.
        self._pending_endpoints: set[str] = set()
        self._pending_dispatch = False
        self._list_of: dict[tuple[str, Direction], str] = {}  # (endpoint key, direction) -> list chain
        self._list_refs: dict[str, int] = {}  # policy list chain -> endpoints using it
        # A list chain is named by a hash of its rules when made, but keeps its name when every
        # endpoint using it moves to the same new rules (rewritten in place, _move_lists_in_place):
        # its name -> the content name (policy_list_chain's) of its rules now, and back.
        self._list_content: dict[str, str] = {}
        self._list_by_content: dict[str, str] = {}
        # Local workload key -> (iface, its allowSpoofedSourcePrefixes of this version), when honoured;
        # the keys whose prefixes workloadSourceSpoofing Disabled ignores -> those prefixes.
        self._spoof: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._spoof_ignored: dict[str, tuple[str, ...]] = {}
        self._pending_rpf = True  # cali-rpf-skip to render (it always exists: raw PREROUTING jumps to it)
        self._static = static_chains(self.config)
        self._hostraw = HostRawPolicies(self.config, self.tiers)  # hostraw: raw/mangle tables
        self._emitted_hooks = hooks() + self._hostraw.hooks()  # raw PREROUTING's is always there
        self._render_dispatch()
        self._render_host_dispatch()
        self._render_pools()
        self._render_hosts()

    # ------------------------------------------------------------------------------ outputs

    def hooks(self) -> tuple[Hook, ...]:
        self._sync_hostraw()
        return hooks() + self._hostraw.hooks()

    def chains(self) -> dict[ChainKey, Chain]:
        self._flush()
        self._sync_hostraw()
        return dict(self._chains)

    def ipsets(self) -> dict[str, IpSet]:
        self._sync_hostraw()
        out = dict(self._own_sets)
        for name in self._sets.names():
            ipset = self._sets.ipset(name)
            assert ipset is not None
            out[name] = ipset
        return out

    def dirty(self) -> Changes:
        self._flush()
        if self._selection_changes >= COMPACT_AFTER:
            self._compact_selections()
        new_hooks = self.hooks()  # (syncs the raw/mangle chains first)
        changed_hooks = new_hooks if new_hooks != self._emitted_hooks else None
        self._emitted_hooks = new_hooks
        chains: dict[ChainKey, Chain] = {}
        removed_chains: set[ChainKey] = set()
        for key in self._dirty_chains:
            now, before = self._chains.get(key), self._emitted_chains.get(key)
            if now is None and before is not None:
                removed_chains.add(key)
                del self._emitted_chains[key]
            elif now is not None and now != before:
                chains[key] = self._emitted_chains[key] = now
        self._dirty_chains.clear()
        ipsets: dict[str, IpSet] = {}
        removed_sets: set[str] = set()
        for name in self._sets.dirty | self._own_dirty:
            now_set = self._own_sets.get(name) or self._sets.ipset(name)
            before_set = self._emitted_sets.get(name)
            if now_set is None and before_set is not None:
                removed_sets.add(name)
                del self._emitted_sets[name]
            elif now_set is not None and now_set != before_set:
                ipsets[name] = self._emitted_sets[name] = now_set
        self._sets.dirty.clear()
        self._own_dirty.clear()
        return Changes(chains, frozenset(removed_chains), ipsets, frozenset(removed_sets), changed_hooks)

    def _compact_selections(self) -> None:
        """Right-size the selection sets after a burst (the start-up snapshot, a large policy or
        label change). A set grown one key at a time keeps the table of its last resize, up to
        four times what it holds (a 100-key selection: 8.4 KB grown, 4.3 KB copied); at x10 these
        maps held ~13 MB. One copy per set, only after ``COMPACT_AFTER`` (policy, endpoint) pairs
        joined or left a selection."""
        for sets in (self._selected, self._ep_policies):
            for key, members in sets.items():  # values replaced, keys unchanged: no resize
                sets[key] = set(members)
        self._selection_changes = 0

    # ------------------------------------------------------------------------------ policies

    def update_policy(self, policy: Policy | AnyPolicy) -> None:
        p = policy if isinstance(policy, Policy) else convert_policy(policy)
        old = self._policies.get(p.id)
        self._policies[p.id] = p
        old_sel = self._selected.get(p.id, set())
        if old is not None and _selection(old) == _selection(p):
            new_sel = set(old_sel)
        elif p.tier in self.tiers and p.filter_table:  # (Policy.enforced_on, its test hoisted)
            share = self.selection_share
            if share is not None and share.policy is p:
                new_sel = set(share.selected)  # the other IP version's compiler selected it just now
            else:
                views, matches = self._views, p.selector.matches
                new_sel = {k for k in self._local_candidates(p.selector) if matches(views[k])}
                if share is not None:
                    share.policy, share.selected = p, frozenset(new_sel)
        else:
            new_sel = set()  # its tier does not exist: not applied
        affected = old_sel ^ new_sel
        if old is None or _placement(old) != _placement(p):
            affected |= new_sel
        self._set_selection(p.id, new_sel, rerender=old != p)
        self._pending_endpoints |= affected  # (_render_endpoint for each: ~100 per policy at start-up)
        self._hostraw.update_policy(p)

    def remove_policy(self, policy_id: str) -> None:
        if policy_id not in self._policies:
            return
        affected = set(self._selected.get(policy_id, set()))
        self._set_selection(policy_id, set(), rerender=False)
        del self._policies[policy_id]
        self._selected.pop(policy_id, None)
        self._hostraw.remove_policy(policy_id)
        self._pending_endpoints |= affected  # (_render_endpoint for each: ~100 per policy at start-up)

    def _applies(self, p: Policy, view: Mapping[str, str]) -> bool:
        """``p`` is enforced on an endpoint with this view: its selector matches and its tier exists."""
        return p.enforced_on(view) and p.tier in self.tiers

    def spoofing_ignored(self) -> dict[str, tuple[str, ...]]:
        """Local workload endpoint key -> the allowSpoofedSourcePrefixes ignored because
        FelixConfiguration ``workloadSourceSpoofing`` is not ``Any`` (every IP version)."""
        return dict(self._spoof_ignored)

    def policies_without_tier(self) -> dict[str, str]:
        """Policy id → the tier it names, for every policy whose tier does not exist (not applied)."""
        return {pid: p.tier for pid, p in self._policies.items() if p.tier not in self.tiers}

    # ------------------------------------------------------------------------------ tiers

    def update_tier(self, tier: Any) -> None:
        """A ``Tier`` resource (or a ``TierInfo``) was created or changed."""
        name = tier_info(tier).name
        existed = name in self.tiers
        if self.tiers.put(tier):
            self._tier_changed(name, existed)

    def remove_tier(self, name: str) -> None:
        existed = name in self.tiers
        if self.tiers.remove(name):
            self._tier_changed(name, existed)

    def _tier_changed(self, name: str, existed: bool) -> None:
        """A tier came or went: re-select its policies. Its order or defaultAction changed:
        re-render the endpoints its policies apply to (their policy list chains change)."""
        came_or_went = existed != (name in self.tiers)
        for p in [p for p in self._policies.values() if p.tier == name]:
            old_sel = set(self._selected.get(p.id, set()))
            if came_or_went:
                new_sel = {k for k in self._local if self._applies(p, self._views[k])}
                self._set_selection(p.id, new_sel, rerender=False)
                old_sel |= new_sel
            for key in old_sel:
                self._render_endpoint(key)
        self._hostraw.tiers_changed()

    def _set_selection(self, pid: str, new_sel: set[str], *, rerender: bool) -> None:
        old_sel = self._selected.get(pid, set())
        removed, added = old_sel - new_sel, new_sel - old_sel
        for key in removed:
            self._ep_policies[key].discard(pid)
        ep_policies = self._ep_policies
        for key in added:
            pids = ep_policies.get(key)
            if pids is None:
                ep_policies[key] = {pid}
            else:
                pids.add(pid)
        self._selected[pid] = new_sel
        self._selection_changes += len(removed) + len(added)
        was_active, active = pid in self._policy_sets, bool(new_sel)
        if active and (rerender or not was_active):
            self._activate(self._policies[pid])
        elif was_active and not active:
            self._deactivate(pid)

    def _activate(self, p: Policy) -> None:
        """(Re)render an active policy's chains; acquire new sets before releasing old ones."""
        sets: set[SetSpec] = set()
        for direction in DIRECTIONS:
            if direction in p.types:
                chain, used = render_policy(p, direction, self.version, trim_returns=True)
                self._put(chain)
                sets |= used
            else:
                self._drop(("filter", policy_chain(p.id, direction)))
        for spec in sets:
            self._acquire(spec)
        for spec in self._policy_sets.get(p.id, frozenset()):
            self._sets.release(spec)
        self._policy_sets[p.id] = frozenset(sets)

    def _local_candidates(self, selector: Selector) -> Iterable[str]:
        """The local endpoints ``selector`` may select (all of them when it has no ``==`` term)."""
        keys = self._by_label_local.candidates(selector)
        return self._local if keys is None else keys

    def _acquire(self, spec: SetSpec) -> None:
        """Take a reference to ``spec``; a new selector set is filled from its candidates."""
        if spec.name in self._sets or isinstance(spec, NetsSet):  # only counted: no scan
            self._sets.acquire(spec, {}, self._views)
            return
        keys = self._by_label.candidates(spec.selector)
        if keys is None:
            candidates: Mapping[str, Endpoint] = self._members
        else:
            endpoints, netsets = self._endpoints, self._netsets  # (a ChainMap's lookups are slow)
            candidates = {k: endpoints.get(k) or netsets[k] for k in keys if k in endpoints or k in netsets}
        self._sets.acquire(spec, candidates, self._views, scan_strategy(keys))

    def _deactivate(self, pid: str) -> None:
        for direction in DIRECTIONS:
            self._drop(("filter", policy_chain(pid, direction)))
        for spec in self._policy_sets.pop(pid):
            self._sets.release(spec)

    # ------------------------------------------------------------------------------ endpoints

    def update_endpoint(self, endpoint: Endpoint | WorkloadEndpoint | HostEndpoint) -> None:
        """A workload or host endpoint (remove a HostEndpoint with ``remove_endpoint(hep_key(name))``)."""
        if isinstance(endpoint, HostEndpoint):
            ep = endpoint_from_hep(endpoint)
        else:
            ep = endpoint if isinstance(endpoint, Endpoint) else endpoint_from_wep(endpoint)
        if self._inert(ep):
            self.remove_endpoint(ep.key)  # (it may have had an address of this version until now)
            return
        self._endpoints[ep.key] = ep
        self._reindex(ep.key)

    def _inert(self, ep: Endpoint) -> bool:
        """Whether ``ep`` is another node's endpoint without an address of this IP version: such an
        endpoint gets no chains here (only local ones do) and joins no ipset (members are addresses
        of this version), so the compiler leaves it out instead of indexing its labels and testing
        it against every set. At x10 that is the IPv6 compiler's 10,000 IPv4-only remote endpoints:
        their views, label index entries and set checks (CPU and RSS at start-up)."""
        if ep.node == self.node and ep.iface:
            return False
        v6 = self.version == 6
        return not any((":" in ip) == v6 for ip in ep.ips)

    def remove_endpoint(self, key: str) -> None:
        if key not in self._endpoints:
            return
        del self._endpoints[key]
        self._reindex(key)

    def update_network_set(self, netset: Endpoint | GlobalNetworkSet | NetworkSet) -> None:
        """A GlobalNetworkSet or NetworkSet created or changed (remove it with ``remove_network_set``)."""
        ep = netset if isinstance(netset, Endpoint) else endpoint_from_network_set(netset)
        self._netsets[ep.key] = ep
        self._reindex_network_set(ep.key)

    def remove_network_set(self, key: str) -> None:
        """Forget the network set ``key`` (``policy.convert.network_set_key``)."""
        if self._netsets.pop(key, None) is not None:
            self._reindex_network_set(key)

    def _reindex_network_set(self, key: str) -> None:
        """A network set's view changed: only the members of the ipsets in use change."""
        ep = self._netsets.get(key)
        view = None
        old_view = self._views.get(key)
        if ep is None:
            self._views.pop(key, None)
        else:
            view = self._views[key] = label_view(ep, self._ns_labels.get(ep.namespace or ""))
        self._by_label.update(key, old_view, view)
        self._sets.update_endpoint(key, ep, view)

    def update_namespace(self, namespace: Namespace) -> None:
        self.update_namespace_labels(namespace.name, namespace.metadata.labels)

    def update_namespace_labels(self, name: str, labels: Mapping[str, str] | None) -> None:
        """Set (or, with None, forget) a namespace's labels and re-index its endpoints."""
        if labels is None:
            self._ns_labels.pop(name, None)
        else:
            self._ns_labels[name] = dict(labels)
        for key, ep in list(self._endpoints.items()):
            if ep.namespace == name:
                self._reindex(key)
        for key, ep in list(self._netsets.items()):
            if ep.namespace == name:
                self._reindex_network_set(key)

    def remove_namespace(self, name: str) -> None:
        self.update_namespace_labels(name, None)

    def update_service_account_labels(
        self, namespace: str, name: str, labels: Mapping[str, str] | None
    ) -> None:
        """Set (or, with None, forget) a ServiceAccount's labels and re-index the endpoints running as it."""
        if labels is None:
            self._sa_labels.pop((namespace, name), None)
        else:
            self._sa_labels[(namespace, name)] = dict(labels)
        for key, ep in list(self._endpoints.items()):
            if ep.namespace == namespace and ep.service_account == name:
                self._reindex(key)

    def _reindex(self, key: str) -> None:
        ep = self._endpoints.get(key)
        view = None
        old_view = self._views.get(key)
        if ep is None:
            self._views.pop(key, None)
        else:
            ns_labels = self._ns_labels.get(ep.namespace) if ep.namespace else None
            sa_labels = self._sa_labels.get((ep.namespace or "", ep.service_account or ""))
            inherited = profile_labels(ep, self._profiles) if self._profiles else ()
            view = self._views[key] = label_view(ep, ns_labels, sa_labels, inherited)
        self._by_label.update(key, old_view, view)
        self._sets.update_endpoint(key, ep, view)
        is_local = ep is not None and ep.node == self.node and bool(ep.iface)
        was_local = key in self._local
        self._by_label_local.update(key, old_view if was_local else None, view if is_local else None)
        old_pids = self._ep_policies.get(key, set())
        new_pids: set[str] = set()
        if is_local and view is not None:
            tiers = self.tiers.names()
            new_pids = {pid for pid, p in self._policies.items() if p.enforced_on(view) and p.tier in tiers}
        for pid in old_pids | new_pids:
            if (pid in new_pids) != (pid in old_pids):
                sel = set(self._selected.get(pid, set()))
                (sel.add if pid in new_pids else sel.discard)(key)
                self._set_selection(pid, sel, rerender=False)
        self._update_local(key, ep if is_local else None)
        local_host = ep is not None and is_local and ep.host
        if local_host or self._hostraw.knows(key):
            self._hostraw.update_host_endpoint(key, ep.iface if ep is not None and local_host else None, view)

    def _update_local(self, key: str, ep: Endpoint | None) -> None:
        old_iface = self._local.get(key)
        if ep is None and old_iface is None:
            # Not local now and not before (another node's endpoint: 10,000 at x10 start-up): it holds
            # no list chain, profile reference, spoofing entry or policy selection to undo.
            return
        was_host = key in self._hep_keys
        if old_iface is not None and not was_host and (ep is None or ep.iface != old_iface):
            self._drop(("filter", to_endpoint_chain(old_iface)))
            self._drop(("filter", from_endpoint_chain(old_iface)))
        if ep is None or ep.host:
            self._release_lists(key)
        old_profiles = self._local_profiles.pop(key, ())
        self._hep_keys.discard(key)
        if ep is None:
            self._local.pop(key, None)
            self._ep_policies.pop(key, None)
        else:
            assert ep.iface is not None
            self._local[key] = ep.iface
            self._ep_policies.setdefault(key, set())
            self._local_profiles[key] = ep.profiles
            if ep.host:
                self._hep_keys.add(key)
        self._ref_profiles(self._local_profiles.get(key, ()), +1)
        self._ref_profiles(old_profiles, -1)
        self._update_spoof(key, None if ep is None or ep.host else ep)
        if ep is not None:
            self._render_endpoint(key)
        if was_host and old_iface is not None and old_iface != self._local.get(key):
            self._render_host_iface(old_iface)  # another host endpoint may take it over, or none
        if old_iface != self._local.get(key) or was_host != (key in self._hep_keys):
            self._pending_dispatch = True

    def _update_spoof(self, key: str, ep: Endpoint | None) -> None:
        """A local workload endpoint (None: gone or not one): its entries in ``cali-rpf-skip``."""
        prefixes = ep.allowed_source_prefixes if ep is not None else ()
        honoured = self.config.workload_source_spoofing == "Any"
        if prefixes and not honoured:
            self._spoof_ignored[key] = tuple(prefixes)
        else:
            self._spoof_ignored.pop(key, None)
        mine = version_prefixes(prefixes, self.version) if honoured else ()
        new = (ep.iface, mine) if ep is not None and ep.iface and mine else None
        if self._spoof.get(key) != new:
            if new is None:
                del self._spoof[key]
            else:
                self._spoof[key] = new
            self._pending_rpf = True

    # ------------------------------------------------------------------------------ profiles

    def update_profile(self, profile: Profile | ProfileResource) -> None:
        """A stored Profile created or changed: its chains re-rendered if a local endpoint lists it, the
        endpoints listing it re-indexed if its ``labelsToApply`` changed."""
        p = profile if isinstance(profile, Profile) else profile_from_resource(profile)
        old = self._profiles.get(p.name)
        self._profiles[p.name] = p
        if p.name in self._profile_refs and (
            old is None or (old.ingress, old.egress) != (p.ingress, p.egress)
        ):
            self._render_profile(p.name)
        if (old.labels if old is not None else {}) != p.labels:
            self._reindex_listing(p.name)

    def remove_profile(self, name: str) -> None:
        """A stored Profile deleted: a ``kns.*`` name falls back to the built-in allow-all, others to none."""
        old = self._profiles.pop(name, None)
        if old is None:
            return
        if name in self._profile_refs:
            self._render_profile(name)
        if old.labels:
            self._reindex_listing(name)

    def _reindex_listing(self, name: str) -> None:
        for key, ep in list(self._endpoints.items()):
            if name in ep.profiles:
                self._reindex(key)

    def _ref_profiles(self, profiles: Iterable[str], delta: int) -> None:
        for profile in profiles:
            before = self._profile_refs.get(profile, 0)
            n = before + delta
            if n == 0:
                del self._profile_refs[profile]
                for direction in DIRECTIONS:
                    self._drop(("filter", profile_chain(profile, direction)))
                for spec in self._profile_sets.pop(profile, frozenset()):
                    self._sets.release(spec)
            else:
                self._profile_refs[profile] = n
                if before == 0:
                    self._render_profile(profile)

    def _render_profile(self, name: str) -> None:
        """(Re)render a referenced profile's chains; acquire new sets before releasing old ones."""
        stored = self._profiles.get(name)
        sets: set[SetSpec] = set()
        if stored is None:
            chains: tuple[Chain, ...] = profile_chains(name)
        else:
            rendered = [render_profile(stored, d, self.version) for d in DIRECTIONS]
            chains = tuple(c for c, _ in rendered)
            for _, used in rendered:
                sets |= used
        for chain in chains:
            self._put(chain)
        for spec in sets:
            self._acquire(spec)
        for spec in self._profile_sets.get(name, frozenset()):
            self._sets.release(spec)
        self._profile_sets[name] = frozenset(sets)

    def _render_endpoint(self, key: str) -> None:
        self._pending_endpoints.add(key)

    def _flush(self) -> None:
        """Do the rendering the handlers deferred (endpoint chains, dispatch), from the state now."""
        # Endpoints with the same policies and profiles share their list chains: each distinct list
        # is rendered once per flush (a policy selecting 100 endpoints renders one, not 100).
        lists: dict[ListGroup, tuple[Chain, Chain]] = {}
        targets: dict[str, tuple[Chain, Chain]] = {}
        for key in sorted(self._pending_endpoints):
            iface = self._local.get(key)
            if iface is None:
                continue
            if key in self._hep_keys:
                self._render_host_iface(iface)
                continue
            targets[key] = self._list_bodies(key, lists)
        self._pending_endpoints.clear()
        self._move_lists_in_place(targets)
        for key, bodies in targets.items():
            iface = self._local[key]
            for direction, body in zip(DIRECTIONS, bodies, strict=True):
                name = self._use_list(key, direction, body)
                self._put(endpoint_chain_to(iface, direction, body if name == body.name else Chain(name)))
        if self._pending_dispatch:
            self._pending_dispatch = False
            self._render_dispatch()
            self._render_host_dispatch()
        if self._pending_rpf:
            self._pending_rpf = False
            self._put(rpf_skip_chain(self._spoof.values()))

    def _list_bodies(self, key: str, lists: dict[ListGroup, tuple[Chain, Chain]]) -> tuple[Chain, Chain]:
        """The (ingress, egress) list chains local workload ``key`` wants, content-named; ``lists``:
        those this flush rendered, by what decides them (the endpoint's policies and profiles; the
        tiers and the config are the same within a flush)."""
        ep = self._endpoints[key]
        group = (frozenset(self._ep_policies.get(key, ())), tuple(ep.profiles))
        bodies = lists.get(group)
        if bodies is None:
            policies = [self._policies[pid] for pid in group[0]]
            ingress, egress = (
                policy_list_chain(d, self._tiers(policies, d), ep.profiles, self.config) for d in DIRECTIONS
            )
            bodies = lists[group] = (ingress, egress)
        return bodies

    def _move_lists_in_place(self, targets: Mapping[str, tuple[Chain, Chain]]) -> None:
        """A list chain all of whose endpoints move to the same new rules, which no chain has yet
        (a policy added to or removed from a group of pods alike), gets those rules under its own
        name: one chain rewritten, none of the endpoint chains going to it (their cost would grow
        with the group, not with the change)."""
        movers: dict[str, list[Chain]] = {}  # list chain now -> the content-named lists its endpoints want
        for key, bodies in targets.items():
            for direction, body in zip(DIRECTIONS, bodies, strict=True):
                current = self._list_of.get((key, direction))
                if current is not None and self._list_content[current] != body.name:
                    movers.setdefault(current, []).append(body)
        for current, wanted in movers.items():
            body = wanted[0]
            if len(wanted) != self._list_refs[current] or any(b.name != body.name for b in wanted):
                continue  # some of its endpoints stay or go elsewhere
            if body.name in self._list_by_content:
                continue  # a chain with these rules exists: they share it
            del self._list_by_content[self._list_content[current]]
            self._list_content[current] = body.name
            self._list_by_content[body.name] = current
            self._put(Chain(current, body.rules))

    def _use_list(self, key: str, direction: Direction, body: Chain) -> str:
        """Point ``key``'s ``direction`` at the list chain with ``body``'s rules (reference counted;
        made, under ``body``'s name when free, if none has them); returns that chain's name."""
        old = self._list_of.get((key, direction))
        name = self._list_by_content.get(body.name)
        if name is not None and old == name:
            return name
        if name is None:
            name = self._free_list_name(body.name)
            self._list_content[name] = body.name
            self._list_by_content[body.name] = name
        self._list_of[(key, direction)] = name
        refs = self._list_refs.get(name, 0)
        self._list_refs[name] = refs + 1
        if refs == 0:
            self._put(body if name == body.name else Chain(name, body.rules))
        if old is not None:
            self._unref_list(old)
        return name

    def _free_list_name(self, content: str) -> str:
        """``content`` (a list chain's content name), or, when a chain rewritten in place holds that
        name, a name derived from it that no list chain holds."""
        name, n = content, 0
        while name in self._list_content:
            n += 1
            name = content[:8] + b64hash(f"{content}#{n}")[: len(content) - 8]  # cali-tp-/cali-fp-
        return name

    def _release_lists(self, key: str) -> None:
        for direction in DIRECTIONS:
            old = self._list_of.pop((key, direction), None)
            if old is not None:
                self._unref_list(old)

    def _unref_list(self, name: str) -> None:
        self._list_refs[name] -= 1
        if self._list_refs[name] == 0:
            del self._list_refs[name]
            del self._list_by_content[self._list_content.pop(name)]
            self._drop(("filter", name))

    def _tiers(self, policies: list[Policy], direction: Direction) -> list[TierPolicies]:
        by_tier: dict[str, list[Policy]] = {}
        for p in policies:
            if direction in p.types:
                by_tier.setdefault(p.tier, []).append(p)
        out = []
        for t in self.tiers.ordered(by_tier):
            ids = tuple(p.id for p in sorted(by_tier[t], key=Policy.sort_key))
            out.append(TierPolicies(t, ids, self.tiers.default_action(t)))
        return out

    def _render_host_iface(self, iface: str) -> None:
        """The chains of ``iface`` from the host endpoint that owns it (earliest key, as Felix)."""
        owners = sorted(k for k in self._hep_keys if self._local[k] == iface)
        if not owners:
            for name in host_endpoint_chain_names(iface):
                self._drop(("filter", name))
            return
        key = owners[0]
        policies = [self._policies[pid] for pid in self._ep_policies.get(key, ())]
        forward = [p for p in policies if p.apply_on_forward]
        tiers = {d: self._tiers(policies, d) for d in DIRECTIONS}
        forward_tiers = {d: self._tiers(forward, d) for d in DIRECTIONS}
        for chain in host_endpoint_chains(iface, tiers, forward_tiers, self._endpoints[key].profiles):
            self._put(chain)

    def _render_host_dispatch(self) -> None:
        """Host endpoint dispatch chains and the rules into them, present only while there are any."""
        ifaces = {self._local[k] for k in self._hep_keys}
        for chain in self._static:
            self._put(with_host_endpoints(chain) if ifaces else chain)
        for chain in host_dispatch_chains(ifaces):
            if ifaces:
                self._put(chain)
            else:
                self._drop(("filter", chain.name))

    def _render_dispatch(self) -> None:
        chains = dispatch_tree(i for k, i in self._local.items() if k not in self._hep_keys)
        for key in self._dispatch_keys - {("filter", c.name) for c in chains}:
            self._drop(key)  # a child chain whose group shrank to one name or none
        self._dispatch_keys = {("filter", c.name) for c in chains}
        for chain in chains:
            self._put(chain)

    # ------------------------------------------------------------------------------ pools, hosts

    def update_pool(self, pool: IPPool) -> None:
        self._pools[pool.name] = (pool.spec.cidr, pool.spec.nat_outgoing)
        self._render_pools()

    def remove_pool(self, name: str) -> None:
        if self._pools.pop(name, None) is not None:
            self._render_pools()

    def set_host_ips(self, ips: Iterable[str]) -> None:
        """Addresses of every node (``cali40all-hosts-net``, the IPIP/VXLAN source ACL)."""
        self._host_ips = frozenset(ips)
        self._render_hosts()

    def _render_pools(self) -> None:
        mine = [(c, nat) for c, nat in self._pools.values() if ip_network(c).version == self.version]
        self._put_own(net_set(ALL_POOLS_ID, (c for c, _ in mine), self.version))
        self._put_own(masq := net_set(MASQ_POOLS_ID, (c for c, nat in mine if nat), self.version))
        self._put(nat_outgoing_chain(bool(masq.members), self.config))

    def _render_hosts(self) -> None:
        self._put_own(net_set(ALL_HOSTS_ID, self._host_ips, self.version))

    # ------------------------------------------------------------------------------ hostraw

    def _sync_hostraw(self) -> None:
        """Bring the raw/mangle chains of untracked and pre-DNAT policy up to date (lazily, so a
        burst of host endpoint or policy updates renders them once)."""
        delta = self._hostraw.sync()
        if delta is None:
            return
        for spec in delta.acquire:
            self._acquire(spec)
        for chain in delta.put:
            self._put(chain)
        for key in delta.drop:
            self._drop(key)
        for spec in delta.release:
            self._sets.release(spec)

    # ------------------------------------------------------------------------------ bookkeeping

    def _put_own(self, ipset: IpSet) -> None:
        self._own_sets[ipset.name] = ipset
        self._own_dirty.add(ipset.name)

    def _put(self, chain: Chain) -> None:
        key = (chain.table, chain.name)
        if self._chains.get(key) != chain:
            self._chains[key] = chain
            self._dirty_chains.add(key)

    def _drop(self, key: ChainKey) -> None:
        if self._chains.pop(key, None) is not None:
            self._dirty_chains.add(key)


def _selection(p: Policy) -> tuple[object, ...]:
    """What decides which local endpoints a policy is enforced on (given its tier exists)."""
    return (p.selector, p.filter_table, p.tier)


def _placement(p: Policy) -> tuple[object, ...]:
    """What decides where a policy is jumped to from an endpoint's chains (not its rules)."""
    return (p.tier, p.order, p.types, p.apply_on_forward, p.filter_table)
