"""The IPAM client: auto-assign, explicit assign, lookups, tunnel addresses.

Every write follows read → pure compute (ipam.block / ipam.allocator) → one etcd transaction
that carries the block and the handle together (and the affinity, when a block is claimed),
compare-and-swap on each key's mod revision → on Conflict only, re-read and retry, at most
RETRIES times. A block and the handle records can therefore never disagree, and two clients
can never hand out the same address: the second CAS on the block fails.

Blocks read earlier by this client are kept in an optimistic cache (Block objects are
immutable); a write from a stale copy fails its CAS and the block is re-read, so the cache
saves round trips and never correctness. Pools, IPReservations and node labels are cached for
``cache_seconds`` (default 1 s).

IPAMConfiguration (the v3 resource ``default``; else the IPAM config key Calico's tools write;
else Calico's defaults) decides three things: ``strictAffinity`` forbids borrowing from other
nodes' blocks (and an explicit address in another node's block), ``maxBlocksPerHost`` caps the
blocks one node may hold (20 with strict affinity when unset), ``autoAllocateBlocks: false`` stops
auto-assign claiming new blocks. IPReservations are skipped on every path (ipam.reservations).
While ClusterInformation ``default`` says ``datastoreReady: false`` (``felixctl datastore migrate
lock``) no address is handed out (DatastoreLocked), as Calico's IPAM plugin refuses; releases go on.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound
from felixpy.datastore.etcd_outcome import OutcomeUnknown
from felixpy.datastore.kv import KV, TxnOp
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node
from felixpy.resources.stored import ClusterInformation, IPAMConfiguration, IPReservation
from ipam import allocator
from ipam.allocator import IPAMConfig, PoolView
from ipam.block import Block, Handle, IPNetwork
from ipam.errors import (
    AddressInUse,
    AddressNotInPool,
    AddressReserved,
    BlockLimitReached,
    DatastoreLocked,
    HandleExists,
    IPAMError,
    PoolExhausted,
    RetriesExhausted,
)
from ipam.pool_selectors import matches, needs_labels
from ipam.pools import pool_view
from ipam.release import Releaser
from ipam.reservations import Reservations
from ipam.store import IPAMStore

log = logging.getLogger(__name__)

RETRIES = 100
UNKNOWN_RETRIES = 5  # writes of one block whose outcome etcd could not tell, before giving up


@dataclass(frozen=True, slots=True)
class AssignResult:
    """Plain addresses ("10.0.0.5"), and for each the CIDR of the block it came from."""

    v4: list[str]
    v6: list[str]
    blocks: dict[str, str] = field(default_factory=dict)

    def with_block_mask(self, address: str) -> str:
        """ "10.0.0.5/26": the address with its block's prefix length (what Calico IPAM returns)."""
        return f"{address}/{self.blocks[address].split('/')[1]}"


@dataclass(frozen=True, slots=True)
class Assignment:
    address: str
    block: str
    handle_id: str | None
    attrs: dict[str, str]
    affinity: str | None = None


class _HandleState:
    """The handle as this operation last saw it; starts as 'absent' (optimistic create)."""

    def __init__(self, handle_id: str, *, must_be_new: bool = False):
        self.handle = Handle(handle_id)
        self.revision: int | None = None
        self.must_be_new = must_be_new  # a handle found on reload that this operation did not write
        self.written = False  # this operation wrote the handle at least once

    def reload(self, store: IPAMStore) -> None:
        got = store.get_handle(self.handle.id)
        self.handle, self.revision = (Handle(self.handle.id), None) if got is None else got
        if got is not None and self.must_be_new and not self.written:
            raise HandleExists(f"handle {self.handle.id} already exists")


