"""Node (projectcalico.org/v3): a host running the agent, with its BGP identity."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from felixpy.resources.base import Model, Resource


class NodeBGPSpec(Model):
    ipv4_address: str | None = None  # CIDR form: address/prefix of the node's subnet, e.g. 10.0.0.5/24
    ipv6_address: str | None = None
    as_number: str | int | None = None  # None = BGPConfiguration's
    ipv4_ipip_tunnel_addr: str | None = Field(default=None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: str | None = Field(default=None, alias="routeReflectorClusterID")


class OrchRef(Model):
    node_name: str | None = None
    orchestrator: str


class NodeAddress(Model):
    address: str
    type: str | None = None


class NodeSpec(Model):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: str | None = Field(default=None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: str | None = Field(default=None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: str | None = Field(default=None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: str | None = Field(default=None, alias="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] = Field(default_factory=list)
    addresses: list[NodeAddress] = Field(default_factory=list)


class NodeStatus(Model):
    pod_cid_rs: list[str] = Field(default_factory=list, alias="podCIDRs")


class Node(Resource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("node", "nodes", "no")
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None
