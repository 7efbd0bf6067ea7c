"""Start-up steps calico-node does before Felix runs: node IP, Node resource, default pool,
tunnel addresses, Felix parameters and the pod MTU file. Each step is idempotent (a restarted
agent converges to the same state) and every read-modify-write is a CAS with bounded retry.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from felixpy.datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound
from felixpy.netlinkio import query
from felixpy.private_files import PRIVATE, private_dir, write_file
from felixpy.resources import FelixConfiguration, IPPool, Node
from felixpy.resources.stored import ClusterInformation
from felixpy.runtime import autodetect
from felixpy.runtime.settings import FelixParams, Settings
from ipam.ipam import IPAM
from ipam.tunnel import tunnel_address

if TYPE_CHECKING:
    from felixpy.datastore.backend import Backend

log = structlog.get_logger(__name__)
CAS_RETRIES = 20
OVERHEAD = {"ipip": 20, "vxlan": 50, "wireguard": 60, "wireguard-v6": 80}


LOCK_POLL_FIRST = 1.0  # seconds between reads of ClusterInformation while locked, doubling ...
LOCK_POLL_MAX = 10.0  # ... up to this


def datastore_locked(backend: Backend) -> bool:
    """ClusterInformation ``default`` says ``datastoreReady: false`` (absent or unset = not locked)."""
    try:
        info = backend.get(ClusterInformation, "default")
    except NotFound:
        return False
    return info.spec.datastore_ready is False


def wait_until_unlocked(
    backend: Backend,
    limit: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Before any write, wait while the datastore is locked (``felixctl datastore migrate lock``).

    calico-node does not start while a migration holds the datastore: it waits for the unlock
    rather than register itself or claim tunnel addresses in a datastore being copied. The wait
    is bounded by ``limit`` seconds (FELIXPY_DATASTORE_LOCK_WAIT); past it, a DatastoreError (the
    agent exits 1 and its supervisor restarts it). Returns the seconds waited.
    """
    start = clock()
    delay = LOCK_POLL_FIRST
    logged = False
    while datastore_locked(backend):
        waited = clock() - start
        if waited >= limit:
            raise DatastoreError(
                f"datastore locked (ClusterInformation default datastoreReady: false) for {waited:.0f}s, "
                f"longer than FELIXPY_DATASTORE_LOCK_WAIT={limit:g}s; run `felixctl datastore migrate "
                "unlock` once the migration is done"
            )
        if not logged or delay >= LOCK_POLL_MAX:
            log.warning(
                "datastore locked, waiting",
                reason="ClusterInformation default datastoreReady: false (felixctl datastore migrate lock)",
                waited_seconds=round(waited, 1),
                limit_seconds=limit,
            )
            logged = True
        sleep(min(delay, max(0.0, limit - waited)))
        delay = min(delay * 2, LOCK_POLL_MAX)
    waited = clock() - start
    if logged:
        log.info("datastore unlocked, starting", waited_seconds=round(waited, 1))
    return waited


class AddressNotFound(RuntimeError):
    """IP/IP6=autodetect found no address with its method: the agent stops with this one line."""


def node_address(settings: Settings) -> autodetect.HostAddress | None:
    """The node's IPv4 address/prefix: IP env (explicit, or autodetect), None when IP=none."""
    return _address(settings.ip or "autodetect", settings.ip_autodetection_method, socket.AF_INET)


def node_address6(settings: Settings) -> autodetect.HostAddress | None:
    """The node's IPv6 address/prefix: IP6 env (explicit, or autodetect), None when IP6=none (the
    default, as calico-node's)."""
    return _address(settings.ip6 or "none", settings.ip6_autodetection_method, socket.AF_INET6)


