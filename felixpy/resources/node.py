"""Node (projectcalico.org/v3): a host running the agent, with its BGP identity."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, MAC, ASNumber, IPAddress, IPv4Address, IPv4Interface, IPv6Interface


class NodeBGPSpec(Model):
    # CIDR form: the node's address with its subnet's prefix length, e.g. 10.0.0.5/24
    ipv4_address: IPv4Interface | None = None
    ipv6_address: IPv6Interface | None = None
    as_number: ASNumber | None = None  # None = BGPConfiguration's
    ipv4_ipip_tunnel_addr: IPv4Address | None = Field(default=None, alias="ipv4IPIPTunnelAddr")
    # IPv4-formatted cluster ID; setting it makes the node a route reflector
    route_reflector_cluster_id: IPv4Address | None = Field(default=None, alias="routeReflectorClusterID")


class OrchRef(Model):
    node_name: str | None = None
    orchestrator: str


class NodeAddress(Model):
    address: str
    type: str | None = None


class NodeWireguardSpec(Model):
    interface_ipv4_address: IPv4Address | None = Field(default=None, alias="interfaceIPv4Address")
    interface_ipv6_address: IPAddress | None = Field(default=None, alias="interfaceIPv6Address")


class NodeSpec(Model):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: IPv4Address | None = Field(default=None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: MAC | None = Field(default=None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: IPAddress | None = Field(default=None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: MAC | None = Field(default=None, alias="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] = Field(default_factory=list)
    addresses: list[NodeAddress] = Field(default_factory=list)
    wireguard: NodeWireguardSpec | None = None


class NodeStatus(Model):
    pod_cid_rs: list[CIDR] = Field(default_factory=list, alias="podCIDRs")
    # written by the node's agent once its WireGuard device has a key ("" / absent: no WireGuard)
    wireguard_public_key: str | None = Field(default=None, alias="wireguardPublicKey")
    wireguard_public_key_v6: str | None = Field(default=None, alias="wireguardPublicKeyV6")


class Node(Resource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("node", "nodes", "no")
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None
