"""Releasing addresses, block affinities and a deleted node's holdings.

Same discipline as assignment: read block and handles → pure ``Block.release`` → one
transaction updating the block and every handle it touches (deleting a handle that holds
nothing more, and deleting a block with no affinity once it is empty) → retry on Conflict.
Releasing an address that is already free is not an error.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from felixpy.datastore.errors import Conflict, NotFound
from felixpy.datastore.kv import TxnOp
from felixpy.resources.node import Node
from ipam import allocator
from ipam.block import Block, Handle, IPAddress, IPNetwork
from ipam.errors import BlockNotEmpty, NodeStillExists, RetriesExhausted
from ipam.store import IPAMStore, handle_key

log = logging.getLogger(__name__)

RETRIES = 100


@dataclass(frozen=True, slots=True)
class GCResult:
    node: str
    released: list[str]
    blocks: list[str]


class Releaser:
    backend: Any

    def __init__(self, store: IPAMStore):
        self.store = store
        self._blocks: dict[str, tuple[Block, int]] = {}

    def pools(self, *, fresh: bool = False) -> list[allocator.PoolView]:
        raise NotImplementedError

    def _read_block(self, cidr: IPNetwork, *, fresh: bool) -> tuple[Block, int] | None:
        key = str(cidr)
        if not fresh and key in self._blocks:
            return self._blocks[key]
        got = self.store.get_block(cidr)
        if got is None:
            self._blocks.pop(key, None)
        else:
            self._blocks[key] = got
        return got

    def _blocks_containing(self, ip: IPAddress) -> list[tuple[Block, int]]:
        pool = allocator.pool_of(ip, self.pools(fresh=True))
        if pool is not None:
            got = self.store.get_block(allocator.block_for_address(pool, ip))
            if got is not None:
                return [got]
        return [(b, r) for b, r in self.store.list_blocks(ip.version) if ip in b.cidr]

    @staticmethod
    def _block_write(block: Block, revision: int) -> TxnOp:
        if block.is_empty and block.affinity is None:
            return IPAMStore.block_delete(block.cidr, revision)
        return IPAMStore.block_update(block, revision)

    # ---- by handle -----------------------------------------------------------------------------
    def release_by_handle(self, handle_id: str) -> list[str]:
        """Release every address ``handle_id`` holds and delete the handle; returns the addresses.

        The block comes from this client's cache when it has one (the CNI DEL of a pod this agent
        added: one read and one transaction); a stale copy fails its CAS and is re-read.
        """
        released: list[str] = []
        for attempt in range(RETRIES):
            got = self.store.get_handle(handle_id)
            if got is None:
                return released
            handle, hrev = got
            if not handle.blocks:
                try:
                    self.store.kv.delete(handle_key(handle.id), hrev)
                except (Conflict, NotFound):
                    continue
                return released
            cidr = ipaddress.ip_network(next(iter(handle.blocks)))
            try:
                released += self._release_handle_in_block(handle, hrev, cidr, fresh=attempt > 0)
            except Conflict:
                self._blocks.pop(str(cidr), None)
                continue
        raise RetriesExhausted(
            f"releasing handle {handle_id}: lost the compare-and-swap race {RETRIES} times"
        )

    def _release_handle_in_block(
        self, handle: Handle, hrev: int, cidr: IPNetwork, *, fresh: bool
    ) -> list[str]:
        rest = handle.remove(str(cidr), handle.blocks[str(cidr)])
        cur = self._read_block(cidr, fresh=fresh)
        if cur is None:
            self.store.kv.txn([self.store.handle_write(rest, hrev)])
            return []
        block, brev = cur
        ords = block.ordinals_for_handle(handle.id)
        if len(ords) != handle.blocks[str(cidr)] and not fresh:
            # The cached block does not show what the handle says it holds: read it for real.
            return self._release_handle_in_block(handle, hrev, cidr, fresh=True)
        new, _ = block.release(ords)
        r = self.store.kv.txn([self._block_write(new, brev), self.store.handle_write(rest, hrev)])
        self._blocks[str(cidr)] = (new, r)
        return [str(block.address(o)) for o in ords]

    # ---- by address ----------------------------------------------------------------------------
    def release_ips(self, addrs: Iterable[str]) -> list[str]:
        """Release these addresses (free ones are skipped); returns those actually released."""
        by_block: dict[str, tuple[IPNetwork, list[IPAddress]]] = {}
        for a in addrs:
            ip = ipaddress.ip_address(a)
            for block, _ in self._blocks_containing(ip):
                by_block.setdefault(str(block.cidr), (block.cidr, []))[1].append(ip)
        released: list[str] = []
        for cidr, ips in by_block.values():
            released += self._release_in_block(cidr, ips)
        return released

    def _release_in_block(self, cidr: IPNetwork, ips: list[IPAddress]) -> list[str]:
        for _ in range(RETRIES):
            cur = self.store.get_block(cidr)
            if cur is None:
                return []
            block, brev = cur
            ords = [block.ordinal(ip) for ip in ips if block.allocations[block.ordinal(ip)] is not None]
            new, per_handle = block.release(ords)
            if not per_handle:
                return []
            ops = [self._block_write(new, brev)]
            for hid, n in per_handle.items():
                got = self.store.get_handle(hid) if hid else None
                if got is not None:
                    ops.append(self.store.handle_write(got[0].remove(str(cidr), n), got[1]))
            try:
                r = self.store.kv.txn(ops)
            except Conflict:
                continue
            self._blocks[str(cidr)] = (new, r)
            return [str(block.address(o)) for o in ords]
        raise RetriesExhausted(f"releasing in block {cidr}: lost the compare-and-swap race {RETRIES} times")

    def release_if_owned(self, ip: str, handle_id: str) -> bool:
        """Release ``ip`` only while ``handle_id`` still holds it; True when this call released it.

        The owner check and the release are one compare-and-swap on the block, so an address freed
        and handed to another pod since the caller looked is never taken from that pod.
        """
        addr = ipaddress.ip_address(ip)
        for _ in range(RETRIES):
            found = self._blocks_containing(addr)
            if not found:
                return False
            block, brev = found[0]
            attr = block.attribute_of(block.ordinal(addr))
            if attr is None or (attr.handle_id or "") != handle_id:
                return False
            new, per_handle = block.release([block.ordinal(addr)])
            ops = [self._block_write(new, brev)]
            for hid, n in per_handle.items():
                got = self.store.get_handle(hid) if hid else None
                if got is not None:
                    ops.append(self.store.handle_write(got[0].remove(str(block.cidr), n), got[1]))
            try:
                r = self.store.kv.txn(ops)
            except Conflict:
                continue
            self._blocks[str(block.cidr)] = (new, r)
            return True
        raise RetriesExhausted(f"releasing {ip}: lost the compare-and-swap race {RETRIES} times")

    # ---- affinities and nodes ------------------------------------------------------------------
    def release_affinity(self, block_cidr: str, node: str, *, must_be_empty: bool = True) -> None:
        """Drop ``node``'s claim on a block: an empty block is deleted, a non-empty one kept un-owned."""
        cidr = ipaddress.ip_network(block_cidr)
        for _ in range(RETRIES):
            aff = self.store.get_affinity(node, cidr)
            cur = self.store.get_block(cidr)
            ops: list[TxnOp] = []
            if aff is not None:
                ops.append(self.store.affinity_delete(node, cidr, aff.revision))
            if cur is not None and cur[0].affine_node() == node:
                block, brev = cur
                if must_be_empty and not block.is_empty:
                    raise BlockNotEmpty(f"block {cidr} of node {node} still holds {block.in_use} address(es)")
                ops.append(self._block_write(block.with_affinity(None), brev))
            if not ops:
                return
            try:
                self.store.kv.txn(ops)
            except Conflict:
                continue
            self._blocks.pop(str(cidr), None)
            return
        raise RetriesExhausted(
            f"releasing affinity of {cidr}: lost the compare-and-swap race {RETRIES} times"
        )

    def gc_node(self, node: str) -> GCResult:
        """Release what a deleted node held: addresses assigned on it, then its blocks' affinities."""
        try:
            self.backend.get(Node, node)
        except NotFound:
            pass
        else:
            raise NodeStillExists(
                f"node {node!r} still exists; delete the Node before releasing its IPAM state"
            )
        mine = [
            str(b.address(o))
            for b, _ in self.store.list_blocks()
            for o in range(b.size)
            if (a := b.attribute_of(o)) is not None and a.secondary.get("node") == node
        ]
        released = self.release_ips(mine)
        blocks = []
        for aff in self.store.list_affinities(node):
            self.release_affinity(str(aff.cidr), node, must_be_empty=False)
            blocks.append(str(aff.cidr))
        log.info(
            "gc of node %s: released %d address(es), %d block affinit(ies)", node, len(released), len(blocks)
        )
        return GCResult(node, released, blocks)
