"""What the calculation layer emits: the desired NodeState and the deltas that lead to it.

Everything here is frozen plain data. The calc graph keeps the desired state in dicts and,
per batch, emits one `Update` per key that changed (the latest value wins: a key that
changed twice in a batch is reported once). A dataplane — the real one or the recorder
used in tests — applies those updates to its own copy of the desired state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteKind = Literal["local", "blackhole", "vxlan", "ipip", "direct"]

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """A workload endpoint on this node, as the dataplane needs it."""

    namespace: str
    name: str
    iface: str
    ips: tuple[str, ...]  # CIDRs, /32 or /128
    mac: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    profiles: tuple[str, ...] = ()
    pod: str | None = None
    container_id: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A route the agent owns (installed with protocol RTPROT_FELIXPY)."""

    dst: str
    kind: RouteKind
    iface: str | None = None
    gateway: str | None = None
    onlink: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Vtep:
    """A remote node's VXLAN tunnel endpoint: neighbour + FDB entry on vxlan.calico."""

    node: str
    tunnel_ip: str
    mac: str
    parent_ip: str


@dataclass(frozen=True, slots=True)
class Encap:
    """Which encapsulations this node needs and its own tunnel identity."""

    ipip: bool = False
    vxlan: bool = False
    ipip_tunnel_addr: str | None = None
    vxlan_tunnel_addr: str | None = None
    vxlan_mac: str | None = None
    node_ip: str | None = None  # this node's address, CIDR form (subnet for CrossSubnet)


@dataclass(frozen=True, slots=True)
class EndpointUpdate:
    key: tuple[str, str]  # (namespace, name)
    endpoint: LocalEndpoint | None


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    dst: str
    route: Route | None


@dataclass(frozen=True, slots=True)
class VtepUpdate:
    node: str
    vtep: Vtep | None


@dataclass(frozen=True, slots=True)
class WgNode:
    """What WireGuard needs to know of a node (felixpy.calc.wireguard)."""

    name: str
    ip: str | None
    public_key: str | None
    interface_addr: str | None = None


@dataclass(frozen=True, slots=True)
class WireguardUpdate:
    """Every node's WireGuard identity and every block's owner: a coalesced snapshot."""

    nodes: tuple[WgNode, ...]
    blocks: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class EncapUpdate:
    encap: Encap


@dataclass(frozen=True, slots=True)
class InputUpdate:
    """A raw resource the policy compiler / BGP service consume, passed through unchanged.

    ``kind`` is the resource KIND (NetworkPolicy, Namespace, IPPool, BGPPeer, ...),
    ``obj`` the resource (None when deleted). Kept as Any-typed to stay free of those APIs.
    """

    kind: str
    key: tuple[str, str]
    obj: object | None


@dataclass(frozen=True, slots=True)
class BlocksUpdate:
    """Block affinities changed: local_blocks = this node's blocks; all_blocks = cidr -> node."""

    local_blocks: frozenset[str]
    all_blocks: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class InSync:
    pass


Update = (
    EndpointUpdate | RouteUpdate | VtepUpdate | EncapUpdate | WireguardUpdate | InputUpdate | BlocksUpdate
    | InSync
)


@dataclass(frozen=True)
class NodeState:
    """The whole desired state (compared in tests; the dataplane only ever sees deltas)."""

    endpoints: dict[tuple[str, str], LocalEndpoint] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    vteps: dict[str, Vtep] = field(default_factory=dict)
    encap: Encap = field(default_factory=Encap)
    local_blocks: frozenset[str] = frozenset()
