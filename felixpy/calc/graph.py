"""The calculation graph: synced resources + block affinities in, NodeState deltas out (pure).

Handlers (`on_resource`, `on_block`) are cheap: they update the inputs and recompute only
the derived keys the change can affect (one endpoint's routes, one block's route, one
node's VTEP; a pool or this node's own Node changes everything remote, which is rare).
`flush()` returns one update per derived key whose value differs from what was last
flushed, so a batch of many events coalesces into the smallest set of changes.

Two stages sit beside the routing ones and are fed by the same ``on_resource``: the policy stage
(``felixpy.calc.policy_stage``: the compilers, one per IP version, emitting chains, ipsets and hooks) and
the BGP stage (``felixpy.calc.bgp_inputs``: one frozen snapshot of what the BGP service is given).
FelixConfigurations leave as `FelixConfigUpdate` (the config watch restarts the agent on a change).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, cast

from felixpy.calc.bgp_inputs import BGPInputsCalc
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import (
    IPIP_DEVICE,
    VXLAN_DEVICE,
    BlocksUpdate,
    Encap,
    EncapUpdate,
    EndpointUpdate,
    FelixConfigUpdate,
    InvalidConfig,
    NodeState,
    Route,
    RouteUpdate,
    Update,
    Vtep,
    VtepUpdate,
)
from felixpy.calc.vxlan import vtep_mac
from felixpy.calc.wireguard import WireguardCalc
from policy.convert import endpoint_from_stored_wep, endpoint_from_wep
from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.datastore.backend import ResourceEvent
    from felixpy.resources.felixconfig import FelixConfiguration

Key = tuple[str, str]


class CalcGraph:
    """``ipip_routes``: also compute remote-block routes of IPIP pools (when no BGP speaker
    programs them, e.g. ``CALICO_NETWORKING_BACKEND=none``); VXLAN routes are always computed.
    ``policy``: the policy stage (its compilers), None when the agent programs no policy;
    ``bgp``: emit the BGP service's inputs (`BGPInputsUpdate`)."""

    def __init__(
        self,
        nodename: str,
        *,
        ipip_routes: bool = False,
        wireguard: bool = False,
        policy: PolicyCalc | None = None,
        bgp: bool = True,
    ) -> None:
        self.nodename = nodename
        self.ipip_routes = ipip_routes
        self.policy = policy
        self._bgp = BGPInputsCalc() if bgp else None
        # WireGuard peers/routing inputs (felixpy.calc.wireguard), emitted only when asked for
        self._wireguard = WireguardCalc() if wireguard else None
        self._nodes: dict[str, Any] = {}
        self._pools: dict[str, Any] = {}
        self._blocks: dict[str, str] = {}  # block cidr -> affine node
        self._ip_owners: dict[str, set[Key]] = {}
        # Derived desired state and what was last flushed.
        self._endpoints: dict[Key, Endpoint] = {}
        self._routes: dict[str, Route] = {}
        self._vteps: dict[str, Vtep] = {}
        self._encap = Encap()
        self._emitted_eps: dict[Key, Endpoint] = {}
        self._emitted_routes: dict[str, Route] = {}
        self._emitted_vteps: dict[str, Vtep] = {}
        self._emitted_encap: Encap | None = None
        self._emitted_blocks: BlocksUpdate | None = None
        self._dirty_eps: set[Key] = set()
        self._dirty_routes: set[str] = set()
        self._dirty_vteps: set[str] = set()
        self._configs: dict[str, FelixConfiguration | InvalidConfig | None] = {}  # FelixConfigurations

    # ---- inputs -------------------------------------------------------------------------
    def on_resource(self, kind: str, key: Key, obj: Any | None) -> None:
        """A resource of KIND ``kind`` at (namespace or "", name) was put (obj) or deleted (None).
        A WorkloadEndpoint is converted to its `Endpoint` here, once for every stage (the policy
        compilers, BGP's workload addresses, the local endpoints), unless it comes as one
        (`event_input`)."""
        if kind == "WorkloadEndpoint" and obj is not None and not isinstance(obj, Endpoint):
            obj = endpoint_from_wep(obj)
        if self.policy is not None:
            self.policy.on_resource(kind, key, obj)
        if self._bgp is not None:
            self._bgp.on_resource(kind, key, obj)
        if kind == "FelixConfiguration":
            self._configs[key[1]] = cast("FelixConfiguration | InvalidConfig | None", obj)
        elif kind == "WorkloadEndpoint":
            self._on_wep(key, obj)
        elif kind == "Node":
            self._on_node(key[1], obj)
            if self._wireguard is not None:
                self._wireguard.on_node(key[1], obj)
        elif kind == "IPPool":
            self._pools.pop(key[1], None)
            if obj is not None:
                self._pools[key[1]] = obj
            self._recompute_all_remote()

    def on_block(self, cidr: str, node: str | None) -> None:
        """Block ``cidr`` is affine to ``node`` (None: no longer affine / deleted)."""
        if node is None:
            self._blocks.pop(cidr, None)
        else:
            self._blocks[cidr] = node
        self._recompute_block(cidr)
        if self._wireguard is not None:
            self._wireguard.on_block(cidr, node)

    # ---- outputs ------------------------------------------------------------------------
    def flush(self) -> list[Update]:
        out: list[Update] = []
        if self._encap != self._emitted_encap:
            self._emitted_encap = self._encap
            out.append(EncapUpdate(self._encap))
        blocks = self._blocks_update()
        if blocks != self._emitted_blocks:
            self._emitted_blocks = blocks
            out.append(blocks)
            if self._bgp is not None:
                self._bgp.on_blocks(blocks.local_blocks, blocks.all_blocks)
        out += [FelixConfigUpdate(name, obj) for name, obj in self._configs.items()]
        self._configs.clear()
        if self._bgp is not None and (bgp := self._bgp.flush()) is not None:
            out.append(bgp)
        out += _diff(self._dirty_vteps, self._vteps, self._emitted_vteps, VtepUpdate)
        if self._wireguard is not None:
            out += self._wireguard.flush()
        out += _diff(self._dirty_eps, self._endpoints, self._emitted_eps, EndpointUpdate)
        out += _diff(self._dirty_routes, self._routes, self._emitted_routes, RouteUpdate)
        if self.policy is not None:
            out += self.policy.flush()
        return out

    def state(self) -> NodeState:
        return NodeState(
            endpoints=dict(self._endpoints),
            routes=dict(self._routes),
            vteps=dict(self._vteps),
            encap=self._encap,
            local_blocks=self._blocks_update().local_blocks,
        )

    # ---- workload endpoints -------------------------------------------------------------
    def _on_wep(self, key: Key, obj: Endpoint | None) -> None:
        old = self._endpoints.pop(key, None)
        if obj is not None and obj.node == self.nodename:
            self._endpoints[key] = obj
        new = self._endpoints.get(key)
        if old != new:
            self._dirty_eps.add(key)
        for ip in old.nets if old else ():
            self._ip_owners.get(ip, set()).discard(key)
            self._recompute_ip(ip)
        for ip in new.nets if new else ():
            self._ip_owners.setdefault(ip, set()).add(key)
            self._recompute_ip(ip)

    def _recompute_ip(self, ip: str) -> None:
        owners = self._ip_owners.get(ip)
        if not owners:
            self._ip_owners.pop(ip, None)
            self._set_route(ip, None)
            return
        owner = self._endpoints[min(owners)]
        reason = f"workload {owner.key}"
        self._set_route(ip, Route(dst=ip, kind="local", iface=owner.iface, reason=reason))

    # ---- nodes, pools, blocks -----------------------------------------------------------
    def _on_node(self, name: str, obj: Any | None) -> None:
        self._nodes.pop(name, None)
        if obj is not None:
            self._nodes[name] = obj
        if name == self.nodename:
            self._recompute_all_remote()
            return
        self._recompute_vtep(name)
        for cidr, node in list(self._blocks.items()):
            if node == name:
                self._recompute_block(cidr)

    def _recompute_all_remote(self) -> None:
        self._encap = self._compute_encap()
        for name in set(self._nodes) | set(self._vteps):
            if name != self.nodename:
                self._recompute_vtep(name)
        for cidr in list(self._blocks):
            self._recompute_block(cidr)

    def _compute_encap(self) -> Encap:
        pools = [p.spec for p in self._pools.values() if not p.spec.disabled]
        me = self._nodes.get(self.nodename)
        spec = me.spec if me is not None else None
        bgp = spec.bgp if spec is not None and spec.bgp is not None else None
        vxlan = any(p.vxlan_mode != "Never" for p in pools)
        return Encap(
            ipip=any(p.ipip_mode != "Never" for p in pools),
            vxlan=vxlan,
            ipip_tunnel_addr=bgp.ipv4_ipip_tunnel_addr if bgp else None,
            vxlan_tunnel_addr=spec.ipv4_vxlan_tunnel_addr if spec else None,
            vxlan_mac=vtep_mac(self.nodename, spec.vxlan_tunnel_mac_addr if spec else None),
            node_ip=bgp.ipv4_address if bgp else None,
        )

    def _recompute_vtep(self, name: str) -> None:
        vtep = None
        node = self._nodes.get(name)
        if node is not None and self._encap.vxlan:
            tunnel = node.spec.ipv4_vxlan_tunnel_addr
            bgp = node.spec.bgp
            if tunnel and bgp is not None and bgp.ipv4_address:
                parent = bgp.ipv4_address.split("/")[0]
                vtep = Vtep(
                    node=name,
                    tunnel_ip=tunnel,
                    mac=vtep_mac(name, node.spec.vxlan_tunnel_mac_addr),
                    parent_ip=parent,
                )
        if self._vteps.get(name) != vtep:
            self._dirty_vteps.add(name)
            if vtep is None:
                self._vteps.pop(name, None)
            else:
                self._vteps[name] = vtep

    def _recompute_block(self, cidr: str) -> None:
        node = self._blocks.get(cidr)
        if node is None:
            self._set_route(cidr, None)
        elif node == self.nodename:
            net = ipaddress.ip_network(cidr)
            is_host = net.prefixlen == net.max_prefixlen
            self._set_route(cidr, None if is_host else Route(cidr, "blackhole", reason="local IPAM block"))
        else:
            self._set_route(cidr, self._remote_route(cidr, node))

    def _remote_route(self, cidr: str, node: str) -> Route | None:
        pool = self._pool_for(cidr)
        if pool is None:
            return None
        if pool.vxlan_mode != "Never":
            return self._vxlan_route(cidr, node, pool)
        if pool.ipip_mode != "Never" and self.ipip_routes:
            return self._ipip_route(cidr, node, pool)
        return None

    def _vxlan_route(self, cidr: str, node: str, pool: Any) -> Route | None:
        vtep = self._vteps.get(node)
        if vtep is None:
            return None
        reason = f"block of {node} (vxlan pool {pool.cidr})"
        if pool.vxlan_mode == "CrossSubnet" and _same_subnet(self._encap.node_ip, vtep.parent_ip):
            return Route(cidr, "direct", gateway=vtep.parent_ip, reason=reason + ", same subnet")
        return Route(cidr, "vxlan", iface=VXLAN_DEVICE, gateway=vtep.tunnel_ip, onlink=True, reason=reason)

    def _ipip_route(self, cidr: str, node: str, pool: Any) -> Route | None:
        """Calico's IPIP route: ``via <node IP> dev tunl0 onlink``; CrossSubnet same subnet: direct."""
        obj = self._nodes.get(node)
        bgp = obj.spec.bgp if obj is not None else None
        if bgp is None or not bgp.ipv4_address:
            return None
        node_ip = str(bgp.ipv4_address).split("/")[0]
        reason = f"block of {node} (ipip pool {pool.cidr})"
        if pool.ipip_mode == "CrossSubnet" and _same_subnet(self._encap.node_ip, node_ip):
            return Route(cidr, "direct", gateway=node_ip, reason=reason + ", same subnet")
        return Route(cidr, "ipip", iface=IPIP_DEVICE, gateway=node_ip, onlink=True, reason=reason)

    def _pool_for(self, cidr: str) -> Any | None:
        net = ipaddress.ip_network(cidr)
        for pool in self._pools.values():
            pnet = ipaddress.ip_network(pool.spec.cidr, strict=False)
            if pnet.version == net.version and net.subnet_of(pnet):  # type: ignore[arg-type]
                return None if pool.spec.disabled else pool.spec
        return None

    def _blocks_update(self) -> BlocksUpdate:
        local = frozenset(c for c, n in self._blocks.items() if n == self.nodename)
        return BlocksUpdate(local_blocks=local, all_blocks=tuple(sorted(self._blocks.items())))

    def _set_route(self, dst: str, route: Route | None) -> None:
        if self._routes.get(dst) == route:
            return
        self._dirty_routes.add(dst)
        if route is None:
            self._routes.pop(dst, None)
        else:
            self._routes[dst] = route


