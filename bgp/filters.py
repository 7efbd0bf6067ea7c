"""Import and export policy (pure), after Calico's BIRD filters.

Import (``import_reason``): a learned route is refused when it is a default route (unless
configured), loops (our AS in AS_PATH — more often than the session's ``numAllowedLocalASNumbers``
allows, BIRD's ``allow local as`` —, our router ID as ORIGINATOR_ID, our cluster ID in
CLUSTER_LIST), has an AS_PATH longer than ``maxASPathLength`` (64), or lies outside every IP
pool. No peer can take this node's own pods (issue 12): a route is also refused when it covers
a whole IP pool, covers or equals one of this node's affine blocks or a local workload's
address, lies inside one of this node's blocks, or is longer than its pool's block size —
except a host route (/32, /128) of an address the datastore says is borrowed by the node that
announces it (the session's node, the ORIGINATOR_ID's node or the next hop's node). "Our AS" is
the one the session presents (the BGPPeer's ``localASNumber`` when set). A session's BGPFilter
import rules (``bgp.peer_filters``) run after these and can only refuse more. A reason reads
``"<kind>: <detail>"``; the kind alone labels the refusal metric (``reason_kind``).

Export (``local_exports``): this node's confirmed affine blocks and its borrowed /32s,
except inside pools with ``disableBGPExport``; communities from ``prefixAdvertisements``.
Learned routes are forwarded (reflected) only inside exportable pools (``exportable``).

Service IP ranges (``service_cidrs``, ``service_exports``): the ``serviceClusterIPs``,
``serviceExternalIPs`` and ``serviceLoadBalancerIPs`` CIDRs of the ``default`` BGPConfiguration
(Calico ignores them on ``node.<name>``) are originated by every node, next hop self, so the
fabric can spread traffic over all nodes (ECMP), unless the node is labelled
``node.kubernetes.io/exclude-from-external-load-balancers=true``. Communities from
``prefixAdvertisements`` apply to them as to blocks. Every node, excluded or not, refuses to
import anything inside those CIDRs (Calico's ``rejectcidrs``): a node that installed another
node's service range would send service traffic away instead of to its own kube-proxy.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from bgp.route import KEY_CACHE, PathAttrs, Route, key_inside, normalize_prefix, prefix_key
from felixpy.resources.bgp import BGPConfiguration
from felixpy.resources.ippool import IPPool

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_MAX_AS_PATH = 64
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
_BITS = {4: 32, 6: 128}


@dataclass(frozen=True, slots=True)
class PoolInfo:
    cidr: str
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    disable_bgp_export: bool = False
    block_size: int = 0  # 0: the family's default (26, 122)

    @property
    def network(self) -> Network:
        return _net(self.cidr)

    @property
    def block_bits(self) -> int:
        return self.block_size or DEFAULT_BLOCK_SIZE[prefix_key(self.cidr)[0]]

    @classmethod
    def from_resource(cls, pool: IPPool) -> PoolInfo:
        spec = pool.spec
        return cls(spec.cidr, spec.ipip_mode, spec.vxlan_mode, spec.disable_bgp_export, spec.block_size or 0)


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    pools: tuple[PoolInfo, ...]
    own_blocks: frozenset[str] = frozenset()
    import_default: bool = False
    local_as: int = 0
    router_id: str = ""
    cluster_id: str | None = None
    service_cidrs: tuple[str, ...] = ()  # learned routes inside these are refused
    # host prefixes ("10.65.1.5/32") of this node's workloads: nothing covering or equal is learned
    local_workloads: frozenset[str] = frozenset()
    # host prefix of a borrowed address (outside its node's affine blocks) -> the node using it
    borrowed: Mapping[str, str] = field(default_factory=dict, hash=False)
    # node address or router ID -> node name: who announced a route (session, ORIGINATOR_ID, next hop)
    node_addresses: Mapping[str, str] = field(default_factory=dict, hash=False)
    max_as_path: int = DEFAULT_MAX_AS_PATH  # 0: no limit


def reason_kind(reason: str) -> str:
    """The bounded part of a refusal reason (the metric label): the text before ``": "``."""
    return reason.split(": ", 1)[0]


def announcers(
    policy: ImportPolicy, *, peer_node: str | None, originator_id: str | None, next_hop: str | None
) -> frozenset[str]:
    """The nodes a route may have come from: the session's node, the node whose router ID is the
    ORIGINATOR_ID (a reflected route) and the node that is the next hop."""
    names = {peer_node} if peer_node else set()
    for address in (originator_id, next_hop):
        node = policy.node_addresses.get(address) if address else None
        if node:
            names.add(node)
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class _Guard:
    """What protects this node's own pods, as integer prefix keys (built once per policy)."""

    covering: dict[tuple[int, int, int], str]  # every prefix covering or equal to a block/workload
    own: frozenset[tuple[int, int, int]]  # own block keys
    own_lengths: tuple[tuple[int, int], ...]  # (version, length) of own blocks


