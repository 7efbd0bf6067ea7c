"""Hands calc's BGP input snapshot (`felixpy.calc.bgp_inputs`: Nodes, BGPConfigurations, BGPPeers,
BGPFilters, IPPools, this node's blocks, every block's affinity and every WorkloadEndpoint's node and
addresses) to `bgp.service.BGPService.update` — the full state, once per batch that changed it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from felixpy.calc.updates import BGPInputsUpdate, Update

if TYPE_CHECKING:
    from bgp.service import BGPService


class BGPSink:
    def __init__(self, service: BGPService) -> None:
        self.service = service

    def __call__(self, updates: list[Update]) -> None:
        for u in updates:
            if isinstance(u, BGPInputsUpdate):
                inputs = u.inputs
                self.service.update(
                    nodes=list(inputs.nodes),
                    bgp_configs=list(inputs.bgp_configs),
                    peers=list(inputs.peers),
                    bgp_filters=list(inputs.bgp_filters),
                    pools=list(inputs.pools),
                    local_blocks=list(inputs.local_blocks),
                    workloads=list(inputs.workloads),
                    all_blocks=inputs.all_blocks,
                )