def event_input(kind: str, event: ResourceEvent) -> Any:
    """What `CalcGraph.on_resource` is given for a datastore put: the event's model, or, for a stored
    WorkloadEndpoint of the common shape, its `Endpoint` straight from the stored JSON
    (``policy.convert.endpoint_from_stored_wep``: the same checks, without the pydantic model; a
    document it does not take goes through the model, which refuses a malformed one as before)."""
    raw = getattr(event, "raw", None)  # a LazyResourceEvent's stored JSON (the calc imports no datastore)
    if kind == "WorkloadEndpoint" and isinstance(raw, bytes) and raw:
        ep = endpoint_from_stored_wep(raw)
        if ep is not None:
            return ep
    return event.obj


def _same_subnet(local_cidr: str | None, remote_ip: str) -> bool:
    if not local_cidr or "/" not in local_cidr:
        return False
    net = ipaddress.ip_network(local_cidr, strict=False)
    return ipaddress.ip_address(remote_ip) in net


def _diff(dirty: set, current: dict, emitted: dict, make: Any) -> list[Any]:
    out = []
    for key in sorted(dirty):
        value = current.get(key)
        if emitted.get(key) != value:
            out.append(make(key, value))
            if value is None:
                emitted.pop(key, None)
            else:
                emitted[key] = value
    dirty.clear()
    return out