def _truncate(version: int, value: int, bits: int) -> tuple[int, int, int]:
    shift = _BITS[version] - bits
    return (version, value >> shift << shift, bits)


@functools.lru_cache(maxsize=8)
def _guard(own_blocks: frozenset[str], local_workloads: frozenset[str]) -> _Guard:
    covering: dict[tuple[int, int, int], str] = {}
    for kind, prefixes in (("local workload", local_workloads), ("own block", own_blocks)):
        for prefix in sorted(prefixes):
            version, value, bits = prefix_key(prefix)
            covering[(version, value, bits)] = f"{kind}: {prefix}"
            for length in range(1, bits):
                covering.setdefault(_truncate(version, value, length), f"covers {kind}: {prefix}")
    own = frozenset(prefix_key(b) for b in own_blocks)
    return _Guard(covering, own, tuple(sorted({(v, bits) for v, _, bits in own})))


def _guard_reason(
    prefix: str,
    key: tuple[int, int, int],
    pool: PoolInfo,
    policy: ImportPolicy,
    guard: _Guard,
    who: Collection[str],
) -> str | None:
    """Why a prefix inside ``pool`` is refused to protect this node's pods, or None."""
    version, value, bits = key
    if bits == prefix_key(pool.cidr)[2]:
        return f"covers IP pool: {pool.cidr}"
    hit = guard.covering.get(key)
    if hit is not None:
        return hit
    inside = next(
        (
            t
            for v, length in guard.own_lengths
            if v == version and bits > length and (t := _truncate(version, value, length)) in guard.own
        ),
        None,
    )
    if inside is None and bits <= pool.block_bits:
        return None
    if bits != _BITS[version]:
        where = "inside own block" if inside is not None else "longer than block size"
        return f"{where}: /{bits} in a pool of /{pool.block_bits} blocks"
    owner = policy.borrowed.get(prefix)
    if owner is None:
        where = "inside own block" if inside is not None else "longer than block size"
        return f"{where}: {prefix} is not a borrowed address"
    if owner not in who:
        sender = ", ".join(sorted(who)) or "?"
        return f"borrowed by another node: {prefix} is {owner}'s, announced by {sender}"
    return None


@functools.lru_cache(maxsize=1 << 16)
def _net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


def _inside(prefix: Network, outer: Network) -> bool:
    return prefix.version == outer.version and prefix.subnet_of(outer)  # type: ignore[arg-type]


def pool_for(prefix: str, pools: Iterable[PoolInfo]) -> PoolInfo | None:
    """The most specific pool containing ``prefix``."""
    key = prefix_key(prefix)
    best: PoolInfo | None = None
    best_len = -1
    for pool in pools:
        outer = prefix_key(pool.cidr)
        if outer[2] > best_len and key_inside(key, outer):
            best, best_len = pool, outer[2]
    return best


class PoolIndex:
    """``pool_for`` for many prefixes at once: the pools' integer keys worked out once, most
    specific first, and the containment test inlined (a reflector checks 10,000 prefixes per
    full table; a function call per prefix and pool was most of that time)."""

    def __init__(self, pools: Iterable[PoolInfo]) -> None:
        keyed = [(prefix_key(p.cidr), p) for p in pools]
        keyed.sort(key=lambda kp: -kp[0][2])
        self._pools = [
            (v, bits, (32 if v == 4 else 128) - bits, value >> ((32 if v == 4 else 128) - bits), pool)
            for (v, value, bits), pool in keyed
        ]

    def lookup(self, prefixes: Iterable[str]) -> list[PoolInfo | None]:
        """The most specific pool containing each prefix (None: outside every pool)."""
        pools, keys, key_of = self._pools, KEY_CACHE, prefix_key
        out: list[PoolInfo | None] = []
        append = out.append
        for prefix in prefixes:
            key = keys.get(prefix) or key_of(prefix)
            version, value, bits = key
            for pool_version, pool_bits, shift, pool_top, pool in pools:
                if version == pool_version and bits >= pool_bits and value >> shift == pool_top:
                    append(pool)
                    break
            else:
                append(None)
        return out


@functools.lru_cache(maxsize=64)
def pool_index(pools: tuple[PoolInfo, ...]) -> PoolIndex:
    return PoolIndex(pools)


