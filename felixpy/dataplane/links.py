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

import structlog

from felixpy.dataplane.errors import DataplaneError, NetnsNotFound
from felixpy.dataplane.iface_names import DEFAULT_PREFIX
from felixpy.dataplane.prefetch import Prefetch, take
from felixpy.dataplane.sysctl import (
    container_v6_sysctls,
    forwarding_sysctls,
    host_veth_sysctls,
    netns_path,
    repair_sysctls,
    run_in_netns,
    write_sysctls,
)
from felixpy.dataplane.sysctl import write_here as _write_sysctls_here
from felixpy.netlinkio import veth
from felixpy.netlinkio.messages import Hop, Route

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
class Pair:
    """A veth pair made, its pod side not yet addressed (see WorkloadLinks.make_pair)."""

    spec: VethSpec
    pod_index: int  # the pod side's ifindex in the pod's namespace (0: not known, looked up)


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
        self._prefetch: Prefetch[list[str]] | None = None

    def prefetch(self) -> None:
        """Start the link dump of the start-up sweep now, in its own thread
        (``felixpy.dataplane.prefetch``). An early list can delete no more than a fresh one: a veth
        made since (a CNI ADD meanwhile) is not in it, so the sweep leaves it alone; one gone since
        is skipped by the delete."""
        if self._prefetch is None:
            self._prefetch = Prefetch("links", self.names)

    def create(self, spec: VethSpec) -> VethResult:
        """Idempotent: an existing host veth of the same name (stale ADD) is deleted first.

        Raw rtnetlink (``felixpy.netlinkio.veth``), one round trip per step: (1) in the node
        namespace, delete a stale veth of that name, create the pair (the pod side made straight
        in the pod's namespace) and read the host side back; (2) the host side's sysctls, written
        to /proc/sys directly; (3) the host side up; (4) in the pod's namespace (a socket opened
        there by a short setns thread), the addresses, link up, the gateway and default routes and
        the pod side's MAC, all in one send. No child process, no pyroute2.

        Steps 1-3 (:meth:`make_pair`) need only the address families, not the addresses: the CNI
        handler runs them while IPAM chooses the addresses, then step 4 (:meth:`address_pod`).
        """
        addresses = host_addresses(spec.addresses)
        families = frozenset(ipaddress.ip_interface(a).version for a in addresses)
        return self.address_pod(self.make_pair(spec, families), addresses)

    def make_pair(self, spec: VethSpec, families: frozenset[int]) -> Pair:
        """Steps 1-3 of :meth:`create` (``spec.addresses`` unused): the pair, the host side's
        sysctls for ``families`` (IP versions; none = IPv4's), the host side up."""
        path = netns_path(spec.netns)
        try:
            netns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsNotFound(path) from None
        try:
            with self._conversation(self.host_netns) as host:
                deleted, host_link = _create_pair(host, spec, netns_fd)
                if deleted:
                    log.info("veth.deleted", iface=spec.host_ifname, reason="stale veth before re-ADD")
                if host_link.mac != HOST_VETH_MAC:
                    raise DataplaneError(
                        f"{spec.host_ifname}: MAC reads back {host_link.mac}, wanted {HOST_VETH_MAC}"
                    )
                wanted = host_veth_sysctls(
                    spec.host_ifname, ipv4=4 in families or not families, ipv6=6 in families
                )
                write_sysctls(
                    wanted, netns=self.host_netns, reason=f"host side of workload veth {spec.host_ifname}",
                )
                host.check([veth.Request(veth.pack_set_up(seq=host.seq(), index=host_link.index),
                                         f"set {spec.host_ifname} up")])
        except veth.NetlinkFailure as exc:
            raise DataplaneError(f"veth {spec.host_ifname}: {exc}") from exc
        finally:
            os.close(netns_fd)
        return Pair(spec, host_link.peer_index)

    def address_pod(self, pair: Pair, addresses: tuple[str, ...]) -> VethResult:
        """Step 4 of :meth:`create`: the pod side's addresses (host addresses), up, routes."""
        spec = pair.spec
        addresses = host_addresses(addresses)
        try:
            container_mac = _configure_container(
                netns_path(spec.netns), spec.container_ifname, addresses, pair.pod_index
            )
        except veth.NetlinkFailure as exc:
            raise DataplaneError(f"pod side {spec.container_ifname} in {spec.netns}: {exc}") from exc
        log.info("veth.created", iface=spec.host_ifname, netns=spec.netns, addresses=list(addresses),
                 mtu=spec.mtu, reason="workload added")
        return VethResult(spec.host_ifname, HOST_VETH_MAC, spec.container_ifname, container_mac, addresses)

    def exists(self, host_ifname: str) -> bool:
        """Whether ``host_ifname`` is an interface of the node namespace (one RTM_GETLINK)."""
        with self._conversation(self.host_netns) as conv:
            seq = conv.seq()
            codes, links = conv.run([veth.Request(veth.pack_get_link(seq=seq, name=host_ifname), "get")])
        if seq in links:
            return True
        if codes.get(seq) not in (0, errno.ENODEV):
            raise DataplaneError(f"looking up {host_ifname}: errno {codes.get(seq)}")
        return False

    @staticmethod
    def _conversation(netns: str | None) -> veth.Conversation:
        sock = run_in_netns(netns, veth.route_socket) if netns else veth.route_socket()
        return veth.Conversation(sock)

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
        if not _delete_link(self.host_netns, name=host_ifname):
            return False
        log.info("veth.deleted", iface=host_ifname, reason=reason)
        return True

    def delete_later(self, host_ifname: str, *, reason: str = "workload removed") -> int | None:
        """Queue the host side for deletion by its *index* (a re-ADD reuses the name); the kernel's
        unregister (~20 ms) then happens off the caller's path. Returns the index, None if absent."""
        with self._conversation(self.host_netns) as conv:
            seq = conv.seq()
            codes, links = conv.run([veth.Request(veth.pack_get_link(seq=seq, name=host_ifname), "get")])
        if seq not in links:
            if codes.get(seq) not in (0, errno.ENODEV):
                raise DataplaneError(f"looking up {host_ifname}: errno {codes.get(seq)}")
            return None
        index = veth.parse_link(links[seq]).index
        self.reaper.submit(index, host_ifname, reason=reason)
        return index

    def names(self) -> list[str]:
        """Names of the workload interfaces (``<prefix>*`` veths) in the node namespace."""
        with self._conversation(self.host_netns) as conv:
            links = conv.link_kinds()
        names = [name for name, kind in links if name.startswith(self.prefix) and kind == "veth"]
        return sorted(names)

    def remove_stale(self, wanted: Iterable[str]) -> list[str]:
        """Delete our interfaces whose workload no longer exists; return their names."""
        names = take(self._prefetch)
        removed = []
        for name in stale_ifaces(self.names() if names is None else names, wanted, prefix=self.prefix):
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
                gone = not _delete_link(self.host_netns, index=index)
            except OSError as exc:
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
        if not _delete_link(path, name=ifname):
            return False
    except NetnsNotFound:  # the runtime removed it meanwhile
        return False
    log.info("veth.deleted", netns=netns, iface=ifname, reason="CNI DEL")
    return True


