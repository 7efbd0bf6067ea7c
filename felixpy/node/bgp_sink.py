"""Hands the BGP inputs the calc passes through (Nodes, BGPConfigurations, BGPPeers, BGPFilters, IPPools,
this node's blocks) to `bgp.service.BGPService.update` — the full state, once per batch that
changed any of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

    def __call__(self, updates: list[Update]) -> None:
        changed = False
        for u in updates:
            if isinstance(u, InputUpdate) and u.kind in BGP_KINDS:
                table = self.inputs[BGP_KINDS[u.kind]]
                if u.obj is None:
                    table.pop(u.key, None)
                else:
                    table[u.key] = u.obj
                changed = True
            elif isinstance(u, BlocksUpdate):
                self.local_blocks = u.local_blocks
                changed = True
        if changed:
            self.service.update(
                **{name: list(table.values()) for name, table in self.inputs.items()},
                local_blocks=sorted(self.local_blocks),
            )
