"""The lab's topology as plain data: which nodes, in which rack, with which address and AS.

Pure: ``make_plan(options)`` computes everything ``up`` will create, so the address plan is
unit-tested without root and the state file can record the plan before anything exists.

Addressing (all private, all on links the lab creates inside its own namespaces):

* rack ``r`` (1-based) is the subnet ``10.99.r.0/24``; the fabric namespace holds the
  gateway ``10.99.r.1`` on a bridge ``br<r>``; the rack's nodes are ``10.99.r.10`` onward.
* etcd lives on its own link: fabric ``10.98.0.1/24``, etcd ``10.98.0.2/24``; with
  ``--etcd-members N`` member ``i`` (0-based) listens on ``10.98.0.(2+i)``, all in the etcd namespace.
* ``--racks 1`` (the default) is one L2 segment: every node on ``br1``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from felixpy.lab.layout import LabError, LabNames

Encap = Literal["none", "ipip", "vxlan"]
Role = Literal["node", "route-reflector"]

NODE_NET = ipaddress.ip_network("10.99.0.0/16")
ETCD_NET = ipaddress.ip_network("10.98.0.0/24")
ETCD_ADDR = "10.98.0.2"
ETCD_GW = "10.98.0.1"
ETCD_PORT = 2379
DEFAULT_AS = 64512
TOR_AS = 65000
RACK_AS_BASE = 65100
RR_CLUSTER_ID = "244.0.0.1"
MAX_NODES = 100
MAX_RACKS = 50


@dataclass(frozen=True)
class Options:
    """What the user asked ``up`` for."""

    name: str
    nodes: int = 2
    racks: int = 1
    tor: Literal["none", "bird"] = "none"
    route_reflectors: int = 0
    encap: Encap = "none"
    cross_subnet: bool = False
    pool: str = "10.244.0.0/16"
    block_size: int = 26
    etcd_members: int = 1
    bfd: bool = True  # BFD on node sessions (the default) and between the nodes and a BIRD ToR


@dataclass(frozen=True)
class NodePlan:
    name: str
    netns: str
    rack: int
    address: str  # plain IPv4
    prefixlen: int
    gateway: str
    role: Role
    asn: int
    fabric_if: str  # the veth end in the fabric namespace

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class RackPlan:
    index: int
    subnet: str
    gateway: str
    bridge: str
    asn: int  # the nodes' AS in this rack (only differs from DEFAULT_AS with a ToR)


@dataclass(frozen=True)
class Plan:
    options: Options
    racks: list[RackPlan] = field(default_factory=list)
    nodes: list[NodePlan] = field(default_factory=list)

    @property
    def etcd_addresses(self) -> list[str]:
        base = ipaddress.ip_address(ETCD_ADDR)
        return [str(base + i) for i in range(self.options.etcd_members)]

    @property
    def etcd_endpoints(self) -> list[str]:
        return [f"http://{a}:{ETCD_PORT}" for a in self.etcd_addresses]

    @property
    def etcd_endpoint(self) -> str:
        """What ETCD_ENDPOINTS holds: every member, comma-separated."""
        return ",".join(self.etcd_endpoints)

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in lab {self.options.name!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Plan:
        return Plan(
            options=Options(**data["options"]),
            racks=[RackPlan(**r) for r in data["racks"]],
            nodes=[NodePlan(**n) for n in data["nodes"]],
        )


def _validate(opts: Options) -> None:
    if not 1 <= opts.nodes <= MAX_NODES:
        raise LabError(f"--nodes must be 1..{MAX_NODES}")
    if not 1 <= opts.racks <= min(MAX_RACKS, opts.nodes):
        raise LabError("--racks must be 1..min(50, nodes)")
    if opts.etcd_members not in (1, 3, 5):
        raise LabError("--etcd-members must be 1, 3 or 5 (a quorum survives (N-1)/2 members lost)")
    if not 0 <= opts.route_reflectors <= 10:
        raise LabError("--route-reflectors must be 0..10")
    if opts.tor == "bird" and opts.route_reflectors:
        raise LabError("--tor bird and --route-reflectors are exclusive (ToR peering replaces the RRs)")
    if opts.cross_subnet and opts.encap == "none":
        raise LabError("--cross-subnet needs --encap ipip or vxlan")
    try:
        pool = ipaddress.ip_network(opts.pool)
    except ValueError as exc:
        raise LabError(f"bad --pool: {exc}") from exc
    if pool.version != 4 or not pool.is_private:
        raise LabError("--pool must be a private IPv4 CIDR")
    if pool.overlaps(NODE_NET) or pool.overlaps(ETCD_NET):
        raise LabError(f"--pool {pool} overlaps the lab's own ranges {NODE_NET}, {ETCD_NET}")
    if not pool.prefixlen <= opts.block_size <= 32:
        raise LabError("blockSize must be within the pool and <= 32")


def _racks(opts: Options) -> list[RackPlan]:
    racks = []
    for r in range(1, opts.racks + 1):
        asn = RACK_AS_BASE + r if opts.tor == "bird" else DEFAULT_AS
        racks.append(RackPlan(r, f"10.99.{r}.0/24", f"10.99.{r}.1", f"br{r}", asn))
    return racks


def _rack_of(index: int, total: int, racks: int) -> int:
    """Contiguous split: the first nodes fill rack 1, the next ones rack 2, ..."""
    return index * racks // total + 1


def make_plan(opts: Options) -> Plan:
    """Compute the whole topology for ``opts`` (raises :class:`LabError` if invalid)."""
    _validate(opts)
    names = LabNames(opts.name)
    racks = _racks(opts)
    members: list[tuple[str, Role, int]] = [
        (f"node{i + 1}", "node", _rack_of(i, opts.nodes, opts.racks)) for i in range(opts.nodes)
    ]
    members += [(f"rr{k + 1}", "route-reflector", k % opts.racks + 1) for k in range(opts.route_reflectors)]
    per_rack: dict[int, int] = {}
    nodes = []
    for name, role, rack in members:
        slot = per_rack.get(rack, 0)
        per_rack[rack] = slot + 1
        rp = racks[rack - 1]
        nodes.append(
            NodePlan(
                name=name, netns=names.node(name), rack=rack, address=f"10.99.{rack}.{10 + slot}",
                prefixlen=24, gateway=rp.gateway, role=role, asn=rp.asn, fabric_if=f"v-{name}",
            )
        )
    return Plan(options=opts, racks=racks, nodes=nodes)
