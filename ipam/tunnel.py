"""Tunnel addresses: one IPIP or VXLAN address per node, recorded on its Node resource.

The handle is Calico's (`ipip-tunnel-addr-<node>` / `vxlan-tunnel-addr-<node>`), so a
repeated call returns the address already held; pools are those whose ipipMode/vxlanMode
is not Never and that allow the `Tunnel` use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from felixpy.datastore.errors import Conflict, NotFound
from felixpy.resources.node import Node, NodeBGPSpec
from ipam.errors import NodeNotFound, NoUsablePool, RetriesExhausted

if TYPE_CHECKING:
    from ipam.ipam import IPAM

KINDS = {
    "ipip": ("ipip-tunnel-addr-", "ipipTunnelAddress"),
    "vxlan": ("vxlan-tunnel-addr-", "vxlanTunnelAddress"),
}


def tunnel_handle(node: str, kind: str) -> str:
    return KINDS[kind][0] + node


def tunnel_address(ipam: IPAM, node: str, kind: str = "ipip") -> str:
    if kind not in KINDS:
        raise ValueError(f"tunnel kind must be one of {sorted(KINDS)}, not {kind!r}")
    _get_node(ipam, node)
    handle = tunnel_handle(node, kind)
    held = [a for a in ipam.assignments_for_handle(handle) if ":" not in a]
    if held:
        addr = held[0]
    else:
        pools = [
            p.name
            for p in ipam.pools(fresh=True)
            if p.version == 4 and (p.ipip_mode if kind == "ipip" else p.vxlan_mode) != "Never"
        ]
        if not pools:
            raise NoUsablePool(
                f"no IPv4 pool has {kind}Mode enabled: node {node} needs no {kind} tunnel address"
            )
        result = ipam.auto_assign(
            handle,
            node=node,
            num_v4=1,
            attrs={"node": node, "type": KINDS[kind][1]},
            pools=pools,
            intended_use="Tunnel",
        )
        addr = result.v4[0]
    try:
        _record(ipam, node, kind, addr)
    except NodeNotFound:
        ipam.release_by_handle(handle)
        raise
    return addr


def _get_node(ipam: IPAM, node: str) -> Node:
    try:
        return ipam.backend.get(Node, node)
    except NotFound:
        raise NodeNotFound(f"node {node!r} has no Node resource") from None


def _record(ipam: IPAM, node: str, kind: str, addr: str) -> None:
    for _ in range(20):
        obj = _get_node(ipam, node)
        if kind == "ipip":
            bgp = obj.spec.bgp or NodeBGPSpec()
            if bgp.ipv4_ipip_tunnel_addr == addr:
                return
            bgp.ipv4_ipip_tunnel_addr = addr
            obj.spec.bgp = bgp
        else:
            if obj.spec.ipv4_vxlan_tunnel_addr == addr:
                return
            obj.spec.ipv4_vxlan_tunnel_addr = addr
        try:
            ipam.backend.update(obj)
            return
        except Conflict:
            continue
        except NotFound:
            raise NodeNotFound(f"node {node!r} was deleted while its tunnel address was assigned") from None
    raise RetriesExhausted(f"recording the {kind} tunnel address on node {node}: too many conflicts")
