"""WireGuard peers and routing plan (pure), as Calico's Felix has them.

Inputs: every Node (its IPv4 and IPv6 addresses, ``status.wireguardPublicKey`` and
``status.wireguardPublicKeyV6``, ``spec.wireguard.interfaceIPv4Address`` / ``interfaceIPv6Address``)
and every block's owner. :class:`WireguardCalc` follows them and emits one coalesced
:class:`~felixpy.calc.updates.WireguardUpdate` (all nodes, all blocks) when something it uses changed.

:func:`plan` turns that snapshot and the node's own configuration into the desired device: a
peer for every other node that has an address and a valid key claimed by no other node (Calico
programs no peer for a key two nodes claim), allowed IPs = that node's blocks plus its WireGuard
interface address (plus its own address with host encryption); the WireGuard table routes those
CIDRs over the device and ``throw``s the blocks of nodes that are not peers and this node's own
blocks, so their traffic takes the main table: plain routing, IPIP or VXLAN, unencrypted.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

from felixpy.calc.updates import WgNode, WireguardUpdate

OVERHEAD_V4 = 60  # IPv4 + UDP + WireGuard header and tag
OVERHEAD_V6 = 80  # IPv6 header 20 bytes longer


@dataclass(frozen=True, slots=True)
class WireguardConfig:
    """FelixConfiguration ``wireguard*`` fields (Calico's names and defaults)."""

    enabled: bool = False
    listening_port: int = 51820
    interface_name: str = "wireguard.cali"
    mtu: int = 0  # 0 = host MTU - 60
    routing_rule_priority: int = 99
    host_encryption: bool = False
    keepalive: int = 0  # seconds, 0 = off
    table: int = 1
    fwmark: int = 0x200000
    ipv6: bool = False  # the IPv6 device (wireguardEnabledV6): v6 node addresses, blocks and routes

    @classmethod
    def v6(cls, **fields: Any) -> WireguardConfig:
        """Calico's IPv6 defaults: ``wg-v6.cali`` listening on 51821, table 2 (MTU host - 80 when 0)."""
        base: dict[str, Any] = {"interface_name": "wg-v6.cali", "listening_port": 51821, "ipv6": True,
                                "table": 2}  # Calico's index allocator: v4 takes table 1, v6 table 2
        return cls(**(base | fields))


@dataclass(frozen=True, slots=True)
class WgPeer:
    node: str
    public_key: str
    endpoint: str  # "ip:port"
    allowed_ips: tuple[str, ...]
    keepalive: int = 0


@dataclass(frozen=True, slots=True)
class WgPlan:
    peers: tuple[WgPeer, ...]
    routes: dict[str, str]  # cidr -> "dev" (over the device) | "throw" (main table)


def valid_key(key: str | None) -> bool:
    """A WireGuard public key: base64 of 32 bytes, not all zero."""
    if not key:
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 32 and raw != bytes(32)


def device_mtu(cfg: WireguardConfig, host_mtu: int) -> int:
    return cfg.mtu or host_mtu - (OVERHEAD_V6 if cfg.ipv6 else OVERHEAD_V4)


def _host(addr: str) -> str:
    """An address as a host CIDR of its family: /32 or /128."""
    return f"{addr}/{ipaddress.ip_address(addr).max_prefixlen}"


def _endpoint(addr: str, port: int) -> str:
    """``ip:port``, an IPv6 address in brackets (as ``wg`` reads and prints it)."""
    return f"[{addr}]:{port}" if ipaddress.ip_address(addr).version == 6 else f"{addr}:{port}"


def _family_of(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def family_view(node: WgNode, ipv6: bool) -> WgNode:
    """``node`` as one device sees it: the IPv6 device reads the node's IPv6 address, its
    ``wireguardPublicKeyV6`` and its IPv6 device address in the places of the IPv4 ones."""
    if not ipv6:
        return node
    return WgNode(node.name, node.ip6, node.public_key_v6, node.interface_addr_v6)


def plan(me: str, update: WireguardUpdate, cfg: WireguardConfig) -> WgPlan:
    nodes = {n.name: family_view(n, cfg.ipv6) for n in update.nodes}
    family = 6 if cfg.ipv6 else 4
    blocks: dict[str, list[str]] = {}
    for cidr, owner in update.blocks:
        if _family_of(cidr) == family:  # each device carries its own family's blocks only
            blocks.setdefault(owner, []).append(cidr)
    claims = Counter(n.public_key for n in nodes.values() if valid_key(n.public_key))
    peers, routes = [], {}
    for name in sorted(nodes):
        node = nodes[name]
        if name == me:
            for cidr in blocks.get(name, ()):
                routes[cidr] = "throw"  # our own workloads: main table (their /32s over cali*)
            continue
        usable = node.ip and valid_key(node.public_key) and claims[node.public_key] == 1
        allowed = set(blocks.get(name, ()))
        if node.interface_addr:
            allowed.add(_host(node.interface_addr))
        if cfg.host_encryption and node.ip:
            allowed.add(_host(node.ip))
        if not usable:
            for cidr in blocks.get(name, ()):
                routes[cidr] = "throw"  # no WireGuard there: unencrypted over the main table
            continue
        assert node.public_key is not None and node.ip is not None
        peers.append(WgPeer(name, node.public_key, _endpoint(node.ip, cfg.listening_port),
                            tuple(sorted(allowed)), cfg.keepalive))
        for cidr in allowed:
            routes[cidr] = "dev"
    return WgPlan(tuple(peers), routes)


def render_config(private_key: str, wg_plan: WgPlan, cfg: WireguardConfig) -> str:
    """The device as ``wg syncconf`` reads it (holds the private key: written 0600 only)."""
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {cfg.listening_port}",
             f"FwMark = {cfg.fwmark:#x}"]
    for p in wg_plan.peers:
        lines += ["", "[Peer]", f"PublicKey = {p.public_key}", f"Endpoint = {p.endpoint}"]
        if p.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(p.allowed_ips)}")
        if p.keepalive:
            lines.append(f"PersistentKeepalive = {p.keepalive}")
    return "\n".join(lines) + "\n"


