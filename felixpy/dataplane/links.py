"""Workload veths: the host side ``caliXXXXXXXXXXX`` in the node netns, the pod side ``eth0``.

Calico's plumbing (reference 3.2): host side has MAC ee:ee:ee:ee:ee:ee, no IP, proxy_arp; the pod
side has its /32 (/128) address and ``default via 169.254.1.1`` with 169.254.1.1 link-scoped, so
the pod ARPs for 169.254.1.1 and the host answers with its proxy-ARP MAC: all pod traffic is L3-routed
by the node. The kernel proxies ARP only for a destination it routes out of another interface, so
the node needs a route covering 169.254.1.1 (its default route, on any real node).

IPv6 needs no proxying: the pod's ``default via fe80::ecee:eeff:feee:eeee dev eth0`` is the host
veth's own link-local address (EUI-64 of the fixed MAC, made without DAD since ``accept_dad=0``),
so the host answers the pod's neighbour solicitation itself; ``proxy_ndp=1`` is set as Calico does.
The node must forward IPv6 (``net.ipv6.conf.all.forwarding=1``); it needs no IPv6 default route.
The host route ``<pod>/32 dev caliX`` is the RouteTable's job, not this module's.

``host_netns=None`` means this process's namespace (the agent runs in its node's namespace).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from felixpy.dataplane.errors import DataplaneError, LinkNotFound, NetnsNotFound
from felixpy.dataplane.names import DEFAULT_PREFIX
from felixpy.dataplane.netlink import RT_SCOPE_LINK, open_iproute
from felixpy.dataplane.sysctl import (
    container_v6_sysctls,
    forwarding_sysctls,
    host_veth_sysctls,
    netns_path,
    repair_sysctls,
    write_sysctls,
)

log = structlog.get_logger(__name__)

HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"  # the host veth's EUI-64 link-local for HOST_VETH_MAC
IFA_F_NODAD = 0x02


@dataclass(frozen=True, slots=True)
class VethSpec:
    """One workload interface. ``netns`` is CNI_NETNS (a path) or a netns name."""

    host_ifname: str
    netns: str
    addresses: tuple[str, ...]
    container_ifname: str = "eth0"
    mtu: int = 1500


@dataclass(frozen=True, slots=True)
class VethResult:
    host_ifname: str
    host_mac: str
    container_ifname: str
    container_mac: str
    addresses: tuple[str, ...]  # with /32 or /128


def stale_ifaces(
    existing: Iterable[str], wanted: Iterable[str], *, prefix: str = DEFAULT_PREFIX
) -> list[str]:
    """Pure: our-prefix interfaces that no workload wants any more."""
    keep = set(wanted)
    return sorted(name for name in existing if name.startswith(prefix) and name not in keep)


def host_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Pod addresses are always single-host: '10.0.0.5' or '10.0.0.5/26' -> '10.0.0.5/32'."""
    out = []
    for addr in addresses:
        ip = ipaddress.ip_interface(addr).ip
        out.append(f"{ip}/{ip.max_prefixlen}")
    return tuple(out)


