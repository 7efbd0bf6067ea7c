"""IptablesWriter: desired ``cali-*`` chains and hook rules, converged per table.

Only ``cali-`` chains and our hook rules (carrying a ``cali:<hash>`` comment) in kernel chains are
ours; every other chain and rule is left exactly where it is.

Felix's write loop (reference 2.13). The writer keeps its *view* of each table (chain -> rule
hashes) from the last successful commit, and remembers which chains changed since. ``apply``
plans only those chains against the view with :func:`plan_table` (``-R`` from the first differing
rule, ``-A``/``-D`` the tail; new chains created, ``cali-`` chains no longer desired flushed and
deleted; hooks re-placed if out of position), writes one atomic transaction per table, and
updates the view from the ops it committed: no ``iptables-save`` on the hot path. The table is
read only on the first apply, on ``resync`` (the periodic refresh: every chain is compared, which
repairs drift such as a rule deleted by hand), on a due post-write check, and after a failed
commit (the view may be stale: the next attempt re-reads, a bounded number of times).

``apply(additive=True)`` (the agent's path for a new pod) writes a table with an insert-only plan
(:func:`~felixpy.dataplane.iptables_render.plan_table_additive`) when one exists: new chains, the
rules a chain lacks inserted in place, nothing replaced or deleted. That transaction costs what an
empty one does with nf_tables (~3 ms against ~12-15 ms for one that replaces or deletes, which
waits for an RCU grace period). What it leaves (hash comments of rules after an insert, obsolete
chains, dispatch rules of gone endpoints) stays dirty: :attr:`pending` is True until a plain
``apply()`` (the deferred flush that ``felixpy.dataplane.deferral.PolicyDeferral`` decides on:
writer loop idle, or at most ``DEFERRED_MAX_SECONDS`` later) or a resync rewrites it Felix's way.
Every desired chain has exactly its desired rules after
either kind of commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

import structlog

from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.iptables_backend import IptablesBackend
from felixpy.dataplane.iptables_render import (
    OUR_PREFIX,
    Hook,
    Op,
    SavedRule,
    TableState,
    apply_ops,
    body_hashes,
    default_hooks,
    plan_table,
    plan_table_additive,
    rendered_spec,
    rule_body,
)
from felixpy.dataplane.kernel_objects import Chain
from felixpy.dataplane.prefetch import Prefetch, take

log = structlog.get_logger(__name__)
TABLES = ("raw", "mangle", "nat", "filter")


@dataclass(frozen=True, slots=True)
class TableResult:
    table: str
    ops: int
    rewritten: tuple[str, ...]
    deleted: tuple[str, ...]
    read: bool = False  # the table was re-read (iptables-save) for this result
    additive: bool = False  # written with an insert-only plan
    left: tuple[str, ...] = ()  # chains still differing from desired (for the next full apply)


@dataclass(slots=True)
class _Desired:
    chain: Chain
    hashes: list[str]
    rendered: list[SavedRule]  # the rules as we write them (each body rendered once, with its hash)

    @classmethod
    def of(cls, chain: Chain) -> _Desired:
        bodies = [rule_body(r) for r in chain.rules]
        hashes = body_hashes(chain.name, bodies)
        rendered = [SavedRule(h, rendered_spec(h, b)) for h, b in zip(hashes, bodies, strict=True)]
        return cls(chain, hashes, rendered)

    def saved(self) -> list[SavedRule]:
        return list(self.rendered)


class IptablesWriter:
    """One per IP family. ``backend`` from :func:`felixpy.dataplane.iptables_backend.make_backend`.

    ``post_write_check``: seconds after a write before :meth:`post_write_check` re-reads the
    tables (Felix's ``IptablesPostWriteCheckIntervalSecs``); it doubles after each clean check
    and stops past ``max_post_write_check`` (the periodic ``resync`` takes over).
    """

    def __init__(
        self,
        backend: IptablesBackend,
        *,
        hooks: Iterable[Hook] | None = None,
        retries: int = 3,
        post_write_check: float = 5.0,
        max_post_write_check: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._hooks = tuple(default_hooks() if hooks is None else hooks)
        self._desired: dict[str, dict[str, _Desired]] = {t: {} for t in TABLES}
        self._dirty: dict[str, set[str]] = {t: set() for t in TABLES}  # chains changed since commit
        self._dirty_hooks: set[str] = set()
        self._views: dict[str, TableState] = {}  # table -> kernel state after our last commit
        self._retries = retries
        self._check_first, self._check_max = post_write_check, max_post_write_check
        self._check_interval: float | None = None
        self._check_at: float | None = None
        self._clock = clock
        self._log = log.bind(backend=backend.name)
        self._prefetch: Prefetch[dict[str, TableState]] | None = None

    def prefetch(self) -> None:
        """Start reading every table now (one save, in its own thread) for the first :meth:`apply`
        to plan against (``felixpy.dataplane.prefetch``); a no-op for a backend without ``read_all``."""
        read_all = getattr(self.backend, "read_all", None)
        if read_all is not None and not self._views and self._prefetch is None:
            self._prefetch = Prefetch(f"{self.backend.name}-save", read_all)

    # --- desired state (memory only) ------------------------------------------------------
    def set_chains(self, chains: Iterable[Chain]) -> None:
        """Replace the whole desired set of chains (all tables)."""
        new = {(c.table, c.name): c for c in chains}
        for table, chains_of in self._desired.items():
            for name in [n for n in chains_of if (table, n) not in new]:
                self.remove_chain(table, name)
        for chain in new.values():
            self.update_chain(chain)

    def update_chain(self, chain: Chain) -> None:
        current = self._desired[chain.table].get(chain.name)
        if current is None or current.chain != chain:
            _checked(chain)
            self._desired[chain.table][chain.name] = _Desired.of(chain)
            self._dirty[chain.table].add(chain.name)

    def remove_chain(self, table: str, name: str) -> None:
        if self._desired[table].pop(name, None) is not None:
            self._dirty[table].add(name)

    def set_hooks(self, hooks: Iterable[Hook]) -> None:
        new = tuple(hooks)
        self._dirty_hooks |= {h.table for h in set(new) ^ set(self._hooks)}
        self._hooks = new

    # --- kernel ---------------------------------------------------------------------------
    def resync(self) -> list[TableResult]:
        """Forget every view: re-read each table, compare every chain, repair what drifted."""
        self._views.clear()
        self._prefetch = None  # a re-read is asked for: not one made earlier
        return self.apply()

    def invalidate(self, table: str | None = None) -> None:
        """The next apply re-reads ``table`` (all tables if None) before planning."""
        self._prefetch = None
        if table is None:
            self._views.clear()
        else:
            self._views.pop(table, None)

    @property
    def pending(self) -> bool:
        """Something desired is not in the kernel exactly (left by an additive apply, or not applied)."""
        return any(self._dirty.values()) or bool(self._dirty_hooks)

    def apply(self, *, additive: bool = False, leftover_chains: tuple[str, ...] = ()) -> list[TableResult]:
        """Write every table with changes. ``additive``: an insert-only plan where one exists (see the
        module doc); ``leftover_chains``: name prefixes of the chains where such a plan may leave the
        rules that go to a chain no longer desired (the workload dispatch chains)."""
        todo = [t for t in TABLES if t not in self._views or self._dirty[t] or t in self._dirty_hooks]
        unread = [t for t in todo if t not in self._views]
        read_all = getattr(self.backend, "read_all", None)
        lazy = leftover_chains if additive else None
        tables: dict[str, TableState] | None = None
        if unread:
            tables, self._prefetch = take(self._prefetch), None
            if tables is not None:  # the first apply: the tables read at start-up
                # another program may have changed a table since it was read: look again soon
                self._check_interval = self._check_first
                self._check_at = self._clock() + self._check_first
            elif len(unread) > 1 and read_all is not None:  # one save for all tables (resync)
                tables = read_all()
        if tables is not None:
            self._views.update({t: tables.get(t, {}) for t in unread})
            return [self._apply_table(table, read=table in unread, lazy=lazy) for table in todo]
        return [self._apply_table(table, lazy=lazy) for table in todo]

    def post_write_check_due(self) -> bool:
        """Whether :meth:`post_write_check` would re-read now (cheap: a clock read)."""
        return self._check_at is not None and self._clock() >= self._check_at

    def post_write_check(self) -> list[TableResult]:
        """If due, re-read every table and repair it (catches a non-atomic save/modify/restore by
        another program clobbering our rules just after our write). Call it from the main loop."""
        if not self.post_write_check_due():
            return []
        interval = self._check_interval or self._check_first
        results = self.resync()
        if not any(r.ops for r in results):
            nxt = interval * 2
            self._check_interval = nxt if nxt <= self._check_max else None
            self._check_at = self._clock() + nxt if nxt <= self._check_max else None
        return results

    def _apply_table(
        self, table: str, *, read: bool = False, lazy: tuple[str, ...] | None = None
    ) -> TableResult:
        for attempt in range(1, self._retries + 1):
            state = self._views.pop(table, None)  # popped: any failure leaves no (stale) view
            fresh = state is None or (read and attempt == 1)
            if state is None:
                state = self.backend.read(table)
            # Insert-only only on our own view (a table just read is in iptables-save's spelling).
            additive = self._plan_additive(table, state, lazy) if lazy is not None and not fresh else None
            ops = additive if additive is not None else self._plan(table, state, full=fresh)
            scope = set(self._dirty[table]) | (set(self._desired[table]) if fresh else set())
            started = time.monotonic()
            try:
                if ops:
                    self.backend.write(table, ops)
            except DataplaneError as exc:
                self._log.warning(
                    "iptables.commit_failed",
                    table=table,
                    attempt=attempt,
                    error=str(exc),
                    view="fresh" if fresh else "cached",
                    reason="re-read the table and retry",
                )
                if attempt == self._retries:
                    raise
                time.sleep(0.01 * 2**attempt if fresh else 0)
                continue
            apply_ops(state, ops)
            left = self._settle(table, state, scope)
            self._views[table] = state
            self._dirty[table] = left
            self._dirty_hooks.discard(table)
            took, was_additive = time.monotonic() - started, additive is not None
            return self._log_result(table, ops, read=fresh, additive=was_additive, left=left, took=took)
        raise AssertionError("unreachable")

    def _settle(self, table: str, state: TableState, scope: set[str]) -> set[str]:
        """After a commit: the chains of ``scope`` still differing from desired (an additive plan
        leaves some); the converged ones get our own rendering of their rules in the view, so the
        next additive plan can compare rule text even after a re-read."""
        desired = self._desired[table]
        left = set()
        for name in scope:
            d = desired.get(name)
            if d is None:
                if name in state:
                    left.add(name)
            elif name not in state or [r.hash for r in state[name]] != d.hashes:
                left.add(name)
            elif any(r.spec != s.spec for r, s in zip(state[name], d.rendered, strict=True)):
                state[name] = d.saved()
        return left

    def _plan_additive(self, table: str, state: TableState, lazy: tuple[str, ...]) -> list[Op] | None:
        desired = self._desired[table]
        if table in self._dirty_hooks:
            return None
        return plan_table_additive(
            _chains(desired),
            [h for h in self._hooks if h.table == table],
            state,
            expected=_hashes(desired),
            only=self._dirty[table],
            leftover_chains=lazy,
        )

    def _plan(self, table: str, state: TableState, *, full: bool) -> list[Op]:
        desired = self._desired[table]
        return plan_table(
            _chains(desired),
            [h for h in self._hooks if h.table == table],
            state,
            expected=_hashes(desired),
            only=None if full else self._dirty[table],
            rendered=_View(desired, attrgetter("rendered")),
        )

    def _log_result(
        self,
        table: str,
        ops: list[Op],
        *,
        read: bool,
        additive: bool = False,
        left: set[str] | None = None,
        took: float = 0.0,
    ) -> TableResult:
        pending = tuple(sorted(left or ()))
        if not ops:
            return TableResult(table, 0, (), (), read, additive, pending)
        deleted = tuple(o.chain for o in ops if o.kind == "delete_chain")
        touched = {o.chain for o in ops if o.chain.startswith(OUR_PREFIX)} - set(deleted)
        kept = tuple(sorted(touched))
        hooks = sorted({o.chain for o in ops if not o.chain.startswith(OUR_PREFIX)})
        self._log.info(
            "iptables.committed",
            table=table,
            ops=len(ops),
            n_rewritten=len(kept),
            rewritten=kept[:20],
            n_deleted=len(deleted),
            deleted=list(deleted[:20]),
            hooks_fixed=hooks,
            read=read,
            additive=additive,
            n_left=len(pending),
            write_ms=round(took * 1000, 1),  # the restore (or libiptc commit) alone
            reason="chain hashes differ from desired",
        )
        self._check_interval = self._check_first
        self._check_at = self._clock() + self._check_first
        return TableResult(table, len(ops), kept, deleted, read, additive, pending)


V = TypeVar("V")


class _View(Mapping[str, V]):
    """One field of the desired chains of a table, as the planner reads it: a view, not a copy (a
    plan of the few chains that changed must not cost a pass over every chain of the table)."""

    __slots__ = ("_desired", "_field")

    def __init__(self, desired: dict[str, _Desired], field: Callable[[_Desired], V]) -> None:
        self._desired, self._field = desired, field

    def __getitem__(self, name: str) -> V:
        return self._field(self._desired[name])

    def __contains__(self, name: object) -> bool:
        return name in self._desired

    def __iter__(self) -> Iterator[str]:
        return iter(self._desired)

    def __len__(self) -> int:
        return len(self._desired)


def _chains(desired: dict[str, _Desired]) -> _View[Chain]:
    return _View(desired, attrgetter("chain"))


def _hashes(desired: dict[str, _Desired]) -> _View[list[str]]:
    return _View(desired, attrgetter("hashes"))


def _checked(chain: Chain) -> Chain:
    if not chain.name.startswith("cali-") or len(chain.name) > 28:
        raise ValueError(f"chain {chain.name!r}: must start with cali- and be at most 28 chars")
    return chain
