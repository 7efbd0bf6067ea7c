"""A dataplane that only records: applies calc updates to its own copy of the desired state.

Used by the calc state-sequence tests (and handy for dry runs): after every flush the
recorder's state must equal the graph's `state()`, which checks the deltas are complete. It keeps
the policy compilers' output too (chains, ipsets and hooks per IP version), so a test can compare
it with the compilers' whole state, and the last BGP input snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

from felixpy.calc.updates import (
    BGPInputs,
    BGPInputsUpdate,
    BlocksUpdate,
    ChainsUpdate,
    Encap,
    EncapUpdate,
    EndpointUpdate,
    FelixConfigUpdate,
    HooksUpdate,
    InSync,
    IpsetsUpdate,
    NodeState,
    RouteUpdate,
    Update,
    VtepUpdate,
)
from felixpy.dataplane.kernel_objects import Chain, IpSet, Table
from policy.chains import Hook


class RecordingDataplane:
    def __init__(self) -> None:
        self.endpoints: dict = {}
        self.routes: dict = {}
        self.vteps: dict = {}
        self.encap = Encap()
        self.local_blocks: frozenset[str] = frozenset()
        self.chains: dict[int, dict[tuple[Table, str], Chain]] = {}  # IP version -> (table, name) -> chain
        self.ipsets: dict[int, dict[str, IpSet]] = {}  # IP version -> name -> set
        self.hooks: dict[int, tuple[Hook, ...]] = {}
        self.bgp: BGPInputs | None = None
        self.configs: dict = {}
        self.in_sync = False
        self.batches: list[list[Update]] = []

    def apply(self, updates: Iterable[Update]) -> None:
        batch = list(updates)
        self.batches.append(batch)
        for u in batch:
            self._apply_one(u)

    def _apply_one(self, u: Update) -> None:
        match u:
            case EndpointUpdate(key, ep):
                _put(self.endpoints, key, ep)
            case RouteUpdate(dst, route):
                _put(self.routes, dst, route)
            case VtepUpdate(node, vtep):
                _put(self.vteps, node, vtep)
            case EncapUpdate(encap):
                self.encap = encap
            case BlocksUpdate(local, _):
                self.local_blocks = local
            case ChainsUpdate(version, chains, removed):
                table = self.chains.setdefault(version, {})
                for chain in chains:
                    table[(chain.table, chain.name)] = chain
                for key in removed:
                    table.pop(key, None)
            case IpsetsUpdate(version, ipsets, removed):
                sets = self.ipsets.setdefault(version, {})
                for ipset in ipsets:
                    sets[ipset.name] = ipset
                for name in removed:
                    sets.pop(name, None)
            case HooksUpdate(version, hooks):
                self.hooks[version] = hooks
            case BGPInputsUpdate(inputs):
                self.bgp = inputs
            case FelixConfigUpdate(name, config):
                _put(self.configs, name, config)
            case InSync():
                self.in_sync = True

    def state(self) -> NodeState:
        return NodeState(
            endpoints=dict(self.endpoints),
            routes=dict(self.routes),
            vteps=dict(self.vteps),
            encap=self.encap,
            local_blocks=self.local_blocks,
        )


def _put(d: dict, key: object, value: object | None) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value
