"""IPReservations as IPAM sees them: which addresses no allocation may hand out. Pure, no I/O.

Calico's IPReservation (``spec.reservedCIDRs``: addresses or CIDRs, v4 and v6) keeps addresses out
of automatic assignment; addresses already allocated inside a reservation stay allocated (``felixctl
ipam check`` lists them). felixpy applies it on every allocation path: auto-assign skips the
reserved ordinals of a block (they stay in its free list, as in Calico), a block wholly reserved is
never claimed, and an explicit address request for a reserved address is refused (Calico lets an
explicit address through; see docs/architecture.md, Departures).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ipam.block import Block, IPAddress, IPNetwork


@dataclass(frozen=True, slots=True)
class Reserved:
    name: str
    net: IPNetwork


@dataclass(frozen=True, slots=True)
class Reservations:
    """Every reserved network, with the name of the IPReservation that reserves it."""

    items: tuple[Reserved, ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Reservations:
        """From (reservation name, "10.0.0.5" or "10.0.0.0/28") pairs."""
        return cls(tuple(Reserved(name, ipaddress.ip_network(text, strict=False)) for name, text in pairs))

    def __bool__(self) -> bool:
        return bool(self.items)

    def reserving(self, ip: IPAddress | str) -> Reserved | None:
        """The reservation holding ``ip``, or None."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        for r in self.items:
            if r.net.version == addr.version and addr in r.net:
                return r
        return None

    def ordinals(self, block: IPNetwork) -> frozenset[int]:
        """The ordinals of ``block`` that are reserved."""
        out: set[int] = set()
        base = int(block.network_address)
        last = int(block.broadcast_address)
        for r in self.items:
            if r.net.version != block.version or not r.net.overlaps(block):
                continue
            lo = max(base, int(r.net.network_address))
            hi = min(last, int(r.net.broadcast_address))
            out.update(range(lo - base, hi - base + 1))
        return frozenset(out)

    def wholly_reserved(self, block: IPNetwork) -> bool:
        return len(self.ordinals(block)) == block.num_addresses

    def allocated_inside(self, blocks: Iterable[Block]) -> list[tuple[str, str, str | None]]:
        """(address, reservation name, handle) of every allocation inside a reservation."""
        out: list[tuple[str, str, str | None]] = []
        for b in blocks:
            reserved = self.ordinals(b.cidr)
            for o in sorted(reserved):
                attr = b.attribute_of(o)
                if attr is not None:
                    r = self.reserving(b.address(o))
                    out.append((str(b.address(o)), r.name if r else "", attr.handle_id))
        return out
