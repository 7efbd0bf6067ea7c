"""The agent's WireGuard driver: calc's WireguardUpdate + FelixConfiguration → device, peers, routes, key.

``apply`` (once per batch, from the encapsulation driver) converges, when ``wireguardEnabled``:

- ``wireguard.cali`` up with MTU ``wireguardMTU`` (0: host MTU - 60), listening on
  ``wireguardListeningPort``, fwmark 0x200000 on its own UDP;
- its key pair: made on the node (``wg genkey``) when the device has none (first enable, device
  recreated, e.g. after a reboot) or when the key this node published was removed from its Node
  (an operator's rotation); the private key stays in the kernel and in a 0600 file under the
  agent's state directory (``FELIXPY_STATE_DIR``/wireguard/<device>.conf), the public key is
  published as the Node's ``status.wireguardPublicKey`` (compare-and-swap);
- peers, WireGuard table routes and the ``not fwmark`` rule from :func:`felixpy.calc.wireguard.plan`.

The agent runs two of these when asked: ``wireguardEnabled`` drives ``wireguard.cali`` (IPv4 node
addresses and blocks, table 1), ``wireguardEnabledV6`` drives ``wg-v6.cali`` (IPv6 addresses and
blocks, table 2, port 51821), each with its own key pair, published as ``status.wireguardPublicKey``
and ``status.wireguardPublicKeyV6`` respectively (Calico's fields). ``cfg.ipv6`` picks the family.

Disabled (or turned off): the published key is cleared first, the rule goes (traffic takes the
main table at once), and the device, which still decrypts what peers send until they have seen
the key go (or, mid-restart themselves, have turned WireGuard off too), is deleted once it has
received nothing for ``DRAIN_SECONDS`` (at the latest ``DRAIN_MAX_SECONDS``), so established
flows are not cut while the cluster learns. The check runs on every batch and route refresh.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from felixpy.calc import wireguard as wgcalc
from felixpy.calc.updates import WgNode, WireguardUpdate
from felixpy.dataplane import wireguard_kernel as drv
from felixpy.dataplane.errors import DataplaneError

if TYPE_CHECKING:
    from felixpy.datastore.backend import Backend

log = structlog.get_logger(__name__)
DRAIN_SECONDS = 10.0  # the device goes once it has decrypted nothing for this long...
DRAIN_MAX_SECONDS = 120.0  # ...or at the latest this long after WireGuard was turned off
Publish = Callable[[str | None], None]  # writes (or clears) this node's status.wireguardPublicKey[V6]


class WireguardDriver:
    def __init__(
        self,
        cfg: wgcalc.WireguardConfig,
        *,
        nodename: str,
        host_mtu: int,
        key_dir: str,
        publish: Publish | None = None,
        netns: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.nodename = nodename
        self.host_mtu = host_mtu
        # the device's config, private key included (0600): FELIXPY_STATE_DIR/wireguard/<device>.conf
        self.conf_path = os.path.join(key_dir, "wireguard", f"{cfg.interface_name}.conf")
        self.publish = publish
        self.netns = netns
        self.clock = clock
        self.snapshot = WireguardUpdate((), ())
        self.usable: bool | None = None  # None: not tried; False: kernel without WireGuard
        self.public_key: str | None = None
        self._seen_published = False  # our key has come back on our Node at least once
        self._disabled_since: float | None = None
        self._drain_rx = 0
        self._drain_quiet_since = 0.0
        self._dirty = True
        self.family = socket.AF_INET6 if cfg.ipv6 else socket.AF_INET

    # ---- inputs ----------------------------------------------------------------------------
    def on_update(self, u: WireguardUpdate) -> None:
        changed, self.snapshot = u != self.snapshot, u
        if self.cfg.enabled:
            self._dirty = self._dirty or changed
        else:  # off: only our own key, if still published, needs work
            own = self.own_node()
            self._dirty = self._dirty or bool(own is not None and own.public_key)

    def resync(self) -> None:
        self._dirty = True

    def own_node(self) -> WgNode | None:
        """Our Node as this device sees it (the IPv6 device: its v6 address and ``wireguardPublicKeyV6``)."""
        own = next((n for n in self.snapshot.nodes if n.name == self.nodename), None)
        return None if own is None else wgcalc.family_view(own, self.cfg.ipv6)

    @property
    def key_field(self) -> str:
        return "status.wireguardPublicKeyV6" if self.cfg.ipv6 else "status.wireguardPublicKey"

    # ---- apply -----------------------------------------------------------------------------
    def apply(self) -> bool:
        if not self.cfg.enabled:
            return self._apply_disabled()
        if not self._dirty or self.usable is False:
            return True
        try:
            self._apply_enabled()
        except drv.WireguardUnsupported as exc:
            self.usable = False
            log.error("wireguard.unsupported", error=str(exc),
                      reason="kernel or tools without WireGuard: pod traffic stays unencrypted")
            self._publish(None)
            return True
        except (DataplaneError, OSError) as exc:
            log.warning("wireguard.apply_failed", error=str(exc), reason="will retry on the next batch")
            return False
        self.usable = True
        self._dirty = False
        return True

    def _apply_enabled(self) -> None:
        cfg = self.cfg
        drv.ensure_device(cfg.interface_name, mtu=wgcalc.device_mtu(cfg, self.host_mtu), netns=self.netns)
        state = drv.read_device(cfg.interface_name, netns=self.netns)
        private = self._private_key(state)
        plan = wgcalc.plan(self.nodename, self.snapshot, cfg)
        drv.sync_config(cfg.interface_name, self.conf_path, wgcalc.render_config(private, plan, cfg),
                        netns=self.netns)
        drv.sync_table(plan.routes, device=cfg.interface_name, table=cfg.table, netns=self.netns,
                       family=self.family)
        drv.ensure_rule(table=cfg.table, priority=cfg.routing_rule_priority, fwmark=cfg.fwmark,
                        netns=self.netns, family=self.family)
        self._disabled_since = None
        log.debug("wireguard.applied", peers=[p.node for p in plan.peers], routes=len(plan.routes))
        assert self.public_key is not None
        own = self.own_node()
        if own is None or own.public_key != self.public_key:
            self._publish(self.public_key)

    def _private_key(self, state: drv.DeviceState) -> str:
        """The device's key, or a new pair when it has none or our published key was removed."""
        own = self.own_node()
        published = own.public_key if own is not None else None
        if state.public_key and published == state.public_key:
            self._seen_published = True
        removed = self._seen_published and own is not None and not published
        if state.private_key and state.public_key and not removed:
            self.public_key = state.public_key
            return state.private_key
        private = drv.genkey()
        self.public_key = drv.pubkey(private)
        self._seen_published = False
        log.info("wireguard.key_generated", device=self.cfg.interface_name, public_key=self.public_key,
                 reason="published key removed from the Node" if removed else "device has no key")
        return private

    def _apply_disabled(self) -> bool:
        """Clear the key, drop the rule and table now; delete the device after the drain time."""
        if not self._dirty:
            return True
        own = self.own_node()
        try:
            if own is not None and own.public_key:
                self._publish(None)
            drv.delete_rule(table=self.cfg.table, priority=self.cfg.routing_rule_priority, netns=self.netns,
                            family=self.family)
            drv.sync_table({}, device=self.cfg.interface_name, table=self.cfg.table, netns=self.netns,
                           family=self.family)
            if not drv.device_exists(self.cfg.interface_name, netns=self.netns):
                self._dirty, self._disabled_since = False, None
                return True
            now = self.clock()
            state = drv.read_device(self.cfg.interface_name, netns=self.netns)
            rx = sum(p.rx_bytes for p in state.peers.values())
            if self._disabled_since is None or rx != self._drain_rx:
                self._disabled_since = self._disabled_since if self._disabled_since is not None else now
                self._drain_rx, self._drain_quiet_since = rx, now
            quiet = now - self._drain_quiet_since >= DRAIN_SECONDS
            if quiet or now - self._disabled_since >= DRAIN_MAX_SECONDS:
                drv.delete_device(self.cfg.interface_name, netns=self.netns)
                _remove(self.conf_path)
                self._dirty, self._disabled_since = False, None
                return True
        except (DataplaneError, OSError) as exc:
            log.warning("wireguard.cleanup_failed", error=str(exc), reason="will retry")
            return False
        return True

    def pending(self) -> bool:
        """A device still draining after WireGuard was turned off (the writer should come back)."""
        return not self.cfg.enabled and self._disabled_since is not None and \
            self.clock() - self._disabled_since < DRAIN_SECONDS

    def _publish(self, key: str | None) -> None:
        if self.publish is None:
            return
        self.publish(key)
        log.info("wireguard.key_published" if key else "wireguard.key_cleared", node=self.nodename,
                 device=self.cfg.interface_name, public_key=key or "", reason=f"Node {self.key_field}")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def node_key_publisher(backend: Backend, nodename: str, retries: int = 5, *, ipv6: bool = False) -> Publish:
    """CAS-writes ``status.wireguardPublicKey`` of our Node (``ipv6``: ``status.wireguardPublicKeyV6``;
    cleared with None). Only that one field changes: the other family's key is left as it is."""
    from felixpy.datastore.errors import Conflict, NotFound
    from felixpy.resources.node import Node, NodeStatus

    field = "wireguard_public_key_v6" if ipv6 else "wireguard_public_key"

    def publish(key: str | None) -> None:
        for _ in range(retries):
            try:
                node = backend.get(Node, nodename)
            except NotFound:
                return
            status = node.status if node.status is not None else NodeStatus()
            if (getattr(status, field) or None) == (key or None):
                return
            node.status = status.model_copy(update={field: key or None})
            try:
                backend.update(node)
                return
            except Conflict:
                continue
        raise DataplaneError(f"could not publish the WireGuard key of {nodename}: too many concurrent writes")

    return publish
