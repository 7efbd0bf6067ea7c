"""A dataplane that only records: applies calc updates to its own copy of the desired state.

Used by the calc state-sequence tests (and handy for dry runs): after every flush the
recorder's state must equal the graph's `state()`, which checks the deltas are complete.
"""

from __future__ import annotations

from collections.abc import Iterable

from felixpy.calc.model import (
    BlocksUpdate,
    Encap,
    EncapUpdate,
    EndpointUpdate,
    InputUpdate,
    InSync,
    NodeState,
    RouteUpdate,
    Update,
    VtepUpdate,
)


class RecordingDataplane:
    def __init__(self) -> None:
        self.endpoints: dict = {}
        self.routes: dict = {}
        self.vteps: dict = {}
        self.encap = Encap()
        self.local_blocks: frozenset[str] = frozenset()
        self.inputs: dict = {}
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
            case InputUpdate(kind, key, obj):
                _put(self.inputs, (kind, key), obj)
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
