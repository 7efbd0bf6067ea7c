"""Tiers as policy sees them: which exist, in what order, and what a tier does when it decides nothing.

A ``Tier`` resource (``projectcalico.org/v3``) becomes a :class:`TierInfo`; the compiler and the
reference evaluator both read one :class:`Tiers` table, so they order tiers and end them alike:

- tiers run in ascending ``order``, ties broken by name; a tier without an order runs after
  every ordered one (Calico: "no value indicates highest order");
- a tier with at least one policy applying to the endpoint (in that direction) that neither
  allowed, denied nor passed the packet ends with its ``defaultAction``: ``Deny`` (the default)
  drops it, ``Pass`` hands it to the next tier, or to the profiles after the last;
- the ``default`` tier always exists (order 1,000,000, ``Deny``), with or without a stored
  resource; a policy naming a tier that does not exist applies to nothing until the tier is
  created (felixctl refuses to create such a policy; the agent logs it and leaves it out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, KeysView, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DefaultAction = Literal["Deny", "Pass"]
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0


@dataclass(frozen=True, slots=True)
class TierInfo:
    name: str
    order: float | None = None  # None: after every ordered tier
    default_action: DefaultAction = "Deny"

    def sort_key(self) -> tuple[float, str]:
        return (math.inf if self.order is None else float(self.order), self.name)


BUILTIN_DEFAULT = TierInfo(DEFAULT_TIER, DEFAULT_TIER_ORDER, "Deny")


def tier_info(tier: Any) -> TierInfo:
    """A ``Tier`` resource (or a TierInfo) as a TierInfo; an absent defaultAction is Deny."""
    if isinstance(tier, TierInfo):
        return tier
    spec = tier.spec
    order = None if spec.order is None else float(spec.order)
    return TierInfo(tier.name, order, spec.default_action or "Deny")


class Tiers(Mapping[str, TierInfo]):
    """The tiers that exist: name → TierInfo, the built-in ``default`` always among them.

    ``orders`` is the older way to name tiers (name → order, each with defaultAction Deny); a
    TierInfo in ``tiers`` wins over it. Storing a ``default`` tier overrides the built-in one;
    removing it brings the built-in back.
    """

    def __init__(self, tiers: Iterable[Any] = (), *, orders: Mapping[str, float] | None = None):
        self._tiers: dict[str, TierInfo] = {DEFAULT_TIER: BUILTIN_DEFAULT}
        for name, order in (orders or {}).items():
            self._tiers[name] = TierInfo(name, float(order))
        for tier in tiers:
            self.put(tier)

    def put(self, tier: Any) -> bool:
        """Add or change a tier; True when that changed anything."""
        info = tier_info(tier)
        if self._tiers.get(info.name) == info:
            return False
        self._tiers[info.name] = info
        return True

    def remove(self, name: str) -> bool:
        """Forget a tier (``default`` falls back to the built-in); True when that changed anything."""
        if name == DEFAULT_TIER:
            return self.put(BUILTIN_DEFAULT)
        return self._tiers.pop(name, None) is not None

    def sort_key(self, name: str) -> tuple[float, str]:
        info = self._tiers.get(name)
        return info.sort_key() if info is not None else (math.inf, name)

    def default_action(self, name: str) -> DefaultAction:
        info = self._tiers.get(name)
        return info.default_action if info is not None else "Deny"

    def ordered(self, names: Iterable[str]) -> list[str]:
        """``names`` (tiers that exist) in evaluation order."""
        return sorted(names, key=self.sort_key)

    def __getitem__(self, name: str) -> TierInfo:
        return self._tiers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tiers

    def names(self) -> KeysView[str]:
        """The names of the tiers that exist, as a live view (a fast ``in`` for hot loops)."""
        return self._tiers.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)
