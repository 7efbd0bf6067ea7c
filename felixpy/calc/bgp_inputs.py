"""The BGP service's inputs as a calc stage: Nodes, BGPConfigurations, BGPPeers, BGPFilters, IPPools,
this node's blocks, every block's affinity and every WorkloadEndpoint's node and addresses, emitted
as one frozen `BGPInputs` snapshot per batch that changed any of them.

Workload addresses only count when they change the set of borrowed addresses (an address used on
a node other than its block's): the BGP import policy protects those, the blocks protect the rest.
"""

from __future__ import annotations

from typing import Any

from bgp.route import PrefixKey, blocks_by_node, borrowed_host
from felixpy.calc.updates import BGPInputs, BGPInputsUpdate
from policy.entities import Endpoint

Key = tuple[str, str]
_TABLES = ("nodes", "bgp_configs", "peers", "bgp_filters", "pools")
_KIND_TABLE = {
    "Node": "nodes",
    "BGPConfiguration": "bgp_configs",
    "BGPPeer": "peers",
    "BGPFilter": "bgp_filters",
    "IPPool": "pools",
}


class BGPInputsCalc:
    def __init__(self) -> None:
        self._tables: dict[str, dict[Key, Any]] = {name: {} for name in _TABLES}
        self._local_blocks: frozenset[str] = frozenset()
        self._all_blocks: tuple[tuple[str, str], ...] = ()
        self._workloads: dict[Key, tuple[tuple[str, str], ...]] = {}  # key -> ((node, ip), ...)
        self._borrowed: dict[str, str] = {}  # what the last snapshot's workloads said was borrowed
        # (node, address) -> its borrowed host prefix, "" when inside the node's blocks; valid for
        # self._by_node (the blocks): a flush looks each pair up instead of parsing 11,000 addresses
        self._memo: dict[tuple[str, str], str] = {}
        self._by_node: dict[str, list[PrefixKey]] | None = None
        self._changed = False
        self._workloads_changed = False

    def on_resource(self, kind: str, key: Key, obj: Any | None) -> None:
        if kind == "WorkloadEndpoint":
            self._workloads_changed = self._on_workload(key, obj) or self._workloads_changed
            return
        table = _KIND_TABLE.get(kind)
        if table is None:
            return
        if obj is None:
            self._tables[table].pop(key, None)
        else:
            self._tables[table][key] = obj
        self._changed = True

    def on_blocks(self, local_blocks: frozenset[str], all_blocks: tuple[tuple[str, str], ...]) -> None:
        self._local_blocks = local_blocks
        if all_blocks != self._all_blocks:
            self._memo, self._by_node = {}, None
        self._all_blocks = all_blocks
        self._changed = True

    def _on_workload(self, key: Key, obj: Any | None) -> bool:
        """Remember a WorkloadEndpoint's (node, address) pairs; True when they changed."""
        old = self._workloads.pop(key, ())
        if isinstance(obj, Endpoint):  # (as CalcGraph gives it: its ips are its ipNetworks' addresses)
            self._workloads[key] = tuple((obj.node or "", ip) for ip in obj.ips)
        elif obj is not None:
            spec = obj.spec
            self._workloads[key] = tuple((spec.node, str(net).split("/")[0]) for net in spec.ip_networks)
        return self._workloads.get(key, ()) != old

    def _borrowed_addresses(self, pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """``bgp.route.borrowed_addresses(pairs, self._all_blocks)``, each pair's answer memoised."""
        memo = self._memo
        if len(memo) > 2 * len(pairs) + 1024:  # bounded: pairs of deleted endpoints go at some point
            memo.clear()
        if self._by_node is None:
            self._by_node = blocks_by_node(self._all_blocks)
        out: dict[str, str] = {}
        for pair in pairs:
            host = memo.get(pair)
            if host is None:
                host = memo[pair] = borrowed_host(pair[0], pair[1], self._by_node) or ""
            if host:
                out[host] = pair[0]
        return out

    def flush(self) -> BGPInputsUpdate | None:
        changed = self._changed
        pairs: tuple[tuple[str, str], ...] = ()
        if self._workloads_changed or changed:
            pairs = tuple(pair for pairs in self._workloads.values() for pair in pairs)
            borrowed = self._borrowed_addresses(pairs)
            changed = changed or borrowed != self._borrowed  # a pod in its node's block changes nothing
            self._borrowed = borrowed
        self._changed = self._workloads_changed = False
        if not changed:
            return None
        t = self._tables
        return BGPInputsUpdate(
            BGPInputs(
                nodes=tuple(t["nodes"].values()),
                bgp_configs=tuple(t["bgp_configs"].values()),
                peers=tuple(t["peers"].values()),
                bgp_filters=tuple(t["bgp_filters"].values()),
                pools=tuple(t["pools"].values()),
                local_blocks=tuple(sorted(self._local_blocks)),
                workloads=pairs,
                all_blocks=self._all_blocks,
            )
        )
