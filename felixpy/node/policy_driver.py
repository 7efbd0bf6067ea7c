"""Policy: calc's pass-through inputs → `policy.compiler.PolicyCompiler` → ipset and iptables writers.

Commit order is Felix's: ipsets created/updated first, then the chains that reference them, then
chains removed, then ipsets no longer referenced destroyed. An endpoint counts as programmed (the
CNI ADD waits for it: isolation before the first packet) once its ``cali-tw-``/``cali-fw-`` chains
were written by a successful commit.

``commit(additive=True)`` (a batch with something new to isolate, e.g. a CNI ADD) writes iptables
with insert-only plans where they exist (see ``IptablesWriter.apply``): the new endpoint's chains
and its dispatch rule go in, while the removal of what is no longer wanted (a deleted pod's chains
and dispatch rule, which match only its gone interface) and the hash fix-ups wait for the next plain
``commit()``; :attr:`PolicyDriver.deferred` says one is due. ipsets nothing references any more are
destroyed only then (a chain left behind may still use them); member updates are never deferred.

HostEndpoints (of every node) go to the compiler like workload endpoints; it enforces those
whose ``spec.node`` is this node (``policy.hostendpoints``).

A workload endpoint's ``allowSpoofedSourcePrefixes`` is honoured only with FelixConfiguration
``workloadSourceSpoofing: Any`` (``policy.rpf``); each time the set of endpoints whose prefixes are
ignored changes, it is logged (``policy.source_spoofing_ignored``).

Tiers go to the compiler too. A policy naming a tier that does not exist (felixctl refuses to
create one, but it can be written around it, or its tier deleted under it) is not applied; each
time the set of such policies changes, it is logged (``policy.tier_missing``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import structlog

from felixpy.calc.model import InputUpdate, Update
from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.iptables_render import Hook
from policy.convert import hep_key
from policy.names import FROM_WL_DISPATCH, TO_WL_DISPATCH

if TYPE_CHECKING:
    from felixpy.dataplane.ipsets import IpsetWriter
    from felixpy.dataplane.iptables import IptablesWriter
    from felixpy.resources import HostEndpoint, IPPool, WorkloadEndpoint
    from felixpy.resources.k8s import Namespace
    from policy.chains import Hook as PolicyHook
    from policy.compiler import Changes, PolicyCompiler
    from policy.convert import AnyPolicy

log = structlog.get_logger(__name__)
POLICY_KINDS = {"NetworkPolicy": "np", "GlobalNetworkPolicy": "gnp", "K8sNetworkPolicy": "knp"}
# Where an additive commit may leave the rules of gone endpoints: the workload dispatch tree (roots
# and their ``-<char>`` children). Such a rule matches only its own interface name.
LEFTOVER_CHAINS = (FROM_WL_DISPATCH, TO_WL_DISPATCH)


class PolicyDriver:
    def __init__(self, compiler: PolicyCompiler, iptables: IptablesWriter, ipsets: IpsetWriter) -> None:
        self.compiler = compiler
        self.iptables = iptables
        self.ipsets = ipsets
        self._written: set[str] = set()  # chain names in the kernel after the last good commit
        self._lock = threading.Lock()
        self._hooks_set = False
        self._host_ips: dict[str, str] = {}  # node name -> its IPv4 address (cali40all-hosts-net)
        self._untiered: dict[str, str] = {}  # policy id -> missing tier, as last logged
        self._spoof_ignored: dict[str, tuple[str, ...]] = {}  # endpoint -> ignored prefixes, as logged

    def on_updates(self, updates: list[Update]) -> None:
        hosts_changed = tiering = workloads = False
        for u in updates:
            if isinstance(u, InputUpdate):
                if u.kind == "Node":
                    hosts_changed = self._on_node(u.key[1], u.obj) or hosts_changed
                else:
                    self._on_input(u)
                    tiering = tiering or u.kind in POLICY_KINDS or u.kind == "Tier"
                    workloads = workloads or u.kind == "WorkloadEndpoint"
        if hosts_changed:
            self.compiler.set_host_ips(sorted(set(self._host_ips.values())))
        if tiering:
            self._log_untiered()
        if workloads:
            self._log_spoofing_ignored()

    def _log_spoofing_ignored(self) -> None:
        ignored = self.compiler.spoofing_ignored()
        if ignored != self._spoof_ignored:
            added = {k: list(v) for k, v in ignored.items() if self._spoof_ignored.get(k) != v}
            self._spoof_ignored = ignored
            if added:
                log.warning(
                    "policy.source_spoofing_ignored",
                    endpoints=added,
                    version=self.compiler.version,
                    reason="allowSpoofedSourcePrefixes needs FelixConfiguration workloadSourceSpoofing: Any",
                )

    def _log_untiered(self) -> None:
        untiered = self.compiler.policies_without_tier()
        if untiered != self._untiered:
            self._untiered = untiered
            if untiered:
                log.warning(
                    "policy.tier_missing", policies=untiered, reason="their tier does not exist: not applied"
                )
            else:
                log.info("policy.tier_missing", policies={}, reason="every policy's tier exists")

    def _on_node(self, name: str, node: Any | None) -> bool:
        """Track every node's IP (VXLAN/IPIP packets are accepted only from these)."""
        bgp = node.spec.bgp if node is not None else None
        ip = str(bgp.ipv4_address).split("/")[0] if bgp is not None and bgp.ipv4_address else None
        if self._host_ips.get(name) == ip:
            return False
        if ip is None:
            self._host_ips.pop(name, None)
        else:
            self._host_ips[name] = ip
        return True

    def _on_input(self, u: InputUpdate) -> None:
        # InputUpdate.obj is typed ``object`` and keyed by kind (a string): the casts below name that
        # seam, which goes when calc owns the compilers (issue 14, docs/architecture.md §Departures).
        c = self.compiler
        ns, name = u.key
        if u.kind == "WorkloadEndpoint":
            if u.obj is None:
                c.remove_endpoint(f"{ns}/{name}")
            else:
                c.update_endpoint(cast("WorkloadEndpoint", u.obj))
        elif u.kind == "HostEndpoint":
            # Every node's: the compiler enforces only this node's (spec.node), but any host
            # endpoint's expectedIPs belong in the selector ipsets of rules that pick it by label.
            if u.obj is None:
                c.remove_endpoint(hep_key(name))
            else:
                c.update_endpoint(cast("HostEndpoint", u.obj))
        elif u.kind in POLICY_KINDS:
            if u.obj is None:
                short = POLICY_KINDS[u.kind]
                c.remove_policy(f"{short}/{ns}/{name}" if ns else f"{short}/{name}")
            else:
                c.update_policy(cast("AnyPolicy", u.obj))
        elif u.kind == "Tier":
            if u.obj is None:
                c.remove_tier(name)
            else:
                c.update_tier(u.obj)
        elif u.kind == "Namespace":
            if u.obj is None:
                c.remove_namespace(name)
            else:
                c.update_namespace(cast("Namespace", u.obj))
        elif u.kind == "IPPool":
            if u.obj is None:
                c.remove_pool(name)
            else:
                c.update_pool(cast("IPPool", u.obj))

    def commit(self, additive: bool = False) -> bool:
        return self.finish(self.write_iptables(self.prepare(additive)))

    # The three steps of a commit, for FamilyPolicies: every family's ``prepare`` (the shared ipset
    # writer), then their ``write_iptables`` at once (each its own iptables-restore), then every
    # ``finish`` (ipsets nothing references any more, once every family's chains are written).
    def prepare(self, additive: bool = False) -> _Commit:
        """Hand the compiler's changes to the writers and write the ipsets they need."""
        try:
            if not self._hooks_set:
                self.iptables.set_hooks(writer_hooks(self.compiler.hooks()))
                self._hooks_set = True
            stage_changes(self.compiler.dirty(), self.iptables, self.ipsets)
        except DataplaneError as exc:
            return self._failed(_Commit(additive), exc)
        return _Commit(additive, ok=True)

    def write_iptables(self, step: _Commit) -> _Commit:
        if step.ok:
            try:
                write_iptables(self.iptables, additive=step.additive)
            except DataplaneError as exc:
                return self._failed(step, exc)
        return step

    def finish(self, step: _Commit) -> bool:
        if not step.ok:
            return False
        try:
            if not (step.additive and self.iptables.pending):  # leftovers may still use such sets
                self.ipsets.apply_deletions()
        except DataplaneError as exc:
            return self._failed(step, exc).ok
        with self._lock:
            self._written = {name for _, name in self.compiler.chains()}
        return True

    @staticmethod
    def _failed(step: _Commit, exc: DataplaneError) -> _Commit:
        log.warning("policy.commit_failed", error=str(exc), reason="will retry on the next batch")
        step.ok = False
        return step

    @property
    def deferred(self) -> bool:
        """An additive commit left work for a plain one (removals, hash fix-ups, ipset destroys)."""
        return bool(self.iptables.pending)

    def resync(self, what: str) -> None:
        try:
            if what == "iptables":
                self.iptables.resync()
            elif what == "ipsets":
                self.ipsets.resync()
        except DataplaneError as exc:
            log.warning("policy.resync_failed", what=what, error=str(exc))

    def post_write_check(self) -> None:
        """Felix's post-write check: shortly after a write (then backing off), re-read the tables and
        repair them, catching another program's non-atomic save/modify/restore that undid our rules."""
        try:
            self.iptables.post_write_check()
        except DataplaneError as exc:
            log.warning("policy.post_write_check_failed", error=str(exc))

    def endpoint_programmed(self, iface: str) -> bool:
        with self._lock:
            return f"cali-tw-{iface}" in self._written and f"cali-fw-{iface}" in self._written