def _create_pair(host: veth.Conversation, spec: VethSpec, netns_fd: int) -> tuple[bool, veth.LinkInfo]:
    """One send in the node namespace: delete a stale ``host_ifname``, create the pair, read the
    host side back. Returns (a stale one was deleted, the host side)."""
    delete, create, read = host.seq(), host.seq(), host.seq()
    links = host.check([
        veth.Request(veth.pack_del_link(seq=delete, name=spec.host_ifname), "delete stale veth",
                     done_on=(errno.ENODEV,)),
        veth.Request(veth.pack_new_veth(seq=create, name=spec.host_ifname, mac=HOST_VETH_MAC, mtu=spec.mtu,
                                        peer=spec.container_ifname, peer_netns_fd=netns_fd),
                     f"create veth {spec.host_ifname} (peer {spec.container_ifname})"),
        veth.Request(veth.pack_get_link(seq=read, name=spec.host_ifname), f"read {spec.host_ifname}"),
    ])
    return host.last_codes.get(delete) == 0, veth.parse_link(links[read])


def _configure_container(path: str, ifname: str, addresses: tuple[str, ...], index: int) -> str:
    """The pod side, in one send from a socket in the pod's namespace: addresses, up, routes, and its
    MAC read back. ``index`` is the pod side's ifindex (the host side's IFLA_LINK); 0: looked up."""
    v6 = any(":" in a for a in addresses)

    def open_there() -> socket.socket:
        if v6:  # before the address: a disabled stack refuses it
            _write_sysctls_here(container_v6_sysctls(ifname))
        return veth.route_socket()

    with veth.Conversation(run_in_netns(path, open_there)) as pod:
        if v6:
            log.info("sysctl.set", netns=path, values=container_v6_sysctls(ifname),
                     reason="pod has an IPv6 address")
        if not index:
            seq = pod.seq()
            links = pod.check([veth.Request(veth.pack_get_link(seq=seq, name=ifname), f"read {ifname}")])
            index = veth.parse_link(links[seq]).index
        requests = [
            veth.Request(
                veth.pack_new_addr(seq=pod.seq(), index=index, address=addr,
                                   flags=IFA_F_NODAD if ":" in addr else 0),
                f"add address {addr}",
            )
            for addr in addresses
        ]
        requests.append(veth.Request(veth.pack_set_up(seq=pod.seq(), index=index), f"set {ifname} up"))
        routes: list[Route] = []
        if any(":" not in a for a in addresses):
            routes.append(Route(f"{GATEWAY_V4}/32", (Hop(dev=ifname),), veth.RTPROT_BOOT))
            routes.append(Route("0.0.0.0/0", (Hop(GATEWAY_V4, ifname),), veth.RTPROT_BOOT))
        if v6:
            routes.append(Route("::/0", (Hop(GATEWAY_V6, ifname),), veth.RTPROT_BOOT))
        requests += [
            veth.Request(veth.pack_route(seq=pod.seq(), route=r, index=index), f"route {r.dst}")
            for r in routes
        ]
        read = pod.seq()
        requests.append(veth.Request(veth.pack_get_link(seq=read, index=index), f"read {ifname}"))
        links = pod.check(requests)
        return veth.parse_link(links[read]).mac


def _delete_link(netns: str | None, *, name: str = "", index: int = 0) -> bool:
    """Delete interface ``name`` or ``index`` of ``netns`` (None: this one) with one raw RTM_DELLINK;
    False when it was already gone (another DEL, or its pair went first). Raw, not pyroute2: the
    agent's start does not import pyroute2 (~0.2-0.4 s, ~12 MB), and a pod DEL would."""
    sock = run_in_netns(netns, veth.route_socket) if netns else veth.route_socket()
    with veth.Conversation(sock) as conv:
        seq = conv.seq()
        what = f"delete link {name or index}"
        codes, _links = conv.run([veth.Request(veth.pack_del_link(seq=seq, name=name, index=index), what)])
    code = codes.get(seq, 0)
    if code == errno.ENODEV:
        return False
    if code:
        raise veth.NetlinkFailure(code, what)
    return True
