"""Peer topology: which BGP sessions this node runs (pure).

Calico's expansion rules (confd ``updatePeersV1`` / ``bird.cfg`` template):
* full mesh of every node with an address of the family, minus self and route reflectors
  (nodes with ``routeReflectorClusterID``), unless ``nodeToNodeMeshEnabled`` is false or
  this node is itself a reflector;
* BGPPeers: global (no ``node``/``nodeSelector``), node specific (``node`` or a matching
  ``nodeSelector``); remote side ``peerIP`` or every node matched by ``peerSelector``, with
  the automatic reverse session on the nodes the peerSelector matched;
* one side only opens a session between two nodes, exactly as Calico's bird.cfg template decides
  it: a node is passive towards a peer whose address is higher in *text* order ("peer will connect
  to us"), so the higher address connects. Comparing text, not numbers, matters for a mesh mixing
  felixpy and Calico nodes: any other rule would leave some pairs passive on both sides;
* this node is a route reflector and the peer has the same AS and another (or no) cluster
  ID → the peer is a route-reflector client;
* a BGPPeer's session options apply to every session it makes, reverse ones included:
  ``localASNumber`` (the AS this node presents instead of its own, which also decides eBGP or
  iBGP; on the reverse session it is the AS the other node presents), ``numAllowedLocalASNumbers``,
  ``ttlSecurity`` and ``filters`` (compiled by ``bgp.peer_filters``; unknown names are skipped);
* receive limits (felixpy, issue 12): a BGPPeer's ``maxPrefixes``/``maxPrefixesAction``; unset,
  a session whose other end is a node (mesh, reflector, client, peerSelector) takes the
  BGPConfiguration's ``nodePeerMaxPrefixes`` (10,000) and ``nodePeerMaxPrefixesAction``
  (Restart), any other peer has none; ``maxASPathLength`` of the BGPPeer, else of the
  BGPConfiguration (applied by the import policy).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bgp import bfd_config
from bgp.bfd_config import BfdSpec
from bgp.peer_filters import PeerFilter, compile_filter
from bgp.peer_selectors import compile_selector
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPassword, BGPPeer
from felixpy.resources.node import Node

DEFAULT_AS = 64512
DEFAULT_PORT = 179
DEFAULT_RESTART_TIME = 120
DEFAULT_NODE_MAX_PREFIXES = 10_000
DEFAULT_MAX_PREFIXES_ACTION = "Restart"
PEER_TYPES = ("node-to-node mesh", "global", "node specific")

SecretResolver = Callable[[str, str], str | None]


@dataclass(frozen=True, slots=True)
class PeerSpec:
    address: str
    port: int
    peer_as: int
    local_as: int
    local_address: str | None
    router_id: str
    type: str
    passive: bool = False
    rr_client: bool = False
    rr_cluster_id: str | None = None  # ours, when we reflect to this client
    md5: str | None = None
    graceful_restart_time: int = DEFAULT_RESTART_TIME
    families: tuple[str, ...] = ("ipv4 unicast",)
    name: str = ""
    keep_original_next_hop: bool = False
    peer_node: str | None = None  # the Calico node behind this address, if any
    allow_local_as: int = 0  # times our AS may appear in a received AS_PATH (numAllowedLocalASNumbers)
    ttl_security: int = 0  # GTSM: the peer is at most this many hops away; 0 = off
    route_filter: PeerFilter | None = None  # the BGPPeer's BGPFilters, compiled
    max_prefixes: int = 0  # receive limit (0: none)
    max_prefixes_action: str = DEFAULT_MAX_PREFIXES_ACTION  # Warn | Block | Restart | Disable
    max_as_path: int | None = None  # None: the import policy's (BGPConfiguration maxASPathLength)
    bfd: BfdSpec | None = None  # BFD on this session (bgp.bfd_config)

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as


@dataclass(frozen=True, slots=True)
class _NodeView:
    name: str
    labels: dict[str, str]
    v4: str | None
    v6: str | None
    asn: int
    cluster_id: str | None
    port: int

    def address(self, version: int) -> str | None:
        return self.v4 if version == 4 else self.v6


@dataclass(frozen=True, slots=True)
class _Ctx:
    me: _NodeView
    nodes: dict[str, _NodeView]
    by_ip: dict[str, _NodeView]
    router_id: str
    resolve_secret: SecretResolver | None
    filters: dict[str, BGPFilter]
    node_limit: tuple[int, str] = (DEFAULT_NODE_MAX_PREFIXES, DEFAULT_MAX_PREFIXES_ACTION)
    default_cfg: BGPConfiguration | None = None


def parse_asn(value: str | int | None, default: int | None = None) -> int | None:
    """Plain or asdot ("1.10" → 65546) AS numbers."""
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    if "." in value:
        high, low = value.split(".", 1)
        return (int(high) << 16) + int(low)
    return int(value)


def parse_duration(text: str | None, default: int) -> int:
    """Go duration ("120s", "2m", "1h30m") → whole seconds."""
    if not text:
        return default
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return int(total) or default


def split_peer_ip(text: str) -> tuple[str, int | None]:
    """ "ip", "ip:port" or "[v6]:port" → (ip, port or None)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host.rstrip("]"), int(port) if port else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


