"""Plain data shared by the pure layers (calc, policy compiler) and the dataplane drivers.

No I/O here: the policy compiler builds these, the iptables/ipset writers render and apply them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from sys import intern
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

    def __post_init__(self) -> None:
        # Thousands of rules share a few action/match/comment texts ("-j MARK --set-xmark ...",
        # "-g cali-tp-..."): one copy each (issue 15 goal 3: duplicate strings were ~7 MB at x10).
        setattr_ = object.__setattr__
        setattr_(self, "match", intern(self.match))
        setattr_(self, "action", intern(self.action))
        setattr_(self, "comment", intern(self.comment))


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


# --- routes (added by the dataplane driver owner) -------------------------------------------

RouteType = Literal["dev", "blackhole", "via"]
MAIN_TABLE = 254


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where a route sends traffic. Build with the class methods:

    - ``RouteTarget.device("caliX")``          -> ``<dst> dev caliX scope link``
    - ``RouteTarget.blackhole()``              -> ``blackhole <dst>``
    - ``RouteTarget.via("10.0.0.2", "eth0")``  -> ``<dst> via 10.0.0.2 dev eth0``
    - ``RouteTarget.via(gw, "tunl0", onlink=True)`` -> ``... dev tunl0 onlink``
    """

    type: RouteType = "dev"
    dev: str = ""
    gateway: str = ""
    onlink: bool = False

    @classmethod
    def device(cls, dev: str) -> RouteTarget:
        return cls("dev", dev=dev)

    @classmethod
    def blackhole(cls) -> RouteTarget:
        return cls("blackhole")

    @classmethod
    def via(cls, gateway: str, dev: str = "", *, onlink: bool = False) -> RouteTarget:
        return cls("via", dev=dev, gateway=gateway, onlink=onlink)

    def __str__(self) -> str:
        if self.type == "blackhole":
            return "blackhole"
        text = f"via {self.gateway}" if self.type == "via" else ""
        text += f" dev {self.dev}" if self.dev else ""
        return (text + (" onlink" if self.onlink else "")).strip()
