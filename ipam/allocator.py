"""Pure allocation decisions: which pools, which blocks, in which order. No I/O here.

- ``usable_pools``: the enabled pools of one IP version whose nodeSelector matches the
  node, whose allowedUses include the intended use, restricted to the requested ones.
- ``candidate_blocks``: the block CIDRs of a pool, starting at an index seeded from the
  host name (deterministic per host, so competing nodes start far apart) with wrap-around.
- ``borrow_order``: the blocks another node owns that still have room, in the order a
  node borrows single addresses from them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ipam.block import Block, IPNetwork
from ipam.errors import NoUsablePool, PoolNotFound

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
DEFAULT_MAX_BLOCKS_PER_HOST = 20


@dataclass(frozen=True, slots=True)
class PoolView:
    """The parts of an IPPool the allocator needs (built from felixpy.resources.IPPool)."""

    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    allowed_uses: tuple[str, ...] = ("Workload", "Tunnel")
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"

    @property
    def version(self) -> int:
        return self.cidr.version


@dataclass(frozen=True, slots=True)
class IPAMConfig:
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0  # 0 = no limit of its own; see block_limit

    @property
    def block_limit(self) -> int | None:
        """How many blocks one host may claim, or None for no limit.

        As in Calico, the limit only applies with strict affinity (a node that may not borrow must be
        kept from hoarding blocks): an explicit maxBlocksPerHost, else the default of 20. Without strict
        affinity a node claims blocks as it needs them and borrows when the pool has none left.
        """
        if not self.strict_affinity:
            return self.max_blocks_per_host or None
        return self.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST

    def to_json(self) -> dict[str, object]:
        return {
            "strict_affinity": self.strict_affinity,
            "auto_allocate_blocks": self.auto_allocate_blocks,
            "maxBlocksPerHost": self.max_blocks_per_host,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IPAMConfig:
        def pick(*names: str, default: Any) -> Any:
            for n in names:
                if n in d:
                    return d[n]
            return default

        return cls(
            bool(pick("strict_affinity", "strictAffinity", default=False)),
            bool(pick("auto_allocate_blocks", "autoAllocateBlocks", default=True)),
            int(pick("maxBlocksPerHost", "max_blocks_per_host", default=0)),
        )


Matcher = Callable[[str, Mapping[str, str]], bool]


def usable_pools(
    pools: Sequence[PoolView],
    *,
    version: int,
    node_labels: Mapping[str, str],
    intended_use: str,
    requested: Sequence[str] | None,
    matcher: Matcher,
) -> list[PoolView]:
    """Pools to allocate from, in order; raises PoolNotFound / NoUsablePool with the reason.

    ``requested`` may name pools of both versions; when it names none of ``version``, every
    pool of that version is a candidate (Calico's empty ``ipv6_pools``).
    """
    same = [p for p in pools if p.version == version]
    chosen: list[PoolView] = []
    for r in requested or ():
        match = [p for p in pools if p.name == r or str(p.cidr) == _normal_cidr(r)]
        if not match:
            raise PoolNotFound(f"requested pool {r!r} does not exist")
        chosen.extend(m for m in match if m.version == version and m not in chosen)
    requested = requested if chosen else None
    same = chosen or same
    out = [
        p
        for p in same
        if not p.disabled and intended_use in p.allowed_uses and matcher(p.node_selector, node_labels)
    ]
    if not out:
        what = "requested" if requested else "enabled"
        raise NoUsablePool(
            f"no {what} IPv{version} pool allows {intended_use} addresses on this node "
            f"(pools considered: {', '.join(str(p.cidr) for p in same) or 'none'})"
        )
    return out


def _normal_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


def block_count(pool: PoolView) -> int:
    return 1 << (pool.block_size - pool.cidr.prefixlen)


def block_at(pool: PoolView, index: int) -> IPNetwork:
    step = 1 << (pool.cidr.max_prefixlen - pool.block_size)
    base = pool.cidr.network_address + index * step
    return ipaddress.ip_network(f"{base}/{pool.block_size}")


def block_for_address(pool: PoolView, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    return ipaddress.ip_network(f"{address}/{pool.block_size}", strict=False)


def host_start_index(host: str, count: int) -> int:
    digest = hashlib.sha256(host.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def candidate_blocks(pool: PoolView, host: str) -> Iterator[IPNetwork]:
    """Every block of ``pool`` once, starting at the host-seeded index and wrapping around."""
    n = block_count(pool)
    start = host_start_index(host, n)
    for i in range(n):
        yield block_at(pool, (start + i) % n)


def first_free_candidate(pool: PoolView, host: str, existing: set[str]) -> IPNetwork | None:
    for cidr in candidate_blocks(pool, host):
        if str(cidr) not in existing:
            return cidr
    return None


def in_pools(cidr: IPNetwork, pools: Sequence[PoolView]) -> bool:
    return any(cidr.version == p.version and cidr.subnet_of(p.cidr) for p in pools)  # type: ignore[arg-type]


def pool_of(
    address_or_net: IPNetwork | ipaddress.IPv4Address | ipaddress.IPv6Address, pools: Sequence[PoolView]
) -> PoolView | None:
    for p in pools:
        if address_or_net.version != p.version:
            continue
        if isinstance(address_or_net, ipaddress.IPv4Network | ipaddress.IPv6Network):
            if address_or_net.subnet_of(p.cidr):  # type: ignore[arg-type]
                return p
        elif address_or_net in p.cidr:
            return p
    return None


def borrow_order(blocks: Sequence[Block], node: str, pools: Sequence[PoolView]) -> list[Block]:
    """Blocks in ``pools`` not affine to ``node`` with free addresses: pool order, then most free
    first, ties rotated by a node-seeded offset so that borrowing nodes spread out."""
    order = {str(p.cidr): i for i, p in enumerate(pools)}

    def pool_rank(b: Block) -> int:
        for p in pools:
            if b.cidr.version == p.version and b.cidr.subnet_of(p.cidr):  # type: ignore[arg-type]
                return order[str(p.cidr)]
        return len(pools)

    usable = [
        b
        for b in blocks
        if b.affine_node() != node and b.free_count and not b.deleted and pool_rank(b) < len(pools)
    ]
    if not usable:
        return []
    usable.sort(key=lambda b: int(b.cidr.network_address))
    shift = host_start_index(node, len(usable))
    usable = usable[shift:] + usable[:shift]
    return sorted(usable, key=lambda b: (pool_rank(b), -b.free_count))


def summarize_free(pools: Sequence[PoolView]) -> str:
    return ", ".join(f"{p.name} ({p.cidr})" for p in pools)