def peer_name(kind: str, address: str, port: int | None = None) -> str:
    base = {"node-to-node mesh": "Mesh", "global": "Global"}.get(kind, "Node")
    name = f"{base}_{re.sub(r'[.:]', '_', address)}"
    return f"{name}_port_{port}" if port and port != DEFAULT_PORT else name


def hashed_router_id(node_name: str) -> str:
    digest = hashlib.sha256(node_name.encode()).digest()
    return str(ipaddress.IPv4Address(digest[:4]))


def _ip(cidr: str | None) -> str | None:
    return str(ipaddress.ip_interface(cidr).ip) if cidr else None


def _configs(configs: Iterable[BGPConfiguration], node: str) -> tuple[BGPConfiguration | None, ...]:
    by_name = {c.metadata.name: c for c in configs}
    return by_name.get(f"node.{node}"), by_name.get("default")


def _node_port(configs: Iterable[BGPConfiguration], node: str) -> int:
    for cfg in _configs(configs, node):
        if cfg is not None and cfg.spec.listen_port:
            return cfg.spec.listen_port
    return DEFAULT_PORT


def _views(nodes: Iterable[Node], configs: list[BGPConfiguration], global_as: int) -> dict[str, _NodeView]:
    views: dict[str, _NodeView] = {}
    for node in nodes:
        bgp = node.spec.bgp
        if bgp is None:
            continue
        views[node.metadata.name] = _NodeView(
            name=node.metadata.name,
            labels=dict(node.metadata.labels),
            v4=_ip(bgp.ipv4_address),
            v6=_ip(bgp.ipv6_address),
            asn=parse_asn(bgp.as_number, global_as) or global_as,
            cluster_id=bgp.route_reflector_cluster_id or None,
            port=_node_port(configs, node.metadata.name),
        )
    return views


def _password(ctx: _Ctx, password: BGPPassword | None) -> str | None:
    if password is None:
        return None
    if password.value is not None:
        return password.value
    ref = password.secret_key_ref
    if ref is not None and ctx.resolve_secret is not None:
        return ctx.resolve_secret(ref.name, ref.key)
    return None


