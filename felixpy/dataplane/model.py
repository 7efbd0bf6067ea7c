"""Plain data shared by the pure layers (calc, policy compiler) and the dataplane drivers.

No I/O here: the policy compiler builds these, the iptables/ipset writers render and apply them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Route protocol numbers (see /etc/iproute2/rt_protos). Each owner removes only its own.
RTPROT_FELIXPY = 80  # agent dataplane routes: workload /32s, blackholes, VXLAN remote blocks
RTPROT_FELIXPY_BGP = 81  # routes learned over BGP and installed by bgp/

Table = Literal["filter", "nat", "mangle", "raw"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One iptables rule: ``match`` and ``action`` are iptables-restore argument text.

    e.g. Rule(match="-m conntrack --ctstate RELATED,ESTABLISHED", action="-j ACCEPT",
    comment="Accept established"). The writer adds the identifying hash comment itself.
    """

    match: str = ""
    action: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[Rule, ...] = ()
    table: Table = "filter"


@dataclass(frozen=True, slots=True)
class IpSet:
    """A set the agent owns (name starts with ``cali40``/``cali60``)."""

    name: str
    set_type: Literal["hash:net", "hash:ip", "hash:ip,port", "hash:net,port"] = "hash:net"
    family: Literal["inet", "inet6"] = "inet"
    members: frozenset[str] = field(default_factory=frozenset)