class WireguardCalc:
    """Follows Nodes and block owners; ``flush`` emits a snapshot when what WireGuard uses changed."""

    def __init__(self) -> None:
        self._nodes: dict[str, WgNode] = {}
        self._blocks: dict[str, str] = {}
        self._emitted: WireguardUpdate | None = None

    def on_node(self, name: str, obj: Any | None) -> None:
        if obj is None:
            self._nodes.pop(name, None)
            return
        spec, status = obj.spec, obj.status
        ip = spec.bgp.ipv4_address if spec.bgp is not None else None
        ip6 = spec.bgp.ipv6_address if spec.bgp is not None else None
        wg = getattr(spec, "wireguard", None)
        self._nodes[name] = WgNode(
            name=name,
            ip=str(ip).split("/")[0] if ip else None,
            public_key=getattr(status, "wireguard_public_key", None) or None,
            interface_addr=str(wg.interface_ipv4_address) if wg and wg.interface_ipv4_address else None,
            ip6=str(ip6).split("/")[0] if ip6 else None,
            public_key_v6=getattr(status, "wireguard_public_key_v6", None) or None,
            interface_addr_v6=str(wg.interface_ipv6_address) if wg and wg.interface_ipv6_address else None,
        )

    def on_block(self, cidr: str, node: str | None) -> None:
        if node is None:
            self._blocks.pop(cidr, None)
        else:
            self._blocks[cidr] = node

    def flush(self) -> list[WireguardUpdate]:
        current = WireguardUpdate(
            nodes=tuple(self._nodes[n] for n in sorted(self._nodes)),
            blocks=tuple(sorted(self._blocks.items())),
        )
        if current == self._emitted:
            return []
        self._emitted = current
        return [current]