def _session(
    ctx: _Ctx,
    remote: str,
    *,
    asn: int,
    port: int | None,
    kind: str,
    local_as: int | None = None,
    **extra: object,
) -> PeerSpec:
    me = ctx.me
    local_as = local_as or me.asn
    version = ipaddress.ip_address(remote).version
    peer_node = ctx.by_ip.get(remote)
    rr_client = (
        bool(me.cluster_id)
        and asn == local_as
        and (peer_node is None or peer_node.cluster_id != me.cluster_id)
    )
    port = port or (peer_node.port if peer_node else DEFAULT_PORT)
    local = me.address(version)
    limit, action = extra.pop("max_prefixes", None), extra.pop("max_prefixes_action", None)
    request: Any = extra.pop("bfd_request", (None, None))  # the BGPPeer's (failureDetectionMode, bfd)
    extra["bfd"] = bfd_config.resolve(*request, node=peer_node is not None, config=ctx.default_cfg)
    if limit is None:  # the BGPPeer sets none: the node default for nodes, else no limit
        limit, default_action = ctx.node_limit if peer_node is not None else (0, DEFAULT_MAX_PREFIXES_ACTION)
        action = action or default_action
    return PeerSpec(
        address=remote,
        port=port,
        peer_as=asn,
        local_as=local_as,
        local_address=local,
        router_id=ctx.router_id,
        type=kind,
        passive=peer_node is not None and local is not None and remote > local,
        rr_client=rr_client,
        rr_cluster_id=me.cluster_id if rr_client else None,
        families=("ipv6 unicast",) if version == 6 else ("ipv4 unicast",),
        name=peer_name(kind, remote, port if port != DEFAULT_PORT else None),
        peer_node=peer_node.name if peer_node else None,
        max_prefixes=int(limit),  # type: ignore[call-overload]
        max_prefixes_action=str(action or DEFAULT_MAX_PREFIXES_ACTION),
        **extra,  # type: ignore[arg-type]
    )


def _mesh(ctx: _Ctx, default_cfg: BGPConfiguration | None) -> list[PeerSpec]:
    spec = default_cfg.spec if default_cfg else None
    if (spec and spec.node_to_node_mesh_enabled is False) or ctx.me.cluster_id:
        return []
    extra: dict[str, Any] = {
        "md5": _password(ctx, spec.node_mesh_password) if spec else None,
        "graceful_restart_time": parse_duration(
            spec.node_mesh_max_restart_time if spec else None, DEFAULT_RESTART_TIME
        ),
    }
    out = []
    for view in sorted(ctx.nodes.values(), key=lambda v: v.name):
        if view.name == ctx.me.name or view.cluster_id:
            continue
        for version in (4, 6):
            remote = view.address(version)
            if remote and ctx.me.address(version):
                out.append(
                    _session(ctx, remote, asn=view.asn, port=view.port, kind="node-to-node mesh", **extra)
                )
    return out


def _peer_extra(ctx: _Ctx, peer: BGPPeer) -> dict[str, Any]:
    spec = peer.spec
    return {
        "md5": _password(ctx, spec.password),
        "graceful_restart_time": parse_duration(spec.max_restart_time, DEFAULT_RESTART_TIME),
        "keep_original_next_hop": spec.keep_original_next_hop or spec.next_hop_mode == "Keep",
        "allow_local_as": spec.num_allowed_local_as_numbers or 0,
        "ttl_security": spec.ttl_security or 0,
        "route_filter": compile_filter(spec.filters, ctx.filters)[0],
        "max_prefixes": spec.max_prefixes,
        "max_prefixes_action": spec.max_prefixes_action,
        "max_as_path": spec.max_as_path_length,
        "bfd_request": (spec.failure_detection_mode, spec.bfd),
    }


def _local_matches(ctx: _Ctx, peer: BGPPeer, view: _NodeView) -> bool:
    spec = peer.spec
    if spec.node:
        return spec.node == view.name
    if spec.node_selector:
        return compile_selector(spec.node_selector)(view.labels)
    return True


def _remote_nodes(ctx: _Ctx, peer: BGPPeer) -> list[_NodeView]:
    match = compile_selector(peer.spec.peer_selector)
    return [v for v in sorted(ctx.nodes.values(), key=lambda v: v.name) if match(v.labels)]


