"""Encapsulation devices: IPIP ``tunl0`` and VXLAN ``vxlan.calico``, plus VXLAN's neighbour/FDB state.

Calico's shapes (reference 3.5/3.6): tunl0 carries the node's IPIP tunnel address as a /32 and the
IPIP MTU; vxlan.calico has VNI 4096, UDP 4789, ``local`` = the parent interface's IP, learning off,
tx checksum offload off (ethtool), the VTEP MAC, and the VXLAN tunnel address /32. For each remote
VTEP: ``<tunnel IP> lladdr <MAC> PERMANENT`` neighbour and ``<MAC> dst <node IP>`` FDB entry. The
routes over these devices are RouteTable's (``via <remote tunnel IP> dev vxlan.calico onlink``).
A kernel without the ``ipip``/``vxlan`` link kinds raises :class:`EncapUnsupported`.
"""

from __future__ import annotations

import errno
import hashlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from felixpy.dataplane.errors import DataplaneError, LinkNotFound
from felixpy.dataplane.netlink_ops import open_iproute
from felixpy.dataplane.sysctl import run_in_netns
from felixpy.dataplane.tool_runner import run
from felixpy.netlinkio import query
from felixpy.netlinkio.route_writer import route_socket

if TYPE_CHECKING:  # pyroute2 is imported when a device is made or removed, not at start
    from pyroute2 import IPRoute

log = structlog.get_logger(__name__)
IPIP_DEVICE = "tunl0"
VXLAN_DEVICE = "vxlan.calico"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


class EncapUnsupported(DataplaneError):
    """The kernel cannot create this kind of tunnel device (module missing)."""


def vtep_mac(node_name: str) -> str:
    """Calico's derived VTEP MAC: 0x66 then the first 5 bytes of sha1(node name)."""
    digest = hashlib.sha1(node_name.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))


@dataclass(frozen=True, slots=True)
class VxlanConfig:
    parent: str  # e.g. eth0
    parent_ip: str  # local address of the tunnel
    address: str  # the node's VXLAN tunnel IP (installed as /32)
    mac: str
    mtu: int = 1450
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT


@dataclass(frozen=True, slots=True)
class Vtep:
    """A remote node's VTEP."""

    tunnel_ip: str
    mac: str
    node_ip: str


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _set_single_address(ipr: IPRoute, idx: int, address: str, reason: str) -> None:
    """The device gets ``address``/32 and no other IPv4 address."""
    have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
    for other in sorted(have - {address}):
        ipr.addr("del", index=idx, address=other, prefixlen=32)
        log.info("encap.address_removed", index=idx, address=other, reason=reason)
    if address not in have:
        ipr.addr("add", index=idx, address=address, prefixlen=32)
        log.info("encap.address_added", index=idx, address=f"{address}/32", reason=reason)


