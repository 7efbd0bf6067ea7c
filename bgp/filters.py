"""Import and export policy (pure), after Calico's BIRD filters.

Import (``import_reason``): a learned route is refused when it is a default route (unless
configured), loops (our AS in AS_PATH — more often than the session's ``numAllowedLocalASNumbers``
allows, BIRD's ``allow local as`` —, our router ID as ORIGINATOR_ID, our cluster ID in
CLUSTER_LIST), is one of this node's own blocks (more specific /32s inside them are other
nodes' borrowed addresses and are kept), or lies outside every IP pool. "Our AS" is the one
the session presents (the BGPPeer's ``localASNumber`` when set). A session's BGPFilter import
rules (``bgp.peer_filters``) run after these and can only refuse more.

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
from collections.abc import Iterable
from dataclasses import dataclass

from bgp.route import KEY_CACHE, PathAttrs, Route, key_inside, normalize_prefix, prefix_key
from felixpy.resources.bgp import BGPConfiguration
from felixpy.resources.ippool import IPPool

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PoolInfo:
    cidr: str
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    disable_bgp_export: bool = False

    @property
    def network(self) -> Network:
        return _net(self.cidr)

    @classmethod
    def from_resource(cls, pool: IPPool) -> PoolInfo:
        spec = pool.spec
        return cls(spec.cidr, spec.ipip_mode, spec.vxlan_mode, spec.disable_bgp_export)


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    pools: tuple[PoolInfo, ...]
    own_blocks: frozenset[str] = frozenset()
    import_default: bool = False
    local_as: int = 0
    router_id: str = ""
    cluster_id: str | None = None
    service_cidrs: tuple[str, ...] = ()  # learned routes inside these are refused


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


def prefix_reasons(prefixes: list[str], policy: ImportPolicy) -> list[str | None]:
    """``prefix_reason(p, policy, canonical=True)`` for each of ``prefixes`` (canonical text)."""
    keys, key_of, own = KEY_CACHE, prefix_key, policy.own_blocks
    service = [prefix_key(c) for c in policy.service_cidrs]
    reasons: list[str | None] = []
    for prefix, pool in zip(prefixes, pool_index(policy.pools).lookup(prefixes), strict=True):
        key = keys.get(prefix) or key_of(prefix)
        if key[2] == 0:
            reasons.append(None if policy.import_default else "default route")
        elif prefix in own:
            reasons.append("own block")
        elif service and any(key_inside(key, c) for c in service):
            reasons.append("service IP range")
        else:
            reasons.append(None if pool is not None else "outside IP pools")
    return reasons


def import_reason(
    route: Route, policy: ImportPolicy, *, local_as: int | None = None, allow_local_as: int = 0
) -> str | None:
    """Why ``route`` is refused, or None when it is accepted (``local_as``/``allow_local_as``: the
    session's, see ``attrs_reason``)."""
    loop = attrs_reason(route.attrs, policy, local_as=local_as, allow_local_as=allow_local_as)
    return loop or prefix_reason(route.prefix, policy)


def attrs_reason(
    attrs: PathAttrs, policy: ImportPolicy, *, local_as: int | None = None, allow_local_as: int = 0
) -> str | None:
    """The part of ``import_reason`` that depends only on the path attributes (loops).

    ``local_as``: the AS the session presents (default ``policy.local_as``); the route loops when it
    appears in AS_PATH more than ``allow_local_as`` times.
    """
    asn = policy.local_as if local_as is None else local_as
    if asn and asn in attrs.as_path and (not allow_local_as or attrs.as_path.count(asn) > allow_local_as):
        return "AS loop"
    if policy.router_id and attrs.originator_id == policy.router_id:
        return "originator is us"
    if policy.cluster_id and policy.cluster_id in attrs.cluster_list:
        return "cluster loop"
    return None


def prefix_reason(prefix: str, policy: ImportPolicy, *, canonical: bool = False) -> str | None:
    """The part of ``import_reason`` that depends only on the prefix (``canonical``: it is
    already as ``normalize_prefix`` writes it)."""
    if prefix_key(prefix)[2] == 0:
        return None if policy.import_default else "default route"
    if (prefix if canonical else normalize_prefix(prefix)) in policy.own_blocks:
        return "own block"
    if policy.service_cidrs:
        key = prefix_key(prefix)
        if any(key_inside(key, prefix_key(c)) for c in policy.service_cidrs):
            return "service IP range"
    if pool_for(prefix, policy.pools) is None:
        return "outside IP pools"
    return None


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