def prefix_reasons(
    prefixes: list[str], policy: ImportPolicy, *, announcers: Collection[str] = ()
) -> list[str | None]:
    """``prefix_reason(p, policy, canonical=True, announcers=...)`` for each of ``prefixes``
    (canonical text)."""
    plain = _plain_in_pool(prefixes, policy)
    if plain is None:
        return _prefix_reasons(prefixes, policy, announcers)
    if all(plain):
        return [None] * len(prefixes)
    others = [prefix for prefix, ok in zip(prefixes, plain, strict=True) if not ok]
    odd = iter(_prefix_reasons(others, policy, announcers))
    return [None if ok else next(odd) for ok in plain]


def _plain_in_pool(prefixes: list[str], policy: ImportPolicy) -> list[bool] | None:
    """The reflector's common case, checked in one comprehension instead of the general loop:
    a node with no blocks and no pods of its own (nothing to guard), no service ranges, and one
    IPv4 pool. True for a prefix certainly accepted (an IPv4 prefix, its integers known, inside
    that pool, longer than the pool and no longer than its block size); False: ask the general
    loop. None: the case does not apply."""
    if policy.service_cidrs or policy.own_blocks or policy.local_workloads:
        return None
    v4 = [pool for pool in policy.pools if ":" not in pool.cidr]
    if len(v4) != 1:
        return None
    _, value, pool_bits = prefix_key(v4[0].cidr)
    block_bits, shift = v4[0].block_bits, 32 - pool_bits
    top = value >> shift
    return [
        k is not None and k[0] == 4 and pool_bits < k[2] <= block_bits and k[1] >> shift == top
        for k in map(KEY_CACHE.get, prefixes)
    ]


def _prefix_reasons(
    prefixes: list[str], policy: ImportPolicy, announcers: Collection[str]
) -> list[str | None]:
    keys, key_of = KEY_CACHE, prefix_key
    service = [prefix_key(c) for c in policy.service_cidrs]
    guard = _guard(policy.own_blocks, policy.local_workloads)
    reasons: list[str | None] = []
    append = reasons.append
    covering, own = guard.covering, guard.own
    # (version, own block length, shift to its top bits) once; usually one entry, none on a reflector
    shifts = [(v, length, _BITS[v] - length) for v, length in guard.own_lengths]
    tops = {(v, value >> (_BITS[v] - bits), bits) for v, value, bits in own}
    sizes: dict[str, tuple[int, int]] = {}  # pool cidr -> (its length, its block size)
    for prefix, pool in zip(prefixes, pool_index(policy.pools).lookup(prefixes), strict=True):
        key = keys.get(prefix) or key_of(prefix)
        version, value, bits = key
        if bits == 0:
            append(None if policy.import_default else "default route")
        elif service and any(key_inside(key, c) for c in service):
            append("service IP range")
        elif pool is None:
            append(_outside_reason(key, policy))
        else:
            size = sizes.get(pool.cidr)
            if size is None:
                size = sizes[pool.cidr] = (prefix_key(pool.cidr)[2], pool.block_bits)
            plain = bits != size[0] and bits <= size[1] and key not in covering
            for v, n, sh in shifts:
                if plain and v == version and bits > n and (v, value >> sh, n) in tops:
                    plain = False
            # the common case: a block (or aggregate) of another node
            append(None if plain else _guard_reason(prefix, key, pool, policy, guard, announcers))
    return reasons


def _outside_reason(key: tuple[int, int, int], policy: ImportPolicy) -> str:
    covered = next((p.cidr for p in policy.pools if key_inside(prefix_key(p.cidr), key)), None)
    return f"covers IP pool: {covered}" if covered else "outside IP pools"


def import_reason(
    route: Route,
    policy: ImportPolicy,
    *,
    local_as: int | None = None,
    allow_local_as: int = 0,
    max_as_path: int | None = None,
    peer_node: str | None = None,
) -> str | None:
    """Why ``route`` is refused, or None when it is accepted (``local_as``/``allow_local_as``/
    ``max_as_path``: the session's, see ``attrs_reason``; ``peer_node``: the node at the other end
    of the session, if it is one)."""
    loop = attrs_reason(
        route.attrs, policy, local_as=local_as, allow_local_as=allow_local_as, max_as_path=max_as_path
    )
    who = announcers(
        policy, peer_node=peer_node, originator_id=route.attrs.originator_id, next_hop=route.next_hop
    )
    return loop or prefix_reason(route.prefix, policy, announcers=who)