def writer_hooks(hooks: Iterable[PolicyHook]) -> list[Hook]:
    """The compiler's hooks (``position``) in the writer's shape (``append``)."""
    return [Hook(h.table, h.chain, h.rule, append=h.position == "append") for h in hooks]


class _Commit:
    """Where one driver's commit stands between its steps."""

    __slots__ = ("additive", "ok")

    def __init__(self, additive: bool, *, ok: bool = False) -> None:
        self.additive, self.ok = additive, ok


def write_changes(
    changes: Changes, iptables: IptablesWriter, ipsets: IpsetWriter, *, additive: bool = False
) -> None:
    """Hand the compiler's ``Changes`` to the writers and commit them in Felix's order: ipsets first,
    then the chains that use them, then ipsets nothing references any more. Hook rules that changed
    (the raw/mangle jumps come and go with untracked/pre-DNAT policy) go with the chains, in the same
    per-table transaction, so a jump never points at a missing chain. ``additive``: iptables
    insert-only where possible; ipsets are then destroyed only once nothing was left behind (the
    module doc). Raises DataplaneError."""
    stage_changes(changes, iptables, ipsets)
    write_iptables(iptables, additive=additive)
    if not (additive and iptables.pending):  # chains left for the next plain commit may still use sets
        ipsets.apply_deletions()


def stage_changes(changes: Changes, iptables: IptablesWriter, ipsets: IpsetWriter) -> None:
    """The first step of :func:`write_changes`: the writers told, the ipsets written."""
    if changes.hooks is not None:
        iptables.set_hooks(writer_hooks(changes.hooks))
    for ipset in changes.ipsets.values():
        ipsets.update_ipset(ipset)
    for chain in changes.chains.values():
        iptables.update_chain(chain)
    for table, name in changes.removed_chains:
        iptables.remove_chain(table, name)
    for name in changes.removed_ipsets:
        ipsets.remove_ipset(name)
    ipsets.apply_updates()


def write_iptables(iptables: IptablesWriter, *, additive: bool) -> None:
    """The second step: the chains (insert-only where possible when ``additive``)."""
    if additive:
        iptables.apply(additive=True, leftover_chains=LEFTOVER_CHAINS)
    else:
        iptables.apply()
