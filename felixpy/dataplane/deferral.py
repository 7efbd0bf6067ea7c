"""Which policy writes go now and which wait: the deferral of the iptables/ipset writers.

The dataplane hands every batch's policy updates to :class:`PolicyDeferral` and asks it to commit
once per batch; it decides nothing itself. What goes now and what waits (Felix's apply loop writes
everything at once; the deferral is felixpy's, to answer a CNI DEL without an iptables-restore):

- A batch whose only policy input is local endpoints going away (a CNI DEL, and the datastore's
  echo of that delete a batch later) writes nothing: the interface is gone, so its ``cali-tw/fw``
  chains, dispatch rules and its address in selector ipsets match nothing any more. Deciding this
  needs calc's summary of the inputs (``PolicyInputsUpdate``), not only the shape of the writes: a
  remote endpoint's address leaving an allow set, or a deleted allow policy, are removals too and
  must go at once.
- Any other batch (a new endpoint, a policy change, a remote endpoint) is written before the
  commit returns, so a CNI ADD returns only after its isolating chains are in. The iptables writer
  writes it insert-only where it can (``IptablesWriter.apply(additive=True)``: new chains, inserted
  rules, nothing replaced or deleted; ipset destroys wait too), and what that leaves (removals,
  hash fix-ups, the earlier DELs' chains) stays pending.
- Whatever waits is written by a plain commit at :meth:`PolicyDeferral.next_deadline`: once the
  writer loop has been idle ``DEFERRED_SECONDS`` (no batch committed), and in any case no later
  than ``DEFERRED_MAX_SECONDS`` after it was first pending (:class:`FlushClock`), or with the next
  batch that writes policy anyway. A failed commit is retried the same way, with both clocks
  started again (no busy retry loop). The writer loop only asks for the deadline and calls
  :meth:`PolicyDeferral.commit_deferred` then, through the dataplane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from felixpy.calc.updates import (
    ChainsUpdate,
    EndpointUpdate,
    HooksUpdate,
    IpsetsUpdate,
    PolicyInputsUpdate,
    Update,
)

DEFERRED_SECONDS = 0.25  # idle time before writes that waited are flushed on their own
DEFERRED_MAX_SECONDS = 1.0  # ... and the longest they wait when the loop is never idle


class FlushClock:
    def __init__(
        self,
        *,
        idle: float = DEFERRED_SECONDS,
        max_wait: float = DEFERRED_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.max_wait = max_wait
        self._clock = clock
        self._busy_at = 0.0  # when a batch was last committed (or a flush tried)
        self._since: float | None = None  # when the deferred writes were first seen pending

    def busy(self) -> None:
        """A batch was committed."""
        self._busy_at = self._clock()

    def deadline(self, pending: bool) -> float | None:
        """When the deferred writes are due (``time.monotonic`` time), or None when nothing is."""
        if not pending:
            self._since = None
            return None
        if self._since is None:
            self._since = self._clock()
        return min(self._busy_at + self.idle, self._since + self.max_wait)

    def flushed(self, ok: bool) -> None:
        """A flush was tried; a failed one starts both clocks again."""
        self._busy_at = self._clock()
        if not ok:
            self._since = self._busy_at


class PolicyWriters(Protocol):
    """The writers behind the deferral: one family's ``PolicyDriver`` or both (``FamilyPolicies``).
    ``commit(additive=True)`` writes iptables insert-only where it can; ``deferred``: it left work."""

    def on_updates(self, updates: list[Update]) -> None: ...

    def commit(self, additive: bool = False) -> bool: ...

    @property
    def deferred(self) -> bool: ...


def only_local_removals(updates: list[Update], gone: set[tuple[str, str]]) -> bool:
    """Only local endpoints going away: nothing new to isolate, so their chains can wait a batch.

    ``gone``: local endpoints removed since the last policy commit (the datastore's echo of a CNI
    DEL's own delete arrives a batch later). Remote endpoints are never deferred: their addresses
    leave selector ipsets at once.
    """
    return all(
        (isinstance(u, EndpointUpdate) and u.endpoint is None)
        or (isinstance(u, PolicyInputsUpdate) and not u.others and u.deleted_workloads <= gone)
        or isinstance(u, ChainsUpdate | IpsetsUpdate | HooksUpdate)  # what those inputs compiled to
        for u in updates
    )


class PolicyDeferral:
    """The policy writers as the dataplane sees them: every batch handed over, this decides what is
    written now and what waits (the module doc)."""

    def __init__(self, writers: PolicyWriters, clock: FlushClock | None = None) -> None:
        self.writers = writers
        self.clock = clock or FlushClock()
        self._urgent = False  # this batch has input that must be in before its commit returns
        self._waiting = False  # written neither by a plain commit nor left clean by an additive one
        self._failed = False  # the last commit failed (retried with the next batch or at the deadline)
        self._gone: set[tuple[str, str]] = set()  # local endpoints removed since the last clean commit

    def on_updates(self, updates: list[Update]) -> None:
        """One batch's policy updates (local endpoints, the inputs summary, the compiled policy)."""
        self._gone.update(u.key for u in updates if isinstance(u, EndpointUpdate) and u.endpoint is None)
        self._urgent = self._urgent or not only_local_removals(updates, self._gone)
        self._waiting = self._waiting or bool(updates)
        self.writers.on_updates(updates)

    def commit(self) -> bool:
        """A batch's commit: write now what must be in before it returns, leave the rest pending.
        False while the last write failed (also when this batch wrote nothing)."""
        ok = self._write(additive=self._urgent) if self._urgent or not self._waiting else not self._failed
        self.clock.busy()
        return ok

    @property
    def deferred(self) -> bool:
        """Something waits for a plain commit (removals, what an additive commit left, a failure)."""
        return self._waiting

    @property
    def failed(self) -> bool:
        """The last commit failed: what it should have written is not in the kernel."""
        return self._failed

    def next_deadline(self) -> float | None:
        """When what waits is due to be written alone (None: nothing waits)."""
        return self.clock.deadline(self._waiting)

    def commit_deferred(self) -> bool:
        """Write everything that waits (a plain commit); the writer loop calls this at the deadline."""
        if not self._waiting:
            return True
        ok = self._write()
        self.clock.flushed(ok)
        return ok

    def _write(self, additive: bool = False) -> bool:
        ok = self.writers.commit(additive)
        self._failed = not ok
        self._urgent = False
        self._waiting = not ok or self.writers.deferred  # an additive commit may have left removals
        if not self._waiting:
            self._gone.clear()
        return ok
