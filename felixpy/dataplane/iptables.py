"""IptablesWriter: desired ``cali-*`` chains and hook rules, converged per table.

Only ``cali-`` chains and our hook rules (carrying a ``cali:<hash>`` comment) in kernel chains are
ours; every other chain and rule is left exactly where it is. Each ``apply`` reads the dirty tables
(iptables-save or libiptc), plans with :func:`plan_table` (chains whose hash lists differ are
rewritten whole; ``cali-`` chains no longer desired are flushed and deleted; hooks re-placed if out of
position) and writes one atomic transaction per table. ``resync`` marks every table dirty, which
repairs drift such as a rule deleted by hand. A failed commit (concurrent writer) is retried after
re-reading, a bounded number of times.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.iptables_backend import IptablesBackend
from felixpy.dataplane.iptables_render import Hook, Op, default_hooks, plan_table
from felixpy.dataplane.model import Chain

log = structlog.get_logger(__name__)
TABLES = ("raw", "mangle", "nat", "filter")


@dataclass(frozen=True, slots=True)
class TableResult:
    table: str
    ops: int
    rewritten: tuple[str, ...]
    deleted: tuple[str, ...]


class IptablesWriter:
    """One per IP family. ``backend`` from :func:`felixpy.dataplane.iptables_backend.make_backend`."""

    def __init__(
        self,
        backend: IptablesBackend,
        *,
        hooks: Iterable[Hook] | None = None,
        retries: int = 3,
    ) -> None:
        self.backend = backend
        self._hooks = tuple(default_hooks() if hooks is None else hooks)
        self._chains: dict[tuple[str, str], Chain] = {}
        self._dirty: set[str] = set(TABLES)
        self._retries = retries
        self._log = log.bind(backend=backend.name)

    # --- desired state (memory only) ------------------------------------------------------
    def set_chains(self, chains: Iterable[Chain]) -> None:
        """Replace the whole desired set of chains (all tables)."""
        new: dict[tuple[str, str], Chain] = {(c.table, c.name): _checked(c) for c in chains}
        self._dirty |= {key[0] for key, _ in new.items() ^ self._chains.items()}
        self._chains = new

    def update_chain(self, chain: Chain) -> None:
        key = (chain.table, chain.name)
        if self._chains.get(key) != chain:
            self._chains[key] = _checked(chain)
            self._dirty.add(chain.table)

    def remove_chain(self, table: str, name: str) -> None:
        if self._chains.pop((table, name), None) is not None:
            self._dirty.add(table)

    def set_hooks(self, hooks: Iterable[Hook]) -> None:
        new = tuple(hooks)
        self._dirty |= {h.table for h in set(new) ^ set(self._hooks)}
        self._hooks = new

    # --- kernel ---------------------------------------------------------------------------
    def resync(self) -> list[TableResult]:
        self._dirty = set(TABLES)
        return self.apply()

    def apply(self) -> list[TableResult]:
        results = []
        for table in [t for t in TABLES if t in self._dirty]:
            results.append(self._apply_table(table))
            self._dirty.discard(table)
        return results

    def _apply_table(self, table: str) -> TableResult:
        desired = {name: c for (t, name), c in self._chains.items() if t == table}
        hooks = [h for h in self._hooks if h.table == table]
        for attempt in range(1, self._retries + 1):
            ops = plan_table(desired, hooks, self.backend.read(table))
            if not ops:
                return TableResult(table, 0, (), ())
            try:
                self.backend.write(table, ops)
            except DataplaneError as exc:
                self._log.warning("iptables.commit_failed", table=table, attempt=attempt, error=str(exc))
                if attempt == self._retries:
                    raise
                time.sleep(0.01 * 2**attempt)
                continue
            return self._log_result(table, ops)
        raise AssertionError("unreachable")

    def _log_result(self, table: str, ops: list[Op]) -> TableResult:
        rewritten = tuple(o.chain for o in ops if o.kind == "chain")
        deleted = tuple(o.chain for o in ops if o.kind == "delete_chain")
        hooks = sorted({o.chain for o in ops if o.kind in ("insert", "delete")} - set(rewritten))
        kept = [c for c in rewritten if c not in deleted]
        self._log.info(
            "iptables.committed", table=table, ops=len(ops), n_rewritten=len(kept), rewritten=kept[:20],
            n_deleted=len(deleted), deleted=list(deleted[:20]), hooks_fixed=hooks,
            reason="chain hashes differ from desired",
        )
        return TableResult(table, len(ops), tuple(kept), deleted)


def _checked(chain: Chain) -> Chain:
    if not chain.name.startswith("cali-") or len(chain.name) > 28:
        raise ValueError(f"chain {chain.name!r}: must start with cali- and be at most 28 chars")
    return chain
