"""Plain route data shared by the pure BGP modules (RIB, best path, reflection, filters, API).

A ``Route`` is one path for one prefix as learned from one peer (or originated locally,
``peer == ""``). It is frozen so it can be stored, compared and diffed freely.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}


@dataclass(frozen=True, slots=True)
class PathAttrs:
    origin: str = "igp"
    as_path: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "a:b" or well-known names
    large_communities: tuple[str, ...] = ()  # "a:b:c"
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    # Not a BGP attribute, never sent: the kernel metric an import rule's ``setPriority`` chose for
    # this path (BIRD's ``krt_metric``); None = the default (``bgp.rtnl.BGP_METRIC``).
    priority: int | None = field(default=None, repr=False)  # repr: what was received, as before


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What best path and reflection need to know about the peer a route came from / goes to."""

    address: str
    router_id: str = ""
    peer_as: int = 0
    local_as: int = 0
    rr_client: bool = False

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as


@dataclass(slots=True, unsafe_hash=True)
class Route:
    """One path to a prefix. Immutable by convention (``dataclasses.replace`` for a changed
    copy) but not ``frozen``: a frozen dataclass's ``__init__`` costs 2.5x, and a reflector
    creates 10,000 of these per full table (bench/bench_bgp.py reflect)."""

    prefix: str
    next_hop: str
    attrs: PathAttrs = field(default_factory=PathAttrs)
    source: PeerInfo = field(default_factory=lambda: PeerInfo(address=""))
    stale: bool = False

    @property
    def family(self) -> str:
        return family_of(self.prefix)

    def with_attrs(self, **changes: object) -> Route:
        return replace(self, attrs=replace(self.attrs, **changes))  # type: ignore[arg-type]


def family_of(prefix_or_addr: str) -> str:
    """'ipv4 unicast' or 'ipv6 unicast' for a prefix or an address."""
    return "ipv6 unicast" if ":" in prefix_or_addr else "ipv4 unicast"


PrefixKey = tuple[int, int, int]  # (IP version, network as an integer, prefix length)


def _v4_key(prefix: str) -> PrefixKey | None:
    """Fast path for canonical-looking IPv4 text ("10.65.1.0/26"); None = ask ``ipaddress``."""
    address, _, length = prefix.partition("/")
    parts = address.split(".")
    if len(parts) != 4 or not length.isdigit():
        return None
    try:
        octets, bits = [int(p) for p in parts], int(length)
    except ValueError:
        return None
    if max(octets) > 255 or min(octets) < 0 or bits > 32 or ".".join(map(str, octets)) != address:
        return None
    value = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
    return (4, value & (((1 << bits) - 1) << (32 - bits)), bits)


_KEYS: dict[str, PrefixKey] = {}
_KEYS_MAX = 1 << 16  # as the lru_cache it replaced
# for hot loops: ``KEY_CACHE.get(p) or prefix_key(p)``; writers keep it under KEY_CACHE_MAX
KEY_CACHE: dict[str, PrefixKey] = _KEYS
KEY_CACHE_MAX = _KEYS_MAX


def prefix_key(prefix: str) -> PrefixKey:
    """A prefix (host bits cleared, as ``strict=False``) as integers, for containment tests."""
    key = _KEYS.get(prefix)
    if key is not None:
        return key
    key = _v4_key(prefix)
    if key is None:
        net = ipaddress.ip_network(prefix, strict=False)
        key = (net.version, int(net.network_address), net.prefixlen)
    seed_prefix_key(prefix, key)
    return key


def seed_prefix_key(prefix: str, key: PrefixKey) -> None:
    """Remember ``prefix_key(prefix)`` computed elsewhere (the wire decoder has the integers)."""
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[prefix] = key


def key_inside(inner: PrefixKey, outer: PrefixKey) -> bool:
    version, value, length = inner
    if version != outer[0] or length < outer[2]:
        return False
    shift = (32 if version == 4 else 128) - outer[2]
    return value >> shift == outer[1] >> shift


@functools.lru_cache(maxsize=1 << 16)
def normalize_prefix(prefix: str) -> str:
    version, value, bits = prefix_key(prefix)
    if version != 4:
        return str(ipaddress.ip_network(prefix, strict=False))
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}/{bits}"


def router_id_key(router_id: str) -> int:
    """Router IDs compare as 32-bit unsigned integers (RFC 4271 9.1.2.2 f)."""
    try:
        return int(ipaddress.IPv4Address(router_id))
    except ValueError:
        return 0


def address_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


def borrowed_addresses(
    workloads: Iterable[tuple[str, str]], all_blocks: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Host prefix -> node, for every workload address outside its node's affine blocks."""
    by_node = blocks_by_node(all_blocks)
    out: dict[str, str] = {}
    for owner, address in workloads:
        host = borrowed_host(owner, address, by_node)
        if host is not None:
            out[host] = owner
    return out


def blocks_by_node(all_blocks: Iterable[tuple[str, str]]) -> dict[str, list[PrefixKey]]:
    by_node: dict[str, list[PrefixKey]] = {}
    for block, owner in all_blocks:
        by_node.setdefault(owner, []).append(prefix_key(block))
    return by_node


def borrowed_host(owner: str, address: str, by_node: dict[str, list[PrefixKey]]) -> str | None:
    """The host prefix of ``address`` when it is outside every block of ``owner``, else None."""
    host = normalize_prefix(address if "/" in address else f"{address}/{128 if ':' in address else 32}")
    key = prefix_key(host)
    if any(key_inside(key, block) for block in by_node.get(owner, ())):
        return None
    return host
