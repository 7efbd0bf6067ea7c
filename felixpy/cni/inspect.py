"""Read-only kernel checks for CNI CHECK and idempotent re-ADD (pyroute2, never writes).

pyroute2 is imported by the first check, not with this module: the agent imports the CNI handler
at start, and importing pyroute2 costs ~0.4 s of CPU and ~21 MB of RSS there.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from felixpy.dataplane.sysctl import netns_path

if TYPE_CHECKING:
    from pyroute2 import IPRoute


@dataclass(frozen=True, slots=True)
class IfaceInfo:
    mac: str
    addresses: tuple[str, ...]  # CIDRs as configured
    up: bool


def _iface(ipr: IPRoute, ifname: str) -> IfaceInfo | None:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    link = ipr.get_links(found[0])[0]
    addrs = tuple(
        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
        for a in ipr.get_addr(index=found[0])
        if a["scope"] == 0
    )
    return IfaceInfo(str(link.get_attr("IFLA_ADDRESS")), addrs, link.get_attr("IFLA_OPERSTATE") != "DOWN")


def container_iface(netns: str, ifname: str) -> IfaceInfo | None:
    path = netns_path(netns)
    if not os.path.exists(path):
        return None
    from pyroute2 import IPRoute

    with IPRoute(netns=path) as ipr:
        return _iface(ipr, ifname)


def host_iface(ifname: str) -> IfaceInfo | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return _iface(ipr, ifname)


def host_route_to(address: str, ifname: str) -> bool:
    """True when the node has ``<address>/32 dev <ifname>`` (any protocol) in the main table."""
    ip, _, plen = address.partition("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    full = "128" if family == socket.AF_INET6 else "32"
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        want_len = int(plen or full)
        return any(
            r.get_attr("RTA_OIF") == found[0] and r.get_attr("RTA_DST") == ip and r["dst_len"] == want_len
            for r in ipr.get_routes(family=family, table=254)
        )