def _address(value: str, method: str, family: int) -> autodetect.HostAddress | None:
    v6 = family == socket.AF_INET6
    name, version = ("IP6", "IPv6") if v6 else ("IP", "IPv4")
    ip = value.strip()
    if ip.lower() == "none":
        return None
    if ip.lower() == "autodetect":
        found = autodetect.detect(method, family)
        if found is None:
            raise AddressNotFound(f"no {version} address found with {name}_AUTODETECTION_METHOD={method}")
        return found
    given = ipaddress.ip_interface(ip)  # Settings checked it is one of the right family
    host = autodetect.host_addresses(family)
    if "/" not in ip:
        match = [a for a in host if ipaddress.ip_interface(a.cidr).ip == given.ip]
        return match[0] if match else autodetect.HostAddress("", f"{given.ip}/{given.max_prefixlen}")
    match = [a for a in host if ipaddress.ip_interface(a.cidr) == given]
    return match[0] if match else autodetect.HostAddress("", str(given))


def register_node(
    backend: Backend, settings: Settings, address: str | None, address6: str | None = None
) -> Node:
    """Create or update our Node with spec.bgp.ipv4Address / asNumber (CAS, retried)."""
    for _ in range(CAS_RETRIES):
        try:
            node = backend.get(Node, settings.nodename)
        except NotFound:
            node = Node.model_validate({"metadata": {"name": settings.nodename}, "spec": {}})
            _set_identity(node, settings, address, address6)
            try:
                created = backend.create(node)
                _log_identity("node.registered", settings, address, address6, "first start")
                return created
            except AlreadyExists:
                continue
        if not _set_identity(node, settings, address, address6):
            return node
        try:
            updated = backend.update(node)
            _log_identity("node.updated", settings, address, address6, "address/AS/RR changed")
            return updated
        except Conflict:
            continue
    raise Conflict(f"could not register node {settings.nodename}: too many concurrent updates")


def _log_identity(
    event: str, settings: Settings, address: str | None, address6: str | None, reason: str
) -> None:
    log.info(event, node=settings.nodename, address=address, address6=address6, reason=reason)


def _set_identity(node: Node, settings: Settings, address: str | None, address6: str | None = None) -> bool:
    """BGP fields, plus the route-reflector cluster ID and label in --route-reflector mode."""
    changed = _set_bgp(node, settings, address, address6)
    if settings.route_reflector and settings.rr_label:
        labels = dict(node.metadata.labels or {})
        if labels.get(settings.rr_label) != "true":
            node.metadata.labels = labels | {settings.rr_label: "true"}
            changed = True
    return changed


def _set_bgp(node: Node, settings: Settings, address: str | None, address6: str | None = None) -> bool:
    """Set the BGP fields we own; True when something changed."""
    before = node.to_dict().get("spec", {}).get("bgp")
    cluster_id = settings.rr_cluster_id if settings.route_reflector else None
    if address is None and address6 is None and settings.as_number is None and cluster_id is None:
        return False
    bgp = dict(before or {})
    if address is not None:
        bgp["ipv4Address"] = address
    if address6 is not None:
        bgp["ipv6Address"] = address6
    if settings.as_number is not None:
        bgp["asNumber"] = int(settings.as_number) if str(settings.as_number).isdigit() else settings.as_number
    if cluster_id is not None:
        bgp["routeReflectorClusterID"] = cluster_id
    if bgp == before:
        return False
    node.spec = type(node.spec).model_validate(
        node.spec.model_dump(by_alias=True, exclude_none=True) | {"bgp": bgp}
    )
    return True


def ensure_default_pool(backend: Backend, settings: Settings) -> None:
    """calico-node's default pools: an IPv4 one when no IPv4 pool exists (CALICO_IPV4POOL_*), and
    an IPv6 one when CALICO_IPV6POOL_CIDR is set and no IPv6 pool exists; NO_DEFAULT_POOLS: none."""
    if settings.no_default_pools:
        return
    pools, _ = backend.list(IPPool)
    versions = {ipaddress.ip_network(p.spec.cidr, strict=False).version for p in pools}
    for pool in default_pools(settings):
        if ipaddress.ip_network(pool.spec.cidr).version not in versions:
            _create_pool(backend, pool)


