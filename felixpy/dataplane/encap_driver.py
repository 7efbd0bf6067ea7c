"""The agent's encapsulation driver: calc's EncapUpdate/VtepUpdate → tunnel devices and VTEP entries.

Desired state only changes memory; ``apply`` (once per batch, before the routes are written, so
the routes over ``vxlan.calico`` find their device) converges:

- ``vxlan.calico`` (VNI/port from FelixParams, parent = the interface holding the node's IP, the
  node's VXLAN tunnel address /32, the Node's or the derived VTEP MAC, MTU host - 50) while any
  pool uses VXLAN, deleted when none does; neighbour + FDB entry per remote VTEP.
- ``tunl0`` with the IPIP tunnel address /32 while any pool uses IPIP. A kernel without ``ipip``
  is logged once, loudly, and the agent keeps going: ``ipip_usable`` turns False and the
  dataplane stops asking for routes over tunl0 (they stay computed in calc).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from felixpy.calc.updates import Encap, EncapUpdate, Vtep, VtepUpdate, WireguardUpdate
from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane import tunnel_devices as drv
from felixpy.dataplane.errors import DataplaneError

log = structlog.get_logger(__name__)
OVERHEAD = {"ipip": 20, "vxlan": 50}


class Fdb(Protocol):
    """The VTEP neighbour/FDB writer (``tunnel_devices.VxlanFdb``): desired entries, then apply."""

    def set_vteps(self, vteps: Iterable[drv.Vtep]) -> None: ...

    def apply(self) -> object: ...


class Wireguard(Protocol):
    """One family's WireGuard driver (``felixpy.dataplane.wireguard_driver.WireguardDriver``); its
    ``cfg`` and ``netns`` are what the ``wireguard_*`` metrics read of it."""

    @property
    def cfg(self) -> WireguardConfig: ...

    @property
    def netns(self) -> str | None: ...

    def on_update(self, u: WireguardUpdate) -> None: ...

    def resync(self) -> None: ...

    def apply(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class EncapSettings:
    parent: str  # the interface holding the node's IP ("" when unknown)
    parent_ip: str
    host_mtu: int = 1500
    vxlan_vni: int = drv.VXLAN_VNI
    vxlan_port: int = drv.VXLAN_PORT
    vxlan_mtu: int = 0  # 0 = host MTU - 50
    ipip_mtu: int = 0  # 0 = host MTU - 20


class EncapDriver:
    def __init__(
        self,
        settings: EncapSettings,
        *,
        netns: str | None = None,
        fdb: Fdb | None = None,
        ensure_vxlan: Callable[..., int] = drv.ensure_vxlan,
        ensure_ipip: Callable[..., int] = drv.ensure_ipip,
        delete_device: Callable[..., bool] = drv.delete_device,
        wireguard: Wireguard | None = None,
        wireguard_v6: Wireguard | None = None,
    ) -> None:
        self.settings = settings
        self.netns = netns
        self.fdb: Fdb = fdb if fdb is not None else drv.VxlanFdb(netns=netns)
        self._ensure_vxlan, self._ensure_ipip, self._delete = ensure_vxlan, ensure_ipip, delete_device
        self.encap = Encap()
        self.vteps: dict[str, Vtep] = {}
        self.wireguard = wireguard  # felixpy.dataplane.wireguard_driver.WireguardDriver
        self.wireguard_v6 = wireguard_v6  # the same for wg-v6.cali (wireguardEnabledV6)
        self.ipip_usable: bool | None = None  # None: not tried yet
        self.vxlan_ready = False
        self._devices_dirty = True
        self._fdb_dirty = True

    def on_update(self, u: EncapUpdate | VtepUpdate | WireguardUpdate) -> None:
        if isinstance(u, WireguardUpdate):
            for wg in self.wireguard_drivers():
                wg.on_update(u)
        elif isinstance(u, EncapUpdate):
            self._devices_dirty = self._devices_dirty or u.encap != self.encap
            self.encap = u.encap
        elif u.vtep is None:
            self._fdb_dirty = self.vteps.pop(u.node, None) is not None or self._fdb_dirty
        else:
            self._fdb_dirty = self._fdb_dirty or self.vteps.get(u.node) != u.vtep
            self.vteps[u.node] = u.vtep

    def resync(self) -> None:
        """Re-assert devices and VTEP entries (drift repair on the route refresh timer)."""
        self._devices_dirty = self._fdb_dirty = True
        for wg in self.wireguard_drivers():
            wg.resync()

    def apply(self) -> bool:
        ok = True
        if self._devices_dirty:
            ok = self._apply_vxlan() and ok
            ok = self._apply_ipip() and ok
            self._devices_dirty = not ok
        if self.vxlan_ready and self._fdb_dirty:
            ok = self._apply_fdb() and ok
        for wg in self.wireguard_drivers():
            ok = wg.apply() and ok
        return ok

    def wireguard_drivers(self) -> list[Wireguard]:
        """The WireGuard drivers there are: IPv4's, then IPv6's (each decides on its own)."""
        return [wg for wg in (self.wireguard, self.wireguard_v6) if wg is not None]

    # ---- VXLAN ----------------------------------------------------------------------------
    def _apply_vxlan(self) -> bool:
        e, s = self.encap, self.settings
        if not e.vxlan:
            self.vxlan_ready = False
            self._delete(drv.VXLAN_DEVICE, netns=self.netns, reason="no IP pool uses VXLAN")
            return True
        if not (e.vxlan_tunnel_addr and e.vxlan_mac):
            log.info("encap.vxlan_waiting", reason="this node has no VXLAN tunnel address yet")
            return True
        if not s.parent:
            log.error("encap.vxlan_failed", reason=f"no interface holds the node address {s.parent_ip}")
            return False
        mtu = s.vxlan_mtu or s.host_mtu - OVERHEAD["vxlan"]
        cfg = drv.VxlanConfig(
            parent=s.parent,
            parent_ip=s.parent_ip,
            address=str(e.vxlan_tunnel_addr),
            mac=e.vxlan_mac,
            mtu=mtu,
            vni=s.vxlan_vni,
            port=s.vxlan_port,
        )
        try:
            self._ensure_vxlan(cfg, netns=self.netns)
        except DataplaneError as exc:
            log.error(
                "encap.vxlan_failed", device=drv.VXLAN_DEVICE, error=str(exc), reason="VXLAN pool in use"
            )
            self.vxlan_ready = False
            return False
        self.vxlan_ready = True
        self._fdb_dirty = True
        return True

    def _apply_fdb(self) -> bool:
        vteps = [drv.Vtep(v.tunnel_ip, v.mac, v.parent_ip) for v in self.vteps.values()]
        self.fdb.set_vteps(vteps)
        try:
            self.fdb.apply()
        except (DataplaneError, OSError) as exc:
            log.warning("encap.fdb_failed", error=str(exc), reason="will retry on the next batch")
            return False
        self._fdb_dirty = False
        return True

    # ---- IPIP -----------------------------------------------------------------------------
    def _apply_ipip(self) -> bool:
        e, s = self.encap, self.settings
        if not e.ipip or not e.ipip_tunnel_addr or self.ipip_usable is False:
            return True
        try:
            self._ensure_ipip(
                str(e.ipip_tunnel_addr), mtu=s.ipip_mtu or s.host_mtu - OVERHEAD["ipip"], netns=self.netns
            )
        except drv.EncapUnsupported as exc:
            self.ipip_usable = False
            log.error(
                "encap.ipip_unsupported",
                device=drv.IPIP_DEVICE,
                error=str(exc),
                reason="kernel cannot create ipip devices; IPIP routes are computed but not programmed",
            )
            return True
        except DataplaneError as exc:
            log.error("encap.ipip_failed", device=drv.IPIP_DEVICE, error=str(exc))
            return False
        self.ipip_usable = True
        return True