def attrs_reason(
    attrs: PathAttrs,
    policy: ImportPolicy,
    *,
    local_as: int | None = None,
    allow_local_as: int = 0,
    max_as_path: int | None = None,
) -> str | None:
    """The part of ``import_reason`` that depends only on the path attributes (loops, length).

    ``local_as``: the AS the session presents (default ``policy.local_as``); the route loops when it
    appears in AS_PATH more than ``allow_local_as`` times. ``max_as_path``: the session's limit
    (default ``policy.max_as_path``; 0 = none).
    """
    asn = policy.local_as if local_as is None else local_as
    limit = policy.max_as_path if max_as_path is None else max_as_path
    if limit and len(attrs.as_path) > limit:
        return f"AS path too long: {len(attrs.as_path)} > {limit}"
    if asn and asn in attrs.as_path and (not allow_local_as or attrs.as_path.count(asn) > allow_local_as):
        return "AS loop"
    if policy.router_id and attrs.originator_id == policy.router_id:
        return "originator is us"
    if policy.cluster_id and policy.cluster_id in attrs.cluster_list:
        return "cluster loop"
    return None


def prefix_reason(
    prefix: str, policy: ImportPolicy, *, canonical: bool = False, announcers: Collection[str] = ()
) -> str | None:
    """The part of ``import_reason`` that depends on the prefix and who announced it
    (``canonical``: ``prefix`` is already as ``normalize_prefix`` writes it; ``announcers``: the
    nodes it may come from, see ``announcers``)."""
    text = prefix if canonical else normalize_prefix(prefix)
    return prefix_reasons([text], policy, announcers=announcers)[0]


def exportable(prefix: str, pools: Iterable[PoolInfo]) -> bool:
    pool = pool_for(prefix, pools)
    return pool is not None and not pool.disable_bgp_export


def _community_values(
    config: BGPConfiguration | None, prefix: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if config is None:
        return (), ()
    names = {c.name: c.value for c in config.spec.communities}
    net = _net(prefix)
    standard: list[str] = []
    large: list[str] = []
    for adv in config.spec.prefix_advertisements:
        if not _inside(net, _net(adv.cidr)):
            continue
        for item in adv.communities:
            value = names.get(item, item)
            target = large if value.count(":") == 2 else standard
            if value not in target:
                target.append(value)
    return tuple(standard), tuple(large)


def local_exports(
    local_blocks: Iterable[str],
    borrowed: Iterable[str],
    pools: Iterable[PoolInfo],
    *,
    config: BGPConfiguration | None = None,
) -> dict[str, PathAttrs]:
    """Prefixes this node originates, with their attributes (next hop is always self)."""
    pool_list = tuple(pools)
    blocks = [_net(b) for b in local_blocks]
    out: dict[str, PathAttrs] = {}
    candidates = [str(b) for b in blocks]
    candidates += [str(_net(a if "/" in a else f"{a}/{128 if ':' in a else 32}")) for a in borrowed]
    for prefix in candidates:
        pool = pool_for(prefix, pool_list)
        if pool is not None and pool.disable_bgp_export:
            continue
        is_block = _net(prefix) in blocks
        if not is_block and (pool is None or any(_inside(_net(prefix), b) for b in blocks)):
            continue
        standard, large = _community_values(config, prefix)
        out[prefix] = PathAttrs(origin="igp", communities=standard, large_communities=large)
    return out


EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def service_cidrs(config: BGPConfiguration | None) -> tuple[str, ...]:
    """The service IP ranges of ``config`` (the ``default`` BGPConfiguration): cluster, external
    and load balancer CIDRs in that order, each once."""
    if config is None:
        return ()
    spec = config.spec
    blocks = (*spec.service_cluster_i_ps, *spec.service_external_i_ps, *spec.service_load_balancer_i_ps)
    return tuple(dict.fromkeys(str(_net(b.cidr)) for b in blocks))


def service_exports(
    cidrs: Iterable[str],
    pools: Iterable[PoolInfo],
    *,
    config: BGPConfiguration | None = None,
) -> dict[str, PathAttrs]:
    """The service ranges this node originates (next hop self), with ``prefixAdvertisements``
    communities from ``config``; a range inside a pool with ``disableBGPExport`` is not sent."""
    pool_list = tuple(pools)
    out: dict[str, PathAttrs] = {}
    for prefix in cidrs:
        pool = pool_for(prefix, pool_list)
        if pool is not None and pool.disable_bgp_export:
            continue
        standard, large = _community_values(config, prefix)
        out[prefix] = PathAttrs(origin="igp", communities=standard, large_communities=large)
    return out
