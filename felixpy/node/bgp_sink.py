"""Hands the BGP inputs the calc passes through (Nodes, BGPConfigurations, BGPPeers, BGPFilters, IPPools,
this node's blocks, every block's affinity and every WorkloadEndpoint's node and addresses) to
`bgp.service.BGPService.update` — the full state, once per batch that changed any of them.
Workload addresses only count when they change the set of borrowed addresses (an address used on
a node other than its block's): the BGP import policy protects those, the blocks protect the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bgp.service import borrowed_addresses
from felixpy.calc.model import BlocksUpdate, InputUpdate, Update

if TYPE_CHECKING:
    from bgp.service import BGPService

BGP_KINDS = {
    "Node": "nodes",
    "BGPConfiguration": "bgp_configs",
    "BGPPeer": "peers",
    "BGPFilter": "bgp_filters",
    "IPPool": "pools",
}


class BGPSink:
    def __init__(self, service: BGPService) -> None:
        self.service = service
        self.inputs: dict[str, dict[tuple[str, str], Any]] = {v: {} for v in BGP_KINDS.values()}
        self.local_blocks: frozenset[str] = frozenset()
        self.all_blocks: tuple[tuple[str, str], ...] = ()
        self.workloads: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}  # key -> ((node, ip), ...)
        self._borrowed: dict[str, str] = {}  # what the last update's workloads said was borrowed

    def __call__(self, updates: list[Update]) -> None:
        changed = workloads = False
        for u in updates:
            if isinstance(u, InputUpdate) and u.kind in BGP_KINDS:
                table = self.inputs[BGP_KINDS[u.kind]]
                if u.obj is None:
                    table.pop(u.key, None)
                else:
                    table[u.key] = u.obj
                changed = True
            elif isinstance(u, InputUpdate) and u.kind == "WorkloadEndpoint":
                workloads = self._workload(u.key, u.obj) or workloads
            elif isinstance(u, BlocksUpdate):
                self.local_blocks = u.local_blocks
                self.all_blocks = u.all_blocks
                changed = True
        if workloads or changed:
            pairs = [pair for pairs in self.workloads.values() for pair in pairs]
            borrowed = borrowed_addresses(pairs, self.all_blocks)
            changed = changed or borrowed != self._borrowed  # a pod in its node's block changes nothing
            self._borrowed = borrowed
        if changed:
            self.service.update(
                **{name: list(table.values()) for name, table in self.inputs.items()},
                local_blocks=sorted(self.local_blocks),
                workloads=pairs,
                all_blocks=self.all_blocks,
            )

    def _workload(self, key: tuple[str, str], obj: Any) -> bool:
        """Remember a WorkloadEndpoint's (node, address) pairs; True when they changed."""
        old = self.workloads.pop(key, ())
        if obj is not None:
            spec = obj.spec
            self.workloads[key] = tuple((spec.node, str(net).split("/")[0]) for net in spec.ip_networks)
        return self.workloads.get(key, ()) != old
