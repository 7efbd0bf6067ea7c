"""Pure views over IPAM state for operators: pool usage, and the consistency check (leaks).

``usage(pools, blocks)`` feeds `felixctl ipam show` and the pool checks; ``check(...)``
feeds `felixctl ipam check` and `release --from-report`. Inputs are plain objects read by
the caller; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ipam.allocator import PoolView
from ipam.block import Block, Handle

REPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Usage:
    cidr: str
    total: int
    in_use: int
    blocks: int = 0
    affinity: str | None = None

    @property
    def free(self) -> int:
        return self.total - self.in_use


def usage(pools: Sequence[PoolView], blocks: Iterable[Block]) -> list[tuple[Usage, list[Usage]]]:
    """Per pool: its usage, and one Usage per block inside it (sorted by address)."""
    per_pool: dict[str, list[Block]] = {str(p.cidr): [] for p in pools}
    for b in blocks:
        for p in pools:
            if b.cidr.version == p.version and b.cidr.subnet_of(p.cidr):  # type: ignore[arg-type]
                per_pool[str(p.cidr)].append(b)
                break
    out = []
    for p in pools:
        bl = sorted(per_pool[str(p.cidr)], key=lambda b: int(b.cidr.network_address))
        rows = [Usage(str(b.cidr), b.size, b.in_use, 1, b.affinity) for b in bl]
        out.append((Usage(str(p.cidr), p.cidr.num_addresses, sum(r.in_use for r in rows), len(rows)), rows))
    return out


@dataclass(frozen=True, slots=True)
class Allocation:
    ip: str
    block: str
    handle: str | None
    attrs: Mapping[str, str]
    sequence: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "block": self.block,
            "handle": self.handle,
            "attrs": dict(self.attrs),
            "sequenceNumber": self.sequence,
        }


@dataclass
class CheckReport:
    allocations: int = 0
    in_use: int = 0
    leaked: list[Allocation] = field(default_factory=list)
    not_allocated: list[dict[str, str]] = field(default_factory=list)
    orphan_blocks: list[dict[str, str]] = field(default_factory=list)
    handle_problems: list[dict[str, Any]] = field(default_factory=list)
    # endpoints whose interface is gone on the node that checked (their addresses stay allocated)
    orphaned_endpoints: list[dict[str, Any]] = field(default_factory=list)
    # allocations inside an IPReservation: kept (as Calico keeps them), listed, not counted as problems
    in_reservation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.leaked)
            + len(self.not_allocated)
            + len(self.orphan_blocks)
            + len(self.handle_problems)
            + len(self.orphaned_endpoints)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "allocations": self.allocations,
            "inUse": self.in_use,
            "leakedIPs": [a.to_json() for a in self.leaked],
            "inUseButNotAllocated": self.not_allocated,
            "blocksWithoutNode": self.orphan_blocks,
            "handleProblems": self.handle_problems,
            "orphanedEndpoints": self.orphaned_endpoints,
            "allocatedInReservation": self.in_reservation,
            "problems": self.problems,
        }


def allocations(blocks: Iterable[Block]) -> list[Allocation]:
    out = []
    for b in blocks:
        for o, idx in enumerate(b.allocations):
            if idx is not None:
                a = b.attributes[idx]
                out.append(
                    Allocation(
                        str(b.address(o)),
                        str(b.cidr),
                        a.handle_id,
                        a.secondary,
                        b.seq_for_allocation.get(str(o)),
                    )
                )
    return out


def check(
    blocks: Sequence[Block],
    handles: Sequence[Handle],
    *,
    endpoint_ips: Mapping[str, str],
    tunnel_ips: Mapping[str, str],
    nodes: set[str],
) -> CheckReport:
    """``endpoint_ips``: ip -> workload endpoint name; ``tunnel_ips``: ip -> node (from Node resources)."""
    rep = CheckReport()
    allocs = allocations(blocks)
    rep.allocations = len(allocs)
    allocated = {a.ip for a in allocs}
    used = {**endpoint_ips, **tunnel_ips}
    rep.in_use = len(used)
    rep.leaked = [a for a in allocs if a.ip not in used]
    rep.not_allocated = [{"ip": ip, "usedBy": who} for ip, who in sorted(used.items()) if ip not in allocated]
    for b in blocks:
        node = b.affine_node()
        if node is not None and node not in nodes:
            rep.orphan_blocks.append({"block": str(b.cidr), "node": node})
    counts: dict[str, dict[str, int]] = {}
    for a in allocs:
        per = counts.setdefault(a.handle or "", {})
        per[a.block] = per.get(a.block, 0) + 1
    for h in handles:
        if dict(h.blocks) != counts.get(h.id, {}):
            rep.handle_problems.append(
                {"handle": h.id, "recorded": dict(h.blocks), "actual": counts.get(h.id, {})}
            )
    return rep


def endpoint_ip_map(endpoints: Iterable[Any]) -> dict[str, str]:
    out = {}
    for wep in endpoints:
        for net in wep.spec.ip_networks:
            out[str(ipaddress.ip_interface(net).ip)] = f"{wep.metadata.namespace}/{wep.metadata.name}"
    return out


def tunnel_ip_map(nodes: Iterable[Any]) -> dict[str, str]:
    out = {}
    for n in nodes:
        addrs = [
            n.spec.bgp.ipv4_ipip_tunnel_addr if n.spec.bgp else None,
            n.spec.ipv4_vxlan_tunnel_addr,
            n.spec.ipv6_vxlan_tunnel_addr,
        ]
        for a in addrs:
            if a:
                out[str(ipaddress.ip_interface(a).ip)] = f"node/{n.metadata.name}"
    return out
