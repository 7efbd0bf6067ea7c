"""IP pools as IPAM sees them, and the checks felixctl runs before changing a pool.

The checks are pure: they take the pools and the number of addresses in use (which the
caller gets from ``IPAM.pool_usage``) and raise a PoolCheckError whose message is what the
user should read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from felixpy.resources.ippool import IPPool
from ipam.allocator import DEFAULT_BLOCK_SIZE, PoolView
from ipam.errors import PoolCheckError, PoolImmutableField, PoolInUse, PoolOverlap


def pool_view(pool: IPPool) -> PoolView:
    cidr = ipaddress.ip_network(pool.spec.cidr, strict=False)
    return PoolView(
        name=pool.metadata.name,
        cidr=cidr,
        block_size=pool.spec.block_size or DEFAULT_BLOCK_SIZE[cidr.version],
        disabled=pool.spec.disabled,
        node_selector=pool.spec.node_selector or "all()",
        allowed_uses=tuple(pool.spec.allowed_uses or ("Workload", "Tunnel")),
        ipip_mode=pool.spec.ipip_mode,
        vxlan_mode=pool.spec.vxlan_mode,
    )


def check_pool_create(existing_pools: Sequence[IPPool], new: IPPool) -> None:
    """Refuse a pool that overlaps another (by a different name)."""
    net = ipaddress.ip_network(new.spec.cidr, strict=False)
    for p in existing_pools:
        if p.metadata.name == new.metadata.name:
            continue
        other = ipaddress.ip_network(p.spec.cidr, strict=False)
        if other.version == net.version and net.overlaps(other):
            raise PoolOverlap(
                f"IPPool {new.metadata.name!r} ({net}) overlaps IPPool {p.metadata.name!r} ({other})"
            )


def check_pool_update(
    existing_pools: Sequence[IPPool], old: IPPool, new: IPPool, *, in_use: int, blocks: int = 0
) -> None:
    """``cidr`` and ``blockSize`` are immutable once the pool holds allocations (or blocks)."""
    check_pool_create(existing_pools, new)
    old_v, new_v = pool_view(old), pool_view(new)
    if in_use == 0 and blocks == 0:
        return
    for field, before, after in (
        ("cidr", old_v.cidr, new_v.cidr),
        ("blockSize", old_v.block_size, new_v.block_size),
    ):
        if before != after:
            raise PoolImmutableField(
                f"IPPool {new.metadata.name!r}: {field} cannot change from {before} to {after} while the "
                f"pool has {in_use} address(es) in use in {blocks} block(s)"
            )


def check_pool_delete(pool: IPPool, *, in_use: int) -> None:
    """A pool with allocations can only be deleted once it is disabled."""
    if in_use and not pool.spec.disabled:
        raise PoolInUse(
            f"IPPool {pool.metadata.name!r} ({pool.spec.cidr}) has {in_use} address(es) in use; "
            f"disable it first (spec.disabled: true), then delete it"
        )


def split_cidr(pool_cidr: str, parts: int, block_size: int) -> list[str]:
    """The ``parts`` equal child CIDRs of ``pool_cidr`` (``felixctl ipam split``), in address order.

    As calicoctl: ``parts`` must be a power of two greater than 1 and the pool large enough; and each
    child must still hold at least one block of the pool's ``blockSize`` (an IPPool smaller than its
    block size is invalid).
    """
    if parts < 2 or parts & (parts - 1):
        raise PoolCheckError(f"the number of pools must be a power of 2 greater than 1, not {parts}")
    net = ipaddress.ip_network(pool_cidr, strict=False)
    extra = parts.bit_length() - 1
    new_prefix = net.prefixlen + extra
    if new_prefix > net.max_prefixlen:
        raise PoolCheckError(f"the CIDR {net} is not large enough to be split into {parts} parts")
    if new_prefix > block_size:
        raise PoolCheckError(
            f"splitting {net} into {parts} gives /{new_prefix} pools, smaller than the pool's blockSize "
            f"/{block_size}: each pool must hold at least one block"
        )
    return [str(c) for c in net.subnets(prefixlen_diff=extra)]
