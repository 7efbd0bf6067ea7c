"""Receive limits (pure): what one UPDATE may add to a session's Adj-RIB-In under ``maxPrefixes``.

After BIRD's ``receive limit N action warn|block|restart|disable``: the count is what the session
sent and is kept (refused routes included: memory is what the limit protects), re-announcements of
prefixes it already has do not count, withdrawals make room. ``Warn`` keeps everything, ``Block``
keeps what fits, ``Restart`` and ``Disable`` mean the session must be closed (the engine does it).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

Groups = list[tuple[str, list[str]]]  # (next hop, prefixes) as an UPDATE announces them
ACTIONS = ("Warn", "Block", "Restart", "Disable")


@dataclass(frozen=True, slots=True)
class Verdict:
    over: bool  # the session holds (or would hold) more than its limit
    total: int  # what it would hold with everything in the UPDATE
    keep: Groups | None  # what goes on; None: close the session
    blocked: int = 0  # prefixes refused by Block


def check(limit: int, action: str, held: Container[str], held_count: int, groups: Groups) -> Verdict:
    """The verdict on an UPDATE's announced ``groups`` for a session holding ``held`` (``held_count``
    prefixes) with receive limit ``limit`` (0: none) and ``action``."""
    if not limit:
        return Verdict(False, held_count, groups)
    new = sum(1 for _, prefixes in groups for p in prefixes if p not in held)
    total = held_count + new
    if total <= limit:
        return Verdict(False, total, groups)
    if action == "Warn":
        return Verdict(True, total, groups)
    if action != "Block":
        return Verdict(True, total, None)
    room, blocked = max(limit - held_count, 0), 0
    keep: Groups = []
    for next_hop, prefixes in groups:
        fits = []
        for prefix in prefixes:
            if prefix in held:
                fits.append(prefix)
            elif room > 0:
                room -= 1
                fits.append(prefix)
            else:
                blocked += 1
        keep.append((next_hop, fits))
    return Verdict(True, total, keep, blocked)