class IPAM(Releaser):
    def __init__(self, kv: KV, backend: Any, *, cache_seconds: float = 1.0):
        super().__init__(IPAMStore(kv))
        self.kv = kv
        self.backend = backend
        self.cache_seconds = cache_seconds
        self._affine: dict[tuple[str, int], list[IPNetwork]] = {}
        self._pool_cache: tuple[float, list[PoolView]] | None = None
        self._reserved_cache: tuple[float, Reservations] | None = None
        self._ready_cache: tuple[float, bool] | None = None
        self._labels: dict[str, tuple[float, dict[str, str]]] = {}

    # ---- pools and nodes -----------------------------------------------------------------------
    def pools(self, *, fresh: bool = False) -> list[PoolView]:
        now = time.monotonic()
        if fresh or self._pool_cache is None or now - self._pool_cache[0] > self.cache_seconds:
            items, _ = self.backend.list(IPPool)
            self._pool_cache = (now, [pool_view(p) for p in items])
        return self._pool_cache[1]

    def reservations(self, *, fresh: bool = False) -> Reservations:
        """Every IPReservation's reservedCIDRs (cached like the pools)."""
        now = time.monotonic()
        hit = self._reserved_cache
        if fresh or hit is None or now - hit[0] > self.cache_seconds:
            items, _ = self.backend.list(IPReservation)
            pairs = [(r.metadata.name, str(c)) for r in items for c in r.spec.reserved_cidrs]
            hit = self._reserved_cache = (now, Reservations.of(pairs))
        return hit[1]

    def check_ready(self, *, fresh: bool = False) -> None:
        """Raise DatastoreLocked while ClusterInformation ``default`` has ``datastoreReady: false``."""
        now = time.monotonic()
        hit = self._ready_cache
        if fresh or hit is None or now - hit[0] > self.cache_seconds:
            try:
                info = self.backend.get(ClusterInformation, "default")
                ready = info.spec.datastore_ready is not False
            except NotFound:
                ready = True
            hit = self._ready_cache = (now, ready)
        if not hit[1]:
            raise DatastoreLocked(
                "the datastore is locked (ClusterInformation default datastoreReady: false, e.g. during "
                "`felixctl datastore migrate`): no address is assigned until it is unlocked"
            )

    def _node_labels(self, node: str) -> dict[str, str]:
        now = time.monotonic()
        hit = self._labels.get(node)
        if hit is None or now - hit[0] > self.cache_seconds:
            try:
                labels = dict(self.backend.get(Node, node).metadata.labels)
            except NotFound:
                labels = {}
            hit = self._labels[node] = (now, labels)
        return hit[1]

    def _usable(self, version: int, node: str, use: str, requested: Sequence[str] | None) -> list[PoolView]:
        pools = self.pools()
        labels = self._node_labels(node) if any(needs_labels(p.node_selector) for p in pools) else {}
        return allocator.usable_pools(
            pools, version=version, node_labels=labels, intended_use=use, requested=requested, matcher=matches
        )

    # ---- auto-assign ---------------------------------------------------------------------------
    def auto_assign(
        self,
        handle_id: str,
        *,
        node: str,
        num_v4: int = 1,
        num_v6: int = 0,
        attrs: Mapping[str, str] | None = None,
        pools: Sequence[str] | None = None,
        intended_use: str = "Workload",
        new_handle: bool = False,
    ) -> AssignResult:
        """Assign ``num_v4`` + ``num_v6`` addresses to ``handle_id`` for a workload on ``node``.

        ``new_handle``: the caller expects no handle ``handle_id`` yet and has not read it (the
        handle is created in the block's transaction anyway); if one exists, HandleExists is
        raised with nothing assigned, so the caller reads what it holds (a repeated CNI ADD)
        without paying that read on every fresh one.

        ``pools``: pool names or CIDRs to restrict to (both versions). All or nothing: if any
        address cannot be found, what was taken is released and PoolExhausted/NoUsablePool raised.
        """
        self.check_ready()
        got: list[tuple[str, str]] = []
        try:
            for version, n in ((4, num_v4), (6, num_v6)):
                if n > 0:
                    got += self._assign_version(
                        handle_id,
                        must_be_new=new_handle and not got,
                        node=node,
                        n=n,
                        version=version,
                        attrs=dict(attrs or {}),
                        requested=pools,
                        use=intended_use,
                    )
        except BaseException:
            self._undo(handle_id, got)
            raise
        return AssignResult([a for a, _ in got if ":" not in a], [a for a, _ in got if ":" in a], dict(got))

    def _assign_version(
        self,
        handle_id: str,
        *,
        must_be_new: bool = False,
        node: str,
        n: int,
        version: int,
        attrs: dict[str, str],
        requested: Sequence[str] | None,
        use: str,
    ) -> list[tuple[str, str]]:
        usable = self._usable(version, node, use, requested)
        hs = _HandleState(handle_id, must_be_new=must_be_new)
        got: list[tuple[str, str]] = []
        try:
            for fresh in (False, True):
                got += self._from_affine(hs, node, n - len(got), usable, attrs, fresh=fresh)
                if len(got) >= n:
                    return got
            config = self.config()
            got += self._from_new_blocks(hs, node, n - len(got), usable, attrs, config)
            if len(got) < n and not config.strict_affinity:
                got += self._from_borrowed(hs, node, n - len(got), usable, attrs)
        except BaseException:
            self._undo(handle_id, got)
            raise
        if len(got) < n:
            self._undo(handle_id, got)
            strict = " (strictAffinity forbids borrowing)" if config.strict_affinity else ""
            raise PoolExhausted(
                f"no free IPv{version} address for node {node!r} in pool(s) "
                f"{allocator.summarize_free(usable)}{strict}: needed {n}, found {len(got)}"
            )
        return got

    def _undo(self, handle_id: str, got: list[tuple[str, str]]) -> None:
        if got:
            log.info("releasing %d partial allocation(s) of %s", len(got), handle_id)
            self.release_ips([a for a, _ in got])

    def _affine_cidrs(self, node: str, version: int, *, fresh: bool) -> list[IPNetwork]:
        key = (node, version)
        if fresh or key not in self._affine:
            affs = self.store.list_affinities(node, version)
            self._affine[key] = [a.cidr for a in affs if a.state == "confirmed"]
        return self._affine[key]

    def _from_affine(
        self,
        hs: _HandleState,
        node: str,
        need: int,
        pools: list[PoolView],
        attrs: dict[str, str],
        *,
        fresh: bool,
    ) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        for cidr in self._affine_cidrs(node, pools[0].version, fresh=fresh):
            if len(got) >= need:
                break
            if allocator.in_pools(cidr, pools):
                got += self._take(cidr, need - len(got), hs, attrs, owner=node, fresh=fresh)
        return got

    def _from_new_blocks(
        self,
        hs: _HandleState,
        node: str,
        need: int,
        pools: list[PoolView],
        attrs: dict[str, str],
        config: IPAMConfig,
    ) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        while config.auto_allocate_blocks and len(got) < need:
            limit = config.block_limit
            if limit is not None and len(self._affine_cidrs(node, pools[0].version, fresh=True)) >= limit:
                log.info("node %s holds %d block(s), its maxBlocksPerHost: claims no more", node, limit)
                break
            cidr = self._claim(node, pools)
            if cidr is None:
                break
            got += self._take(cidr, need - len(got), hs, attrs, owner=node, fresh=False)
        return got

    def _from_borrowed(
        self, hs: _HandleState, node: str, need: int, pools: list[PoolView], attrs: dict[str, str]
    ) -> list[tuple[str, str]]:
        listed = self.store.list_blocks(pools[0].version)
        for b, rev in listed:
            self._blocks[str(b.cidr)] = (b, rev)
        got: list[tuple[str, str]] = []
        for block in allocator.borrow_order([b for b, _ in listed], node, pools):
            if len(got) >= need:
                break
            got += self._take(block.cidr, need - len(got), hs, attrs, owner=None, fresh=False)
        if got:
            log.info("node %s borrowed %d address(es) from other nodes' blocks", node, len(got))
        return got

    def _take(
        self,
        cidr: IPNetwork,
        k: int,
        hs: _HandleState,
        attrs: dict[str, str],
        *,
        owner: str | None,
        fresh: bool,
    ) -> list[tuple[str, str]]:
        """CAS loop: take up to ``k`` addresses of one block for ``hs``'s handle."""
        key = str(cidr)
        unknown = 0
        for attempt in range(RETRIES):
            cur = self._read_block(cidr, fresh=fresh or attempt > 0)
            if cur is None:
                return []
            block, rev = cur
            if block.deleted or not block.free_count or (owner is not None and block.affine_node() != owner):
                return []
            new, ords = block.assign(k, hs.handle.id, attrs, skip=self.reservations().ordinals(cidr))
            if not ords:  # every free address here is reserved
                return []
            handle = hs.handle.add(key, len(ords))
            try:
                r = self.kv.txn(
                    [self.store.block_update(new, rev), self.store.handle_write(handle, hs.revision)]
                )
            except Conflict:
                self._blocks.pop(key, None)
                hs.reload(self.store)
                continue
            except OutcomeUnknown as err:
                # The answer was lost and etcd's history could not tell: read the block and handle
                # back (linearizable reads, made after the write's fate was sealed) to learn it.
                unknown += 1
                self._blocks.pop(key, None)
                hs.reload(self.store)
                if self._landed(cidr, hs.handle.id, ords):
                    log.warning("block %s: lost answer resolved by reading back: the write landed", cidr)
                    return [(str(new.address(o)), key) for o in ords]
                log.warning("block %s: lost answer resolved by reading back: not written (%s)", cidr, err)
                if unknown >= UNKNOWN_RETRIES:
                    raise
                continue
            self._blocks[key] = (new, r)
            hs.handle, hs.revision, hs.written = handle, r, True
            return [(str(new.address(o)), key) for o in ords]
        raise RetriesExhausted(f"block {cidr}: lost the compare-and-swap race {RETRIES} times")

    def _landed(self, cidr: IPNetwork, handle_id: str, ords: Sequence[int]) -> bool:
        """Whether a write of ``ords`` to ``handle_id`` applied: the block, read now, holds each of them
        for that handle (block and handle change in one transaction, and handle IDs are per workload)."""
        cur = self._read_block(cidr, fresh=True)
        if cur is None:
            return False
        held = cur[0]
        return all((a := held.attribute_of(o)) is not None and a.handle_id == handle_id for o in ords)

    def _claim(self, node: str, pools: list[PoolView]) -> IPNetwork | None:
        """Claim a free block for ``node``: block and affinity created in one transaction."""
        existing = self.store.block_cidrs(pools[0].version)
        reserved = self.reservations()
        for pool in pools:
            for cidr in allocator.candidate_blocks(pool, node):
                if str(cidr) in existing or (reserved and reserved.wholly_reserved(cidr)):
                    continue
                block = Block.new(
                    cidr,
                    affinity=f"host:{node}",
                    sequence_number=time.time_ns(),
                    claim_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                ops = [self.store.block_create(block), self.store.affinity_create(node, cidr)]
                try:
                    r = self.kv.txn(ops)
                except Conflict:
                    existing.add(str(cidr))
                    if self._repair_claim(node, block):
                        return cidr
                    continue
                except OutcomeUnknown as err:
                    existing.add(str(cidr))
                    if self._claimed(node, cidr):  # read back: ours (or this node's all the same)
                        log.warning("node %s: lost answer of the claim of %s: it landed", node, cidr)
                        self._affine.pop((node, cidr.version), None)
                        return cidr
                    log.warning("node %s: lost answer of the claim of %s: not written (%s)", node, cidr, err)
                    continue
                log.info("node %s claimed block %s of pool %s", node, cidr, pool.name)
                self._blocks[str(cidr)] = (block, r)
                self._affine.setdefault((node, cidr.version), []).append(cidr)
                return cidr
        return None

    def _claimed(self, node: str, cidr: IPNetwork) -> bool:
        cur = self._read_block(cidr, fresh=True)
        return (
            cur is not None
            and cur[0].affine_node() == node
            and self.store.get_affinity(node, cidr) is not None
        )

    def _repair_claim(self, node: str, block: Block) -> bool:
        """An affinity left without its block (an older, non-atomic writer crashed): recreate the block."""
        aff = self.store.get_affinity(node, block.cidr)
        if aff is None or self.store.get_block(block.cidr) is not None:
            return False
        try:
            self.kv.txn(
                [self.store.block_create(block), self.store.affinity_update(node, block.cidr, aff.revision)]
            )
        except Conflict:
            return False
        return True

    # ---- explicit assign -----------------------------------------------------------------------
    def assign_ip(
        self, addr: str, handle_id: str, attrs: Mapping[str, str] | None = None, *, node: str
    ) -> str:
        """Assign exactly ``addr``; returns its block CIDR. Claims the block for ``node`` if unclaimed."""
        ip = ipaddress.ip_address(addr)
        self.check_ready()
        pool = allocator.pool_of(ip, self.pools(fresh=True))
        if pool is None:
            raise AddressNotInPool(f"{addr} is not in any IP pool")
        held_by = self.reservations(fresh=True).reserving(ip)
        if held_by is not None:
            raise AddressReserved(f"{addr} is reserved by IPReservation {held_by.name!r} ({held_by.net})")
        cidr = allocator.block_for_address(pool, ip)
        config = self.config()
        hs = _HandleState(handle_id)
        hs.reload(self.store)
        for _ in range(RETRIES):
            ops = self._assign_ip_ops(ip, cidr, hs, dict(attrs or {}), node=node, config=config)
            try:
                self.kv.txn(ops)
            except Conflict:
                hs.reload(self.store)
                continue
            self._blocks.pop(str(cidr), None)
            return str(cidr)
        raise RetriesExhausted(f"assigning {addr}: lost the compare-and-swap race {RETRIES} times")

    def _assign_ip_ops(
        self,
        ip: Any,
        cidr: IPNetwork,
        hs: _HandleState,
        attrs: dict[str, str],
        *,
        node: str,
        config: IPAMConfig,
    ) -> list[TxnOp]:
        strict = config.strict_affinity
        handle_op = self.store.handle_write(hs.handle.add(str(cidr), 1), hs.revision)
        cur = self.store.get_block(cidr)
        if cur is None:
            limit = config.block_limit
            if limit is not None and len(self._affine_cidrs(node, cidr.version, fresh=True)) >= limit:
                raise BlockLimitReached(
                    f"{ip} needs a new block {cidr} for node {node!r}, which already holds {limit} block(s) "
                    f"(IPAMConfiguration maxBlocksPerHost)"
                )
            block = Block.new(cidr, affinity=f"host:{node}", sequence_number=time.time_ns())
            new = block.assign_ordinal(block.ordinal(ip), handle_id=hs.handle.id, attrs=attrs)
            return [self.store.block_create(new), self.store.affinity_create(node, cidr), handle_op]
        block, rev = cur
        if strict and block.affine_node() != node:
            raise IPAMError(f"{ip} is in block {cidr} owned by {block.affinity}; strictAffinity forbids it")
        held = block.attribute_of(block.ordinal(ip))
        if held is not None:
            raise AddressInUse(f"{ip} is already assigned (handle {held.handle_id})")
        new = block.assign_ordinal(block.ordinal(ip), hs.handle.id, attrs)
        return [self.store.block_update(new, rev), handle_op]

    # ---- lookups -------------------------------------------------------------------------------
    def get_assignment(self, addr: str) -> Assignment | None:
        ip = ipaddress.ip_address(addr)
        for block, _ in self._blocks_containing(ip):
            attr = block.attribute_of(block.ordinal(ip))
            if attr is not None:
                return Assignment(
                    str(ip), str(block.cidr), attr.handle_id, dict(attr.secondary), block.affinity
                )
        return None

    def assignments_for_handle(self, handle_id: str) -> list[str]:
        """Every address ``handle_id`` holds (v4 first), read from the blocks its handle names."""
        got = self.store.get_handle(handle_id)
        if got is None:
            return []
        out: list[str] = []
        for cidr in got[0].blocks:
            cur = self.store.get_block(ipaddress.ip_network(cidr))
            if cur is not None:
                out += [str(cur[0].address(o)) for o in cur[0].ordinals_for_handle(handle_id)]
        return sorted(out, key=lambda a: (":" in a, ipaddress.ip_address(a).packed))

    def affine_blocks(self, node: str) -> list[str]:
        return [str(a.cidr) for a in self.store.list_affinities(node) if a.state == "confirmed"]

    def config(self) -> IPAMConfig:
        """The IPAMConfiguration resource ``default``, else the IPAM config key, else Calico's defaults."""
        try:
            res = self.backend.get(IPAMConfiguration, "default")
        except NotFound:
            return self.store.get_config()
        s = res.spec
        return IPAMConfig(s.strict_affinity, s.auto_allocate_blocks, s.max_blocks_per_host)

    def set_config(
        self, *, strict_affinity: bool | None = None, max_blocks_per_host: int | None = None
    ) -> IPAMConfig:
        """Change the IPAMConfiguration ``default`` (created if absent; compare-and-swap), validated as
        a resource, and mirror it into the IPAM config key. Returns what is now in force."""
        for _ in range(RETRIES):
            try:
                cur = self.backend.get(IPAMConfiguration, "default")
                doc = cur.to_dict()
            except NotFound:
                cur = None
                old = self.store.get_config()
                doc = {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "IPAMConfiguration",
                    "metadata": {"name": "default"},
                    "spec": {
                        "strictAffinity": old.strict_affinity,
                        "autoAllocateBlocks": old.auto_allocate_blocks,
                        "maxBlocksPerHost": old.max_blocks_per_host,
                    },
                }
            spec = doc.setdefault("spec", {})
            if strict_affinity is not None:
                spec["strictAffinity"] = strict_affinity
            if max_blocks_per_host is not None:
                spec["maxBlocksPerHost"] = max_blocks_per_host
            # here, not at import: the parser's module loads PyYAML, which the agent needs nowhere else
            from felixpy.resources.parse import parse_document

            new = parse_document(doc)
            assert isinstance(new, IPAMConfiguration)
            try:
                if cur is None:
                    self.backend.create(new)
                else:
                    self.backend.update(new)
            except (Conflict, AlreadyExists):
                continue
            s = new.spec
            config = IPAMConfig(s.strict_affinity, s.auto_allocate_blocks, s.max_blocks_per_host)
            self.store.set_config(config)
            log.info("IPAM configuration now %s", config.to_json())
            return config
        raise RetriesExhausted(f"IPAMConfiguration default: lost the compare-and-swap race {RETRIES} times")

    def pool_usage(self, pool_cidr: str) -> tuple[int, int]:
        """(addresses in use, blocks) inside ``pool_cidr``: what the pool checks need."""
        net = ipaddress.ip_network(pool_cidr, strict=False)
        inside = [b for b, _ in self.store.list_blocks(net.version) if b.cidr.subnet_of(net)]  # type: ignore[arg-type]
        return sum(b.in_use for b in inside), len(inside)
