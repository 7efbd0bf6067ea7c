"""The ipsets policy rules reference, and what each endpoint contributes to them.

Three kinds, each a frozen value whose ``name`` is a hash of what it means, so every rule
that means the same thing shares one set:

- ``SelectorSet``: addresses of endpoints, and nets of network sets, whose label view matches a
  selector (``hash:net``);
- ``NamedPortSet``: ``ip,proto:port`` of endpoints matching a selector that have a named
  port of that name and protocol (``hash:ip,port``);
- ``NetsSet``: a fixed CIDR list, used when a rule has more than one CIDR (``hash:net``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_network

from felixpy.dataplane.kernel_objects import IpSet
from policy.chain_names import ipset_name, named_port_set_id, nets_set_id
from policy.entities import PROTOCOL_NAMES, Endpoint
from policy.selector import Selector


def member_address(addr: str) -> str:
    """A host address or CIDR as ``ipset list`` prints it (host routes without the prefix)."""
    net = ip_network(addr, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


@lru_cache(maxsize=1 << 14)  # an endpoint's addresses are read once per set it may join
def net_members(addr: str) -> tuple[str, ...]:
    """``member_address``, except that a /0 is its two /1 halves: ``hash:net`` refuses a prefix length
    of 0 (as Felix, which splits it the same way)."""
    net = ip_network(addr, strict=False)
    if net.prefixlen == 0:
        return tuple(str(half) for half in net.subnets(prefixlen_diff=1))
    return (member_address(addr),)


def net_set(set_id: str, addrs: Iterable[str], version: int) -> IpSet:
    """A well-known ``hash:net`` set (pools, hosts) of the addresses/CIDRs of this IP version."""
    members = frozenset(member_address(a) for a in addrs if ip_network(a).version == version)
    return IpSet(ipset_name(set_id, version), "hash:net", _family(version), members)  # type: ignore[arg-type]


def _family(version: int) -> str:
    return "inet" if version == 4 else "inet6"


def _version(addr: str) -> int:
    """4 or 6 of a validated address or CIDR (only IPv6's text form has a colon)."""
    return 6 if ":" in addr else 4


def _ips(ep: Endpoint, version: int) -> list[str]:
    return [ip for ip in ep.ips if _version(ip) == version]


@dataclass(frozen=True, slots=True)
class SelectorSet:
    selector: Selector
    version: int = 4

    @property
    def name(self) -> str:
        return ipset_name(self.selector.unique_id, self.version)

    def members_of(self, ep: Endpoint, view: Mapping[str, str]) -> frozenset[str]:
        return self.members_matched(ep) if self.selector.matches(view) else frozenset()

    def members_matched(self, ep: Endpoint) -> frozenset[str]:
        """``members_of`` an endpoint whose view the selector is known to match."""
        return frozenset(m for ip in _ips(ep, self.version) for m in net_members(ip))

    def empty(self) -> IpSet:
        return IpSet(self.name, "hash:net", _family(self.version))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NamedPortSet:
    selector: Selector
    protocol: int
    port_name: str
    version: int = 4

    @property
    def name(self) -> str:
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        return ipset_name(named_port_set_id(self.selector.unique_id, proto, self.port_name), self.version)

    def members_of(self, ep: Endpoint, view: Mapping[str, str]) -> frozenset[str]:
        return self.members_matched(ep) if self.selector.matches(view) else frozenset()

    def members_matched(self, ep: Endpoint) -> frozenset[str]:
        """``members_of`` an endpoint whose view the selector is known to match."""
        port = ep.named_port(self.port_name, self.protocol)
        if port is None:
            return frozenset()
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        return frozenset(f"{member_address(ip)},{proto}:{port}" for ip in _ips(ep, self.version))

    def empty(self) -> IpSet:
        return IpSet(self.name, "hash:ip,port", _family(self.version))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NetsSet:
    nets: tuple[str, ...]
    version: int = 4

    @property
    def name(self) -> str:
        return ipset_name(nets_set_id(self.nets), self.version)

    def members_of(self, ep: Endpoint, view: Mapping[str, str]) -> frozenset[str]:
        return frozenset()

    def static(self) -> IpSet:
        members = frozenset(m for n in self.nets for m in net_members(n))
        return IpSet(self.name, "hash:net", _family(self.version), members)  # type: ignore[arg-type]

    def empty(self) -> IpSet:
        return self.static()


SetSpec = SelectorSet | NamedPortSet | NetsSet
