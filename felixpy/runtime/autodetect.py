"""Node address autodetection, like calico-node's IP_AUTODETECTION_METHOD (IPv4) and
IP6_AUTODETECTION_METHOD (IPv6); reads netlink only.

first-found      the first global address on an interface that is not ours or a known virtual one
interface=REGEX  the first address on an interface whose name matches REGEX
can-reach=ADDR   the source address the kernel would use to reach ADDR
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from felixpy.netlinkio import query

EXCLUDED_IFACES = re.compile(
    r"^(lo|docker.*|cali.*|tunl.*|vxlan.*|virbr.*|veth.*|kube-ipvs.*|cni.*|flannel.*)$"
)


@dataclass(frozen=True, slots=True)
class HostAddress:
    iface: str
    cidr: str  # address/prefix, e.g. 10.0.0.5/24


def pick(
    addresses: list[HostAddress], method: str, setting: str = "IP_AUTODETECTION_METHOD"
) -> HostAddress | None:
    """Pure part of first-found / interface=REGEX over (interface, address) pairs in kernel order."""
    if method.startswith("interface="):
        pattern = re.compile(method.split("=", 1)[1])
        return next((a for a in addresses if pattern.fullmatch(a.iface)), None)
    if method == "first-found":
        return next((a for a in addresses if not EXCLUDED_IFACES.match(a.iface)), None)
    raise ValueError(f"unsupported {setting} {method!r}")


def host_addresses(family: int = socket.AF_INET) -> list[HostAddress]:
    """Global-scope addresses of one family (IPv6 link-local and host-scope ones have another scope)."""
    # if_nameindex, not a pyroute2 link dump: a node with thousands of veths decoded every
    # attribute of every link just to name the few that carry an IPv4 address
    # (and a raw address dump, not pyroute2's: importing it alone cost ~0.4 s of every start)
    names = dict(socket.if_nameindex())
    return [
        HostAddress(names.get(a.ifindex, ""), f"{a.address}/{a.prefixlen}")
        for a in query.addresses(family)
        if a.scope == 0  # global only
    ]


def detect(method: str, family: int = socket.AF_INET) -> HostAddress | None:
    addresses = host_addresses(family)
    setting = "IP6_AUTODETECTION_METHOD" if family == socket.AF_INET6 else "IP_AUTODETECTION_METHOD"
    if method.startswith("can-reach="):
        target = method.split("=", 1)[1]
        from pyroute2 import IPRoute  # only for can-reach (importing it costs ~0.4 s)

        dst = socket.getaddrinfo(target, None, family)[0][4][0]
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=dst)
        src = routes[0].get_attr("RTA_PREFSRC") if routes else None
        return next((a for a in addresses if a.cidr.split("/")[0] == src), None)
    return pick(addresses, method, setting)
