"""Policy: calc's compiled chains, ipsets and hooks (one IP version) → the ipset and iptables writers.

The compilers run in calc (``felixpy.calc.policy_stage``); this driver only writes. It keeps what calc
emitted since its last commit, coalesced (the latest version of a chain or set wins, a removal
cancels an earlier write), and hands it to the writers at commit time, so each IP version's
changes are written together even though both versions share one IpsetWriter.

Commit order is Felix's: ipsets created/updated first, then the chains that reference them, then
chains removed, then ipsets no longer referenced destroyed. An endpoint counts as programmed (the
CNI ADD waits for it: isolation before the first packet) once its ``cali-tw-``/``cali-fw-`` chains
were written by a successful commit.

``commit(additive=True)`` (a batch with something new to isolate, e.g. a CNI ADD) writes iptables
with insert-only plans where they exist (see ``IptablesWriter.apply``): the new endpoint's chains
and its dispatch rule go in, while the removal of what is no longer wanted (a deleted pod's chains
and dispatch rule, which match only its gone interface) and the hash fix-ups wait for the next plain
``commit()``; :attr:`PolicyDriver.deferred` says one is due. ipsets nothing references any more are
destroyed only then (a chain left behind may still use them); member updates go with every commit.
Which batch gets which kind of commit, which batch waits whole (a CNI DEL's), and when the plain
commit runs, is decided beside the writers, by ``felixpy.dataplane.deferral.PolicyDeferral``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from felixpy.calc.updates import ChainsUpdate, HooksUpdate, IpsetsUpdate, Update
from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.iptables_render import Hook
from felixpy.dataplane.kernel_objects import Chain, IpSet, Table
from policy.chain_names import FROM_WL_DISPATCH, TO_WL_DISPATCH

if TYPE_CHECKING:
    from felixpy.dataplane.ipset_writer import IpsetWriter
    from felixpy.dataplane.iptables import IptablesWriter
    from policy.chains import Hook as PolicyHook
    from policy.compiler import Changes as CompilerChanges

log = structlog.get_logger(__name__)
# Where an additive commit may leave the rules of gone endpoints: the workload dispatch tree (roots
# and their ``-<char>`` children). Such a rule matches only its own interface name.
LEFTOVER_CHAINS = (FROM_WL_DISPATCH, TO_WL_DISPATCH)
ChainKey = tuple[Table, str]


@dataclass
class Changes:
    """What calc emitted since the last commit, coalesced: write ``chains``/``ipsets``, delete the
    ``removed_*``; ``hooks``: the whole new set of hook rules when it changed, else None."""

    chains: dict[ChainKey, Chain] = field(default_factory=dict)
    removed_chains: set[ChainKey] = field(default_factory=set)
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    removed_ipsets: set[str] = field(default_factory=set)
    hooks: tuple[PolicyHook, ...] | None = None

    def add(self, u: ChainsUpdate | IpsetsUpdate | HooksUpdate) -> None:
        if isinstance(u, HooksUpdate):
            self.hooks = u.hooks
        elif isinstance(u, ChainsUpdate):
            for chain in u.chains:
                key = (chain.table, chain.name)
                self.chains[key] = chain
                self.removed_chains.discard(key)
            for key in u.removed:
                self.chains.pop(key, None)
                self.removed_chains.add(key)
        else:
            for ipset in u.ipsets:
                self.ipsets[ipset.name] = ipset
                self.removed_ipsets.discard(ipset.name)
            for name in u.removed:
                self.ipsets.pop(name, None)
                self.removed_ipsets.add(name)


class PolicyDriver:
    """The iptables (or ip6tables) writer of one IP version and the shared ipset writer."""

    def __init__(self, version: int, iptables: IptablesWriter, ipsets: IpsetWriter) -> None:
        self.version = version
        self.iptables = iptables
        self.ipsets = ipsets
        self._changes = Changes()
        self._desired: set[ChainKey] = set()  # every chain calc wants (emitted and not removed)
        self._written: set[str] = set()  # chain names in the kernel after the last good commit
        self._lock = threading.Lock()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            if isinstance(u, ChainsUpdate | IpsetsUpdate | HooksUpdate) and u.version == self.version:
                self._changes.add(u)
                if isinstance(u, ChainsUpdate):
                    self._desired.update((c.table, c.name) for c in u.chains)
                    self._desired.difference_update(u.removed)

    def prefetch(self) -> None:
        """Start reading the tables and sets the first commit plans against (start-up: they are
        read while the calc graph digests the datastore snapshot; ``felixpy.dataplane.prefetch``)."""
        self.iptables.prefetch()
        self.ipsets.prefetch()

    def commit(self, additive: bool = False) -> bool:
        return self.finish(self.write_iptables(self.prepare(additive)))

    # The three steps of a commit, for FamilyPolicies: every family's ``prepare`` (the shared ipset
    # writer), then their ``write_iptables`` at once (each its own iptables-restore), then every
    # ``finish`` (ipsets nothing references any more, once every family's chains are written).
    def prepare(self, additive: bool = False) -> CommitStep:
        """Hand calc's changes to the writers and write the ipsets they need."""
        changes, self._changes = self._changes, Changes()
        try:
            stage_changes(changes, self.iptables, self.ipsets)
        except DataplaneError as exc:
            return self._failed(CommitStep(additive), exc)
        return CommitStep(additive, ok=True)

    def write_iptables(self, step: CommitStep) -> CommitStep:
        if step.ok:
            try:
                write_iptables(self.iptables, additive=step.additive)
            except DataplaneError as exc:
                return self._failed(step, exc)
        return step

    def finish(self, step: CommitStep) -> bool:
        if not step.ok:
            return False
        try:
            if not (step.additive and self.iptables.pending):  # leftovers may still use such sets
                self.ipsets.apply_deletions()
        except DataplaneError as exc:
            return self._failed(step, exc).ok
        with self._lock:
            self._written = {name for _, name in self._desired}
        return True

    @staticmethod
    def _failed(step: CommitStep, exc: DataplaneError) -> CommitStep:
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

    def post_write_check_due(self) -> bool:
        """Whether :meth:`post_write_check` has anything to do now (cheap)."""
        return self.iptables.post_write_check_due()

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


class CommitStep:
    """Where one driver's commit stands between its steps."""

    __slots__ = ("additive", "ok")

    def __init__(self, additive: bool, *, ok: bool = False) -> None:
        self.additive, self.ok = additive, ok


def writer_hooks(hooks: Iterable[PolicyHook]) -> list[Hook]:
    """The compiler's hooks (``position``) in the writer's shape (``append``)."""
    return [Hook(h.table, h.chain, h.rule, append=h.position == "append") for h in hooks]


def write_changes(
    changes: Changes | CompilerChanges,
    iptables: IptablesWriter,
    ipsets: IpsetWriter,
    *,
    additive: bool = False,
) -> None:
    """Hand the ``Changes`` to the writers and commit them in Felix's order: ipsets first,
    then the chains that use them, then ipsets nothing references any more. Hook rules that changed
    (the raw/mangle jumps come and go with untracked/pre-DNAT policy) go with the chains, in the same
    per-table transaction, so a jump never points at a missing chain. ``additive``: iptables
    insert-only where possible; ipsets are then destroyed only once nothing was left behind (the
    module doc). Raises DataplaneError."""
    stage_changes(changes, iptables, ipsets)
    write_iptables(iptables, additive=additive)
    if not (additive and iptables.pending):  # chains left for the next plain commit may still use sets
        ipsets.apply_deletions()


def stage_changes(changes: Changes | CompilerChanges, iptables: IptablesWriter, ipsets: IpsetWriter) -> None:
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
