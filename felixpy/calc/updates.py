"""What the calculation layer emits: the desired NodeState and the deltas that lead to it.

Everything here is frozen plain data. The calc graph keeps the desired state in dicts and,
per batch, emits one `Update` per key that changed (the latest value wins: a key that
changed twice in a batch is reported once). A dataplane — the real one or the recorder
used in tests — applies those updates to its own copy of the desired state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from felixpy.dataplane.kernel_objects import Chain, IpSet, Table
from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
    from felixpy.resources.felixconfig import FelixConfiguration
    from felixpy.resources.ippool import IPPool
    from felixpy.resources.node import Node
    from policy.chains import Hook

RouteKind = Literal["local", "blackhole", "vxlan", "ipip", "direct"]

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"


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
    """A workload endpoint on this node, in the one endpoint model (``policy.entities.Endpoint``, as the
    policy compilers see it), or None when it is gone."""

    key: tuple[str, str]  # (namespace, name)
    endpoint: Endpoint | None


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
    """What WireGuard needs to know of a node (felixpy.calc.wireguard): each family's address,
    published key (``status.wireguardPublicKey`` / ``status.wireguardPublicKeyV6``) and device
    address (``spec.wireguard.interfaceIPv4Address`` / ``interfaceIPv6Address``)."""

    name: str
    ip: str | None
    public_key: str | None
    interface_addr: str | None = None
    ip6: str | None = None
    public_key_v6: str | None = None
    interface_addr_v6: str | None = None


@dataclass(frozen=True, slots=True)
class WireguardUpdate:
    """Every node's WireGuard identity and every block's owner: a coalesced snapshot."""

    nodes: tuple[WgNode, ...]
    blocks: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class EncapUpdate:
    encap: Encap


@dataclass(frozen=True, slots=True)
class ChainsUpdate:
    """The policy compiler of IP version ``version`` changed chains: write ``chains``, delete ``removed``."""

    version: int
    chains: tuple[Chain, ...]
    removed: frozenset[tuple[Table, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class IpsetsUpdate:
    """The policy compiler of IP version ``version`` changed ipsets: write ``ipsets``, destroy ``removed``."""

    version: int
    ipsets: tuple[IpSet, ...]
    removed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HooksUpdate:
    """The whole set of hook rules (jumps from the kernel's chains into ours) of one IP version."""

    version: int
    hooks: tuple[Hook, ...]


@dataclass(frozen=True, slots=True)
class PolicyInputsUpdate:
    """Which policy inputs a batch changed, so the policy writers' deferral
    (``felixpy.dataplane.deferral``) can tell what must be in the kernel before the commit returns:
    ``deleted_workloads`` (any node's WorkloadEndpoints deleted) and ``others`` (any other policy
    input: an endpoint added or changed, a policy, a tier, a namespace, a pool, a node's address).
    A batch of only local endpoints going away has nothing new to isolate."""

    deleted_workloads: frozenset[tuple[str, str]] = frozenset()
    others: bool = False


@dataclass(frozen=True, slots=True)
class BGPInputs:
    """Everything the BGP service is given: one frozen snapshot, emitted whole when any part changed.

    ``workloads``: every WorkloadEndpoint address as (node, address); ``all_blocks``: (block, node).
    The snapshot is re-emitted for a workload change only when it changes the set of borrowed
    addresses (an address used on a node other than its block's owner)."""

    nodes: tuple[Node, ...] = ()
    bgp_configs: tuple[BGPConfiguration, ...] = ()
    peers: tuple[BGPPeer, ...] = ()
    bgp_filters: tuple[BGPFilter, ...] = ()
    pools: tuple[IPPool, ...] = ()
    local_blocks: tuple[str, ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()
    all_blocks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BGPInputsUpdate:
    inputs: BGPInputs


@dataclass(frozen=True)
class InvalidConfig:
    """A FelixConfiguration the datastore holds that does not validate; the sync passes this in
    place of the model (the agent must not crash on it)."""

    name: str
    error: str


@dataclass(frozen=True, slots=True)
class FelixConfigUpdate:
    """A FelixConfiguration (by name) as the datastore holds it, or None when deleted."""

    name: str
    config: FelixConfiguration | InvalidConfig | None


@dataclass(frozen=True, slots=True)
class BlocksUpdate:
    """Block affinities changed: local_blocks = this node's blocks; all_blocks = cidr -> node."""

    local_blocks: frozenset[str]
    all_blocks: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class InSync:
    pass


Update = (
    EndpointUpdate | RouteUpdate | VtepUpdate | EncapUpdate | WireguardUpdate | BlocksUpdate | InSync
    | ChainsUpdate | IpsetsUpdate | HooksUpdate | PolicyInputsUpdate | BGPInputsUpdate | FelixConfigUpdate
)


@dataclass(frozen=True)
class NodeState:
    """The whole desired state (compared in tests; the dataplane only ever sees deltas)."""

    endpoints: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    vteps: dict[str, Vtep] = field(default_factory=dict)
    encap: Encap = field(default_factory=Encap)
    local_blocks: frozenset[str] = frozenset()