def default_pools(settings: Settings) -> list[IPPool]:
    """The default pools the settings ask for (pure)."""
    v4 = {
        "cidr": settings.default_pool_cidr or "192.168.0.0/16",
        "blockSize": settings.default_pool_block_size,
        "ipipMode": settings.default_pool_ipip,
        "vxlanMode": settings.default_pool_vxlan,
        "natOutgoing": settings.default_pool_nat_outgoing,
        "nodeSelector": settings.default_pool_node_selector,
    }
    specs = [("default-ipv4-ippool", v4)]
    if settings.default_pool_v6_cidr:
        v6 = {
            "cidr": settings.default_pool_v6_cidr,
            "blockSize": settings.default_pool_v6_block_size,
            "vxlanMode": settings.default_pool_v6_vxlan,
            "natOutgoing": settings.default_pool_v6_nat_outgoing,
            "nodeSelector": settings.default_pool_v6_node_selector,
        }
        specs.append(("default-ipv6-ippool", v6))
    return [IPPool.model_validate({"metadata": {"name": name}, "spec": spec}) for name, spec in specs]


def _create_pool(backend: Backend, pool: IPPool) -> None:
    try:
        backend.create(pool)
        log.info("ippool.created", pool=pool.name, cidr=pool.spec.cidr, reason="no pool of its IP version")
    except AlreadyExists:
        pass


def encap_kinds(backend: Backend) -> set[str]:
    pools, _ = backend.list(IPPool)
    out = set()
    for p in pools:
        if p.spec.disabled:
            continue
        if p.spec.ipip_mode != "Never":
            out.add("ipip")
        if p.spec.vxlan_mode != "Never":
            out.add("vxlan")
    return out


def ensure_tunnel_addresses(ipam: IPAM, nodename: str, kinds: set[str]) -> dict[str, str]:
    out = {}
    for kind in sorted(kinds):
        out[kind] = tunnel_address(ipam, nodename, kind)
        log.info("tunnel.address", kind=kind, address=out[kind], reason="pool uses encapsulation")
    return out


def felix_params(backend: Backend, settings: Settings) -> FelixParams:
    def spec_of(name: str) -> dict[str, object]:
        try:
            return backend.get(FelixConfiguration, name).spec.model_dump(by_alias=True, exclude_none=True)
        except NotFound:
            return {}

    return FelixParams.resolve(settings.env, spec_of(f"node.{settings.nodename}"), spec_of("default"))


def host_mtu(host_iface: str) -> int:
    """MTU of the interface holding the node's IP (1500 when unknown)."""
    if host_iface:
        found = query.link(host_iface)  # one raw RTM_GETLINK (pyroute2 is not imported at start)
        if found and found[1]:
            return found[1]
    return 1500


def pod_mtu(params: FelixParams, mtu: int, kinds: set[str]) -> int:
    """FELIX_VETHMTU if set, else the smallest MTU of the encapsulations in use (Felix's rule): each
    its configured MTU (ipipMTU, vxlanMTU, wireguardMTU, wireguardMTUV6) or the host MTU minus its
    overhead."""
    if params.vethMTU:
        return params.vethMTU
    configured = {"ipip": params.ipipMTU, "vxlan": params.vxlanMTU, "wireguard": params.wireguardMTU,
                  "wireguard-v6": params.wireguardMTUV6}
    used = set(kinds) | ({"wireguard"} if params.wireguardEnabled else set())
    used |= {"wireguard-v6"} if params.wireguardEnabledV6 else set()
    return min((configured[k] or mtu - OVERHEAD[k] for k in used if k in OVERHEAD), default=mtu)


def write_mtu_file(path: str, mtu: int) -> None:
    private_dir(os.path.dirname(path))
    write_file(path, f"{mtu}\n", PRIVATE)
    log.info("mtu.written", path=path, mtu=mtu, reason="pod veth MTU for the CNI handler")


def write_nodename_file(state_dir: str, nodename: str) -> None:
    """``<state dir>/nodename``, as calico-node writes /var/lib/calico/nodename: the CNI IPAM plugin
    reads it when its configuration names no node."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "nodename")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(nodename)
    os.replace(tmp, path)
    log.info("nodename.written", path=path, node=nodename, reason="for the CNI plugins on this host")