def _create_tunl0(ipr: IPRoute) -> int:
    """Make tunl0 appear, as Calico does: ask for an ``ipip`` link named tunl0.

    Where the ``ipip`` module is not loaded yet, the request loads it, the module creates its
    fallback device ``tunl0`` in every namespace, and the request itself then answers EEXIST:
    that is success, the device we asked for is there. Any other error (``Operation not
    supported``, unknown link kind) means this kernel has no IPIP.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("add", ifname=IPIP_DEVICE, kind="ipip")
        reason = "IPIP pool in use"
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise EncapUnsupported(f"cannot create {IPIP_DEVICE} (ipip module?): {exc}") from exc
        reason = "IPIP pool in use (the ipip module's fallback device)"
    idx = _index(ipr, IPIP_DEVICE)
    if idx is None:
        raise EncapUnsupported(f"{IPIP_DEVICE} did not appear after creating it")
    log.info("encap.device_created", device=IPIP_DEVICE, reason=reason)
    return idx


def ensure_ipip(address: str, *, mtu: int = 1440, netns: str | None = None) -> int:
    """tunl0 up with ``address``/32 and ``mtu``; returns its ifindex."""
    with open_iproute(netns) as ipr:
        idx = _index(ipr, IPIP_DEVICE)
        if idx is None:
            idx = _create_tunl0(ipr)
        ipr.link("set", index=idx, mtu=mtu, state="up")
        _set_single_address(ipr, idx, address, "IPIP tunnel address")
        return idx


def _vxlan_matches(msg: object, cfg: VxlanConfig, parent_idx: int) -> bool:
    info = msg.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan" or data is None:
        return False
    return (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_PORT"),
            data.get_attr("IFLA_VXLAN_LOCAL"), data.get_attr("IFLA_VXLAN_LINK")) == (
        cfg.vni, cfg.port, cfg.parent_ip, parent_idx)


def ensure_vxlan(cfg: VxlanConfig, *, netns: str | None = None) -> int:
    """vxlan.calico as configured (recreated if VNI/port/local/parent differ); returns its ifindex."""
    from pyroute2.netlink.exceptions import NetlinkError

    with open_iproute(netns) as ipr:
        parent_idx = _index(ipr, cfg.parent)
        if parent_idx is None:
            raise LinkNotFound(cfg.parent)
        idx = _index(ipr, VXLAN_DEVICE)
        if idx is not None and not _vxlan_matches(ipr.get_links(idx)[0], cfg, parent_idx):
            ipr.link("del", index=idx)
            log.info("encap.device_deleted", device=VXLAN_DEVICE, reason="parameters differ")
            idx = None
        if idx is None:
            try:
                ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=cfg.vni, vxlan_port=cfg.port,
                         vxlan_local=cfg.parent_ip, vxlan_link=parent_idx, vxlan_learning=0)
            except NetlinkError as exc:
                raise EncapUnsupported(f"cannot create {VXLAN_DEVICE} (vxlan module?): {exc}") from exc
            idx = _index(ipr, VXLAN_DEVICE)
            assert idx is not None
            log.info("encap.device_created", device=VXLAN_DEVICE, vni=cfg.vni, port=cfg.port,
                     local=cfg.parent_ip, parent=cfg.parent, reason="VXLAN pool in use")
        ipr.link("set", index=idx, address=cfg.mac, mtu=cfg.mtu, state="up")
        _set_single_address(ipr, idx, cfg.address, "VXLAN tunnel address")
    run(["ethtool", "-K", VXLAN_DEVICE, "tx-checksum-ip-generic", "off"], netns=netns)
    return idx


def delete_device(name: str, *, netns: str | None = None, reason: str = "encapsulation disabled") -> bool:
    sock = (lambda: run_in_netns(netns, route_socket)) if netns else route_socket
    if query.link_index(name, sock=sock) is None:
        return False  # the usual case (no such pool): one raw RTM_GETLINK, no pyroute2
    with open_iproute(netns) as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        ipr.link("del", index=idx)
    log.info("encap.device_deleted", device=name, reason=reason)
    return True


class VxlanFdb:
    """Desired-state driver for vxlan.calico's PERMANENT neighbours and FDB entries."""

    def __init__(self, *, netns: str | None = None, device: str = VXLAN_DEVICE) -> None:
        self.netns = netns
        self.device = device
        self._desired: dict[str, Vtep] = {}

    def set_vteps(self, vteps: Iterable[Vtep]) -> None:
        self._desired = {v.tunnel_ip: v for v in vteps}

    def apply(self) -> tuple[int, int]:
        """Converge neighbours and FDB; returns (entries written, entries removed)."""
        with open_iproute(self.netns) as ipr:
            idx = _index(ipr, self.device)
            if idx is None:
                raise LinkNotFound(self.device)
            neigh = {n.get_attr("NDA_DST"): str(n.get_attr("NDA_LLADDR"))
                     for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_INET)
                     if n["state"] & NUD_PERMANENT}
            fdb = {str(f.get_attr("NDA_LLADDR")): f.get_attr("NDA_DST")
                   for f in ipr.fdb("dump", ifindex=idx) if f.get_attr("NDA_DST")}
            added = self._write(ipr, idx, neigh, fdb)
            removed = self._remove(ipr, idx, neigh, fdb)
        return added, removed

    def _write(self, ipr: IPRoute, idx: int, neigh: dict[str, str], fdb: dict[str, str]) -> int:
        n = 0
        for v in self._desired.values():
            if neigh.get(v.tunnel_ip) != v.mac:
                ipr.neigh("replace", dst=v.tunnel_ip, lladdr=v.mac, ifindex=idx, state=NUD_PERMANENT)
                log.info("vxlan.neigh_set", ip=v.tunnel_ip, mac=v.mac, reason="remote VTEP")
                n += 1
            if fdb.get(v.mac) != v.node_ip:
                ipr.fdb("replace", ifindex=idx, lladdr=v.mac, dst=v.node_ip,
                        state=NUD_PERMANENT, flags=NTF_SELF)
                log.info("vxlan.fdb_set", mac=v.mac, dst=v.node_ip, reason="remote VTEP")
                n += 1
        return n

    def _remove(self, ipr: IPRoute, idx: int, neigh: dict[str, str], fdb: dict[str, str]) -> int:
        macs = {v.mac: v.node_ip for v in self._desired.values()}
        n = 0
        for ip, mac in neigh.items():
            if ip not in self._desired:
                ipr.neigh("del", dst=ip, lladdr=mac, ifindex=idx)
                log.info("vxlan.neigh_removed", ip=ip, mac=mac, reason="VTEP gone")
                n += 1
        for mac, dst in fdb.items():
            if macs.get(mac) != dst and mac not in macs:
                ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst, flags=NTF_SELF)
                log.info("vxlan.fdb_removed", mac=mac, dst=dst, reason="VTEP gone")
                n += 1
        return n