class WorkloadLinks:
    """Creates, lists and removes workload veths from the node namespace's point of view."""

    def __init__(self, *, host_netns: str | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        self.host_netns = host_netns
        self.prefix = prefix
        self.reaper = LinkReaper(host_netns=host_netns)

    def create(self, spec: VethSpec) -> VethResult:
        """Idempotent: an existing host veth of the same name (stale ADD) is deleted first.

        Both namespaces are reached over netlink sockets (the pod's through a setns helper
        thread, see ``open_iproute``): no child process, ~10 requests in all.
        """
        path = netns_path(spec.netns)
        if not os.path.exists(path):
            raise NetnsNotFound(path)
        addresses = host_addresses(spec.addresses)
        with open_iproute(self.host_netns) as ipr:
            if ipr.link_lookup(ifname=spec.host_ifname):
                _delete_link(ipr, spec.host_ifname)
                log.info("veth.deleted", iface=spec.host_ifname, reason="stale veth before re-ADD")
            ipr.link(
                "add", ifname=spec.host_ifname, kind="veth", address=HOST_VETH_MAC, mtu=spec.mtu,
                peer={"ifname": spec.container_ifname, "net_ns_fd": path, "mtu": spec.mtu},
            )
            host_mac = self._configure_host(ipr, spec, addresses)
        container_mac = _configure_container(path, spec.container_ifname, addresses)
        log.info("veth.created", iface=spec.host_ifname, netns=spec.netns, addresses=list(addresses),
                 mtu=spec.mtu, reason="workload added")
        return VethResult(spec.host_ifname, host_mac, spec.container_ifname, container_mac, addresses)

    def _configure_host(self, ipr: IPRoute, spec: VethSpec, addresses: tuple[str, ...]) -> str:
        idx, mac = _index_and_mac(ipr, spec.host_ifname)
        if mac != HOST_VETH_MAC:
            raise DataplaneError(f"{spec.host_ifname}: MAC reads back {mac}, wanted {HOST_VETH_MAC}")
        families = {ipaddress.ip_interface(a).version for a in addresses}
        write_sysctls(
            host_veth_sysctls(spec.host_ifname, ipv4=4 in families or not families, ipv6=6 in families),
            netns=self.host_netns, reason=f"host side of workload veth {spec.host_ifname}",
        )
        ipr.link("set", index=idx, state="up")
        return mac

    def repair_sysctls(self, endpoints: Mapping[str, set[int]]) -> int:
        """Re-assert the host side's sysctls of these veths ({iface: IP versions}) and forwarding;
        only values someone changed are written. Returns how many keys were repaired."""
        wanted: dict[str, str] = forwarding_sysctls(ipv6=any(6 in f for f in endpoints.values()))
        for iface, families in endpoints.items():
            wanted |= host_veth_sysctls(iface, ipv4=4 in families or not families, ipv6=6 in families)
        fixed = repair_sysctls(wanted, netns=self.host_netns, reason="periodic refresh found drift")
        return len(fixed)

    def delete(self, host_ifname: str, *, reason: str = "workload removed") -> bool:
        """Delete the host side (the pod side goes with it). False if it was not there."""
        with open_iproute(self.host_netns) as ipr:
            if not _delete_link(ipr, host_ifname):
                return False
        log.info("veth.deleted", iface=host_ifname, reason=reason)
        return True

    def delete_later(self, host_ifname: str, *, reason: str = "workload removed") -> int | None:
        """Queue the host side for deletion by its *index* (a re-ADD reuses the name); the kernel's
        unregister (~20 ms) then happens off the caller's path. Returns the index, None if absent."""
        with open_iproute(self.host_netns) as ipr:
            found = ipr.link_lookup(ifname=host_ifname)
        if not found:
            return None
        self.reaper.submit(int(found[0]), host_ifname, reason=reason)
        return int(found[0])

    def names(self) -> list[str]:
        """Names of the workload interfaces (``<prefix>*`` veths) in the node namespace."""
        with open_iproute(self.host_netns) as ipr:
            names = []
            for msg in ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                info = msg.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
                if name.startswith(self.prefix) and kind == "veth":
                    names.append(name)
        return sorted(names)

    def remove_stale(self, wanted: Iterable[str]) -> list[str]:
        """Delete our interfaces whose workload no longer exists; return their names."""
        removed = []
        for name in stale_ifaces(self.names(), wanted, prefix=self.prefix):
            if self.delete(name, reason="no workload endpoint for it"):
                removed.append(name)
        return removed


class LinkReaper:
    """Deletes interfaces by index in one background thread, each tried a bounded number of times.

    An index is never reused while the kernel counts upwards, so a queued index can only name the
    interface that was looked up: a newer interface of the same name is never touched.
    """

    def __init__(self, *, host_netns: str | None = None, attempts: int = 3) -> None:
        self.host_netns = host_netns
        self.attempts = attempts
        self._queue: queue.Queue[tuple[int, str, str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, index: int, name: str, *, reason: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="felixpy-link-reaper", daemon=True)
                self._thread.start()
        self._queue.put((index, name, reason))

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout: float) -> bool:
        """True once everything submitted has been handled (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:  # the agent's lifetime; each item is bounded by ``attempts``
            index, name, reason = self._queue.get()
            try:
                self._delete(index, name, reason)
            finally:
                self._queue.task_done()

    def _delete(self, index: int, name: str, reason: str) -> None:
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                with open_iproute(self.host_netns) as ipr:
                    gone = not _delete_index(ipr, index)
            except (NetlinkError, OSError) as exc:
                log.warning("veth.delete_failed", iface=name, index=index, attempt=attempt, error=str(exc))
                time.sleep(0.05 * attempt)
                continue
            log.info("veth.deleted", iface=name, index=index, already_gone=gone, reason=reason,
                     ms=round((time.monotonic() - start) * 1000, 1))
            return
        log.error("veth.delete_abandoned", iface=name, index=index, attempts=self.attempts,
                  reason="left to the start-up sweep")


def delete_container_iface(netns: str, ifname: str = "eth0") -> bool:
    """CNI DEL from the pod side; a missing namespace or interface counts as done."""
    path = netns_path(netns)
    if not os.path.exists(path):
        return False
    try:
        with open_iproute(path) as ipr:
            if not _delete_link(ipr, ifname):
                return False
    except NetnsNotFound:  # the runtime removed it meanwhile
        return False
    log.info("veth.deleted", netns=netns, iface=ifname, reason="CNI DEL")
    return True


def _configure_container(path: str, ifname: str, addresses: tuple[str, ...]) -> str:
    if any(":" in a for a in addresses):  # before the address: a disabled stack refuses it
        write_sysctls(container_v6_sysctls(ifname), netns=path, reason="pod has an IPv6 address")
    with open_iproute(path) as ipr:
        idx, mac = _index_and_mac(ipr, ifname)
        for addr in addresses:
            ip, plen = addr.split("/")
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            ipr.addr("add", index=idx, address=ip, prefixlen=int(plen), family=family,
                     flags=IFA_F_NODAD if family == socket.AF_INET6 else 0)
        ipr.link("set", index=idx, state="up")
        if any(":" not in a for a in addresses):
            ipr.route("replace", dst=f"{GATEWAY_V4}/32", oif=idx, scope=RT_SCOPE_LINK)
            ipr.route("replace", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=idx)
        if any(":" in a for a in addresses):
            ipr.route("replace", dst="::/0", gateway=GATEWAY_V6, oif=idx, family=socket.AF_INET6)
        return mac


def _index_and_mac(ipr: IPRoute, name: str) -> tuple[int, str]:
    """One RTM_GETLINK: the interface's index and MAC (LinkNotFound when it is not there)."""
    try:
        link = ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            raise LinkNotFound(name) from exc
        raise
    return int(link["index"]), str(link.get_attr("IFLA_ADDRESS"))


def _delete_index(ipr: IPRoute, index: int) -> bool:
    """Delete interface ``index``; False when it was already gone."""
    return _delete(ipr, index=index)


def _delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete ``name``; False when it was already gone (another DEL, or its pair went first)."""
    return _delete(ipr, ifname=name)


def _delete(ipr: IPRoute, **which: Any) -> bool:
    try:
        ipr.link("del", **which)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True
