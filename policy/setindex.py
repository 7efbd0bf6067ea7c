"""Reference-counted ipsets and each endpoint's contribution to them.

A set exists while at least one active policy chain references it. Adding a set scans its
candidates once (every endpoint and network set, or those a ``LabelIndex`` gives); an endpoint
change re-evaluates that endpoint against every set in use. The ``IpSet`` values are only built
for sets that changed, when the compiler is asked.

The counts behind Felix's ``felix_label_index_strategy_evals{strategy}`` and
``felix_label_index_selector_evals{result}`` are kept here, where the scans happen (``SetIndex``'s
``strategy_evals`` and ``selector_evals``): one scan per new selector set, named as Felix names
its scan strategies, and each evaluation of its selector on a candidate, by result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from felixpy.dataplane.kernel_objects import IpSet
from policy.entities import Endpoint
from policy.selector import Selector, required_equalities
from policy.set_specs import NamedPortSet, SelectorSet, SetSpec

# Felix's names for the scan strategies felixpy's index has (the ``strategy`` label): every
# endpoint and network set; none (a ``key == value`` term no view carries); one label value's.
FULL_SCAN = "endpoint-full-scan"
NO_MATCH = "endpoint-no-match"
SINGLE_VALUE = "endpoint-single-value"


def scan_strategy(candidates: set[str] | None) -> str:
    """Felix's name for a scan of ``LabelIndex.candidates``' answer."""
    if candidates is None:
        return FULL_SCAN
    return SINGLE_VALUE if candidates else NO_MATCH


def optimized(selector: Selector) -> bool:
    """The label index narrows this selector's scan (Felix's ``optimized`` label): it has a
    ``key == value`` term; otherwise every endpoint and network set is a candidate."""
    return bool(required_equalities(selector))


class LabelIndex:
    """label → value → keys of the label views holding it: the candidates of a selector with a
    ``key == value`` term (``candidates``), so a new policy or set evaluates its selector on the
    endpoints that can match instead of on all of them (1,000 local and 10,000 remote endpoints
    x 500 policies at start-up). Kept in step with the views by ``update``."""

    __slots__ = ("_index",)

    def __init__(self) -> None:
        self._index: dict[str, dict[str, set[str]]] = {}

    def update(self, key: str, old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> None:
        """The view of ``key`` went from ``old`` to ``new`` (None: absent)."""
        if old:
            for label, value in old.items():
                if new is not None and new.get(label) == value:
                    continue
                values = self._index[label]
                keys = values[value]
                keys.discard(key)
                if not keys:
                    del values[value]
                    if not values:
                        del self._index[label]
        if new:
            index = self._index
            for label, value in new.items():
                if old is not None and old.get(label) == value:
                    continue
                by_value = index.get(label)
                if by_value is None:
                    index[label] = {value: {key}}
                elif (members := by_value.get(value)) is None:
                    by_value[value] = {key}
                else:
                    members.add(key)

    def candidates(self, selector: Selector) -> set[str] | None:
        """A superset of the keys whose view ``selector`` matches (the smallest of its ``==``
        terms' key sets), or None when it has no such term (every key is a candidate)."""
        best: set[str] | None = None
        for label, value in required_equalities(selector):
            keys = self._index.get(label, {}).get(value)
            if keys is None:
                return set()
            if best is None or len(keys) < len(best):
                best = keys
        return best


class SetIndex:
    def __init__(self) -> None:
        self._specs: dict[str, SetSpec] = {}
        self._refs: dict[str, int] = {}
        self._members: dict[str, dict[str, frozenset[str]]] = {}  # set name → endpoint key → members
        self.dirty: set[str] = set()
        self.strategy_evals: dict[str, int] = {}  # scan strategy → scans of new selector sets
        self.selector_evals: dict[bool, int] = {True: 0, False: 0}  # result → evaluations in them

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def names(self) -> Iterable[str]:
        return self._specs.keys()

    def acquire(
        self,
        spec: SetSpec,
        endpoints: Mapping[str, Endpoint],
        views: Mapping[str, Mapping[str, str]],
        strategy: str = FULL_SCAN,
    ) -> None:
        """One more reference to ``spec``. A new selector set evaluates its selector on
        ``endpoints`` (its candidates, found by ``strategy``) and counts the scan."""
        name = spec.name
        self._refs[name] = self._refs.get(name, 0) + 1
        if name in self._specs:
            return
        self._specs[name] = spec
        contributions = {}
        if isinstance(spec, SelectorSet | NamedPortSet):  # (a NetsSet: no endpoint contributes)
            self.strategy_evals[strategy] = self.strategy_evals.get(strategy, 0) + 1
            matches = spec.selector.matches
            matched = [(key, ep) for key, ep in endpoints.items() if matches(views[key])]
            self.selector_evals[True] += len(matched)
            self.selector_evals[False] += len(endpoints) - len(matched)
            for key, ep in matched:
                m = spec.members_matched(ep)
                if m:
                    contributions[key] = m
        self._members[name] = contributions
        self.dirty.add(name)

    def release(self, spec: SetSpec) -> None:
        name = spec.name
        self._refs[name] -= 1
        if self._refs[name] == 0:
            del self._refs[name], self._specs[name], self._members[name]
            self.dirty.add(name)

    def update_endpoint(self, key: str, ep: Endpoint | None, view: Mapping[str, str] | None) -> None:
        """Re-evaluate one endpoint (None = removed) against every set in use."""
        for name, spec in self._specs.items():
            contributions = self._members[name]
            new = spec.members_of(ep, view) if ep is not None and view is not None else frozenset()
            old = contributions.get(key, frozenset())
            if new != old:
                if new:
                    contributions[key] = new
                else:
                    del contributions[key]
                self.dirty.add(name)

    def ipset(self, name: str) -> IpSet | None:
        """The set as it should be now, or None when it is no longer used."""
        spec = self._specs.get(name)
        if spec is None:
            return None
        base = spec.empty()
        members = frozenset().union(base.members, *self._members[name].values())
        return IpSet(base.name, base.set_type, base.family, members)