def _from_peer(ctx: _Ctx, peer: BGPPeer) -> list[PeerSpec]:
    spec = peer.spec
    kind = "global" if not spec.node and not spec.node_selector else "node specific"
    extra = _peer_extra(ctx, peer)
    local_as = spec.local_as_number  # None: the node's own
    out: list[PeerSpec] = []
    if _local_matches(ctx, peer, ctx.me):
        if spec.peer_ip:
            host, port = split_peer_ip(spec.peer_ip)
            asn = parse_asn(spec.as_number, ctx.me.asn) or ctx.me.asn
            if ctx.me.address(ipaddress.ip_address(host).version):
                out.append(_session(ctx, host, asn=asn, port=port, kind=kind, local_as=local_as, **extra))
        elif spec.peer_selector:
            out += _to_nodes(ctx, _remote_nodes(ctx, peer), kind, extra, local_as=local_as)
    if spec.peer_selector and spec.reverse_peering != "Manual" and ctx.me in _remote_nodes(ctx, peer):
        locals_ = [v for v in ctx.nodes.values() if _local_matches(ctx, peer, v)]
        # the other node presents localASNumber to us on its side of this session
        out += _to_nodes(ctx, sorted(locals_, key=lambda v: v.name), kind, extra, peer_as=local_as)
    return out


def _to_nodes(
    ctx: _Ctx,
    views: list[_NodeView],
    kind: str,
    extra: dict[str, Any],
    *,
    local_as: int | None = None,
    peer_as: int | None = None,
) -> list[PeerSpec]:
    out = []
    for view in views:
        if view.name == ctx.me.name:
            continue
        for version in (4, 6):
            remote = view.address(version)
            if remote and ctx.me.address(version):
                asn = peer_as or view.asn
                out.append(
                    _session(ctx, remote, asn=asn, port=view.port, kind=kind, local_as=local_as, **extra)
                )
    return out


def compute_peers(
    node_name: str,
    nodes: Iterable[Node],
    bgp_configs: Iterable[BGPConfiguration],
    peers: Iterable[BGPPeer],
    *,
    resolve_secret: SecretResolver | None = None,
    bgp_filters: Iterable[BGPFilter] = (),
) -> list[PeerSpec]:
    """This node's BGP sessions, one per remote address, mesh first, then global, then node specific."""
    configs = list(bgp_configs)
    _node_cfg, default_cfg = _configs(configs, node_name)
    global_as = parse_asn(default_cfg.spec.as_number if default_cfg else None, DEFAULT_AS) or DEFAULT_AS
    views = _views(nodes, configs, global_as)
    me = views.get(node_name)
    if me is None or (me.v4 is None and me.v6 is None):
        return []
    by_ip = {ip: v for v in views.values() for ip in (v.v4, v.v6) if ip}
    ctx = _Ctx(
        me=me,
        nodes=views,
        by_ip=by_ip,
        router_id=me.v4 or hashed_router_id(node_name),
        resolve_secret=resolve_secret,
        filters={f.metadata.name: f for f in bgp_filters},
        node_limit=node_limit(default_cfg),
        default_cfg=default_cfg,
    )
    sessions = _mesh(ctx, default_cfg)
    ordered = sorted(peers, key=lambda p: (bool(p.spec.node or p.spec.node_selector), p.metadata.name))
    for peer in ordered:
        sessions += _from_peer(ctx, peer)
    seen: set[str] = {me.v4 or "", me.v6 or ""}
    unique = []
    for session in sessions:
        if session.address not in seen:
            seen.add(session.address)
            unique.append(session)
    return unique


def local_asn(node_name: str, nodes: Iterable[Node], bgp_configs: Iterable[BGPConfiguration]) -> int:
    configs = list(bgp_configs)
    _node_cfg, default_cfg = _configs(configs, node_name)
    global_as = parse_asn(default_cfg.spec.as_number if default_cfg else None, DEFAULT_AS) or DEFAULT_AS
    view = _views(nodes, configs, global_as).get(node_name)
    return view.asn if view else global_as


def node_limit(default_cfg: BGPConfiguration | None) -> tuple[int, str]:
    """The receive limit and action of sessions to other nodes (``nodePeerMaxPrefixes[Action]``)."""
    spec = default_cfg.spec if default_cfg else None
    limit = spec.node_peer_max_prefixes if spec else None
    action = spec.node_peer_max_prefixes_action if spec else None
    return (
        DEFAULT_NODE_MAX_PREFIXES if limit is None else limit,
        action or DEFAULT_MAX_PREFIXES_ACTION,
    )
