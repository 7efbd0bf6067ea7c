"""Allocation blocks and handles: pure data, pure transitions, Calico's JSON.

A block is a power-of-two range of a pool (a /26 by default). ``allocations[ordinal]`` is
None when the address is free, else an index into ``attributes`` (who holds it);
``unallocated`` is the FIFO of free ordinals: assignment pops from the head, release
appends to the tail, so a released address is the last to be reused.

Every transition returns a new Block and never mutates its input, so a Block read from
the datastore can be cached and shared, and a lost compare-and-swap costs nothing to undo.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Attribute:
    """Who holds an address: the handle and the owner attributes (``secondary`` on the wire)."""

    handle_id: str | None
    secondary: Mapping[str, str] = field(default_factory=dict)
    released_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.handle_id is not None:
            out["handle_id"] = self.handle_id
        if self.secondary:
            out["secondary"] = dict(self.secondary)
        if self.released_at:
            out["releasedAt"] = self.released_at
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Attribute:
        return cls(d.get("handle_id"), dict(d.get("secondary") or {}), d.get("releasedAt"))


@dataclass(frozen=True, slots=True)
class Block:
    cidr: IPNetwork
    affinity: str | None
    allocations: tuple[int | None, ...]
    unallocated: tuple[int, ...]
    attributes: tuple[Attribute, ...] = ()
    sequence_number: int = 0
    seq_for_allocation: Mapping[str, int] = field(default_factory=dict)
    deleted: bool = False
    affinity_claim_time: str | None = None
    strict_affinity: bool = False

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def new(
        cls, cidr: IPNetwork, *, affinity: str | None, sequence_number: int = 0, claim_time: str | None = None
    ) -> Block:
        n = cidr.num_addresses
        return cls(cidr, affinity, (None,) * n, tuple(range(n)), (), sequence_number, {}, False, claim_time)

    # ---- queries -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.allocations)

    @property
    def free_count(self) -> int:
        return len(self.unallocated)

    @property
    def in_use(self) -> int:
        return self.size - len(self.unallocated)

    @property
    def is_empty(self) -> bool:
        return len(self.unallocated) == self.size

    def affine_node(self) -> str | None:
        if self.affinity and self.affinity.startswith("host:"):
            return self.affinity[5:]
        return None

    def address(self, ordinal: int) -> IPAddress:
        if not 0 <= ordinal < self.size:
            raise ValueError(f"ordinal {ordinal} outside block {self.cidr}")
        return self.cidr.network_address + ordinal

    def ordinal(self, address: IPAddress | str) -> int:
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        if addr.version != self.cidr.version or addr not in self.cidr:
            raise ValueError(f"{addr} is not in block {self.cidr}")
        return int(addr) - int(self.cidr.network_address)

    def attribute_of(self, ordinal: int) -> Attribute | None:
        idx = self.allocations[ordinal]
        return None if idx is None else self.attributes[idx]

    def ordinals_for_handle(self, handle_id: str) -> list[int]:
        wanted = {i for i, a in enumerate(self.attributes) if a.handle_id == handle_id}
        return [o for o, idx in enumerate(self.allocations) if idx in wanted]

    def handle_counts(self) -> dict[str, int]:
        """How many addresses each handle holds here (what the handle records must say)."""
        counts: dict[str, int] = {}
        for idx in self.allocations:
            if idx is not None:
                h = self.attributes[idx].handle_id or ""
                counts[h] = counts.get(h, 0) + 1
        return counts

    # ---- transitions ---------------------------------------------------------------------------
    def assign(
        self,
        n: int,
        handle_id: str | None,
        attrs: Mapping[str, str] | None = None,
        *,
        skip: frozenset[int] = frozenset(),
    ) -> tuple[Block, list[int]]:
        """Take up to ``n`` ordinals from the head of ``unallocated``, passing over those in ``skip``
        (reserved: they stay free, in place); returns (new block, ordinals)."""
        if skip:
            take = [o for o in self.unallocated if o not in skip][: max(n, 0)]
        else:
            take = list(self.unallocated[: max(n, 0)])
        if not take:
            return self, []
        return self._mark(take, handle_id, attrs or {}), take

    def assign_ordinal(
        self, ordinal: int, handle_id: str | None, attrs: Mapping[str, str] | None = None
    ) -> Block:
        """Take one specific ordinal; raises ValueError when it is not free."""
        if self.allocations[ordinal] is not None:
            raise ValueError(f"{self.address(ordinal)} is already assigned")
        return self._mark([ordinal], handle_id, attrs or {})

    def _mark(self, ordinals: list[int], handle_id: str | None, attrs: Mapping[str, str]) -> Block:
        attributes = list(self.attributes)
        wanted = Attribute(handle_id, dict(attrs))
        try:
            idx = attributes.index(wanted)
        except ValueError:
            idx = len(attributes)
            attributes.append(wanted)
        allocations = list(self.allocations)
        seq = self.sequence_number + 1
        seqs = dict(self.seq_for_allocation)
        for o in ordinals:
            allocations[o] = idx
            seqs[str(o)] = seq
        taken = set(ordinals)
        unallocated = tuple(o for o in self.unallocated if o not in taken)
        return replace(
            self,
            allocations=tuple(allocations),
            unallocated=unallocated,
            attributes=tuple(attributes),
            sequence_number=seq,
            seq_for_allocation=seqs,
        )

    def release(self, ordinals: Iterable[int]) -> tuple[Block, dict[str, int]]:
        """Free ``ordinals`` (already-free ones are ignored); returns (new block, released count per handle).

        Freed ordinals go to the tail of ``unallocated`` in the order given; attributes no
        longer referenced are dropped and the indexes renumbered, as Calico does.
        """
        allocations = list(self.allocations)
        released: dict[str, int] = {}
        freed: list[int] = []
        for o in ordinals:
            idx = allocations[o]
            if idx is None:
                continue
            h = self.attributes[idx].handle_id or ""
            released[h] = released.get(h, 0) + 1
            allocations[o] = None
            freed.append(o)
        if not freed:
            return self, {}
        gone = {str(o) for o in freed}
        seqs = {k: v for k, v in self.seq_for_allocation.items() if k not in gone}
        attributes, allocations = _compact(self.attributes, allocations)
        block = replace(
            self,
            allocations=tuple(allocations),
            unallocated=self.unallocated + tuple(freed),
            attributes=attributes,
            sequence_number=self.sequence_number + 1,
            seq_for_allocation=seqs,
        )
        return block, released

    def release_handle(self, handle_id: str) -> tuple[Block, int]:
        block, released = self.release(self.ordinals_for_handle(handle_id))
        return block, released.get(handle_id, 0)

    def with_affinity(self, affinity: str | None) -> Block:
        return replace(self, affinity=affinity, sequence_number=self.sequence_number + 1)

    # ---- wire form -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "strictAffinity": self.strict_affinity,
            "allocations": list(self.allocations),
            "unallocated": list(self.unallocated),
            "attributes": [a.to_json() for a in self.attributes],
            "deleted": self.deleted,
            "sequenceNumber": self.sequence_number,
            "sequenceNumberForAllocation": dict(self.seq_for_allocation),
        }
        if self.affinity_claim_time:
            out["affinityClaimTime"] = self.affinity_claim_time
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Block:
        return cls(
            cidr=ipaddress.ip_network(d["cidr"]),
            affinity=d.get("affinity"),
            allocations=tuple(d.get("allocations") or ()),
            unallocated=tuple(d.get("unallocated") or ()),
            attributes=tuple(Attribute.from_json(a) for a in d.get("attributes") or ()),
            sequence_number=int(d.get("sequenceNumber") or 0),
            seq_for_allocation={
                str(k): int(v) for k, v in (d.get("sequenceNumberForAllocation") or {}).items()
            },
            deleted=bool(d.get("deleted", False)),
            affinity_claim_time=d.get("affinityClaimTime"),
            strict_affinity=bool(d.get("strictAffinity", False)),
        )


def _compact(
    attributes: tuple[Attribute, ...], allocations: list[int | None]
) -> tuple[tuple[Attribute, ...], list[int | None]]:
    used = sorted({i for i in allocations if i is not None})
    if len(used) == len(attributes):
        return attributes, allocations
    renumber = {old: new for new, old in enumerate(used)}
    return (tuple(attributes[i] for i in used), [None if i is None else renumber[i] for i in allocations])


@dataclass(frozen=True, slots=True)
class Handle:
    """The per-handle reference counts: how many addresses ``id`` holds in each block."""

    id: str
    blocks: Mapping[str, int] = field(default_factory=dict)
    deleted: bool = False

    @property
    def total(self) -> int:
        return sum(self.blocks.values())

    def add(self, block_cidr: str, n: int) -> Handle:
        blocks = dict(self.blocks)
        blocks[block_cidr] = blocks.get(block_cidr, 0) + n
        return replace(self, blocks=blocks)

    def remove(self, block_cidr: str, n: int) -> Handle:
        blocks = dict(self.blocks)
        left = blocks.get(block_cidr, 0) - n
        if left > 0:
            blocks[block_cidr] = left
        else:
            blocks.pop(block_cidr, None)
        return replace(self, blocks=blocks)

    def to_json(self) -> dict[str, Any]:
        return {"block": dict(self.blocks), "deleted": self.deleted}

    @classmethod
    def from_json(cls, handle_id: str, d: Mapping[str, Any]) -> Handle:
        return cls(
            handle_id,
            {str(k): int(v) for k, v in (d.get("block") or {}).items()},
            bool(d.get("deleted", False)),
        )
