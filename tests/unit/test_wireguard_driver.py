"""The WireGuard driver's decisions (keys, rotation, publishing, draining) over an in-memory kernel.

The kernel calls (felixpy.dataplane.wireguard_kernel) are swapped for :class:`FakeKernel`, a small stand-in
that keeps one device's key, peers, table and rule; the real calls run in the VM stage
(tests/kernel/test_wireguard_kernel.py).
"""

from __future__ import annotations

import base64
import itertools
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from felixpy.calc.updates import WgNode, WireguardUpdate
from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane import wireguard_driver as wgnode
from felixpy.dataplane import wireguard_kernel as real
from felixpy.dataplane.wireguard_driver import DRAIN_MAX_SECONDS, DRAIN_SECONDS, WireguardDriver

_keys = itertools.count(1)


class FakeKernel:
    WireguardUnsupported = real.WireguardUnsupported
    DeviceState = real.DeviceState

    def __init__(self, *, supported: bool = True) -> None:
        self.supported = supported
        self.device: real.DeviceState | None = None
        self.mtu = 0
        self.conf = ""
        self.table: dict[str, str] = {}
        self.rule = False
        self.rx = 0

    def ensure_device(self, name: str, *, mtu: int, netns: str | None = None) -> int:
        if not self.supported:
            raise real.WireguardUnsupported("cannot create wireguard.cali: (95, 'Operation not supported')")
        self.device = self.device or real.DeviceState(None, None, 0, 0)
        self.mtu = mtu
        return 5

    def device_exists(self, name: str, *, netns: str | None = None) -> bool:
        return self.device is not None

    def delete_device(self, name: str, *, netns: str | None = None) -> bool:
        gone, self.device = self.device is not None, None
        return gone

    def read_device(self, name: str, *, netns: str | None = None) -> real.DeviceState:
        assert self.device is not None
        peer = real.PeerState("peer", None, (), 0, rx_bytes=self.rx)
        return replace(self.device, peers={"peer": peer})

    @staticmethod
    def genkey() -> str:
        return f"priv{next(_keys)}"

    @staticmethod
    def pubkey(private: str) -> str:
        return base64.b64encode(private.encode().ljust(32, b"-")).decode()

    def sync_config(self, name: str, path: str, text: str, *, netns: str | None = None) -> None:
        assert self.device is not None
        private = text.split("PrivateKey = ", 1)[1].split("\n", 1)[0]
        self.device = replace(self.device, private_key=private, public_key=self.pubkey(private))
        self.conf = text

    def sync_table(self, routes: dict[str, str], *, device: str, table: int, netns: str | None = None,
                   family: int = 2) -> tuple[int, int]:
        self.table = dict(routes)
        self.where = (device, table, family)
        return len(routes), 0

    def ensure_rule(self, *, table: int, priority: int, fwmark: int, netns: str | None = None,
                    family: int = 2) -> bool:
        added, self.rule = not self.rule, True
        self.rule_at = (priority, table, family)
        return added

    def delete_rule(self, *, table: int, priority: int, netns: str | None = None, family: int = 2) -> bool:
        removed, self.rule = self.rule, False
        return removed


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    k = FakeKernel()
    monkeypatch.setattr(wgnode, "drv", k)
    return k


OTHER = base64.b64encode(b"o" * 32).decode()


def snap(own_key: str | None, other_key: str | None = OTHER) -> WireguardUpdate:
    return WireguardUpdate(
        nodes=(WgNode("node1", "10.99.1.10", own_key), WgNode("node2", "10.99.1.11", other_key)),
        blocks=(("10.244.0.0/26", "node1"), ("10.244.1.0/26", "node2")),
    )


def driver(tmp_path: Path, *, enabled: bool = True, clock: Clock | None = None
           ) -> tuple[WireguardDriver, list[str | None]]:
    published: list[str | None] = []
    d = WireguardDriver(WireguardConfig(enabled=enabled), nodename="node1", host_mtu=1500,
                        key_dir=str(tmp_path), publish=published.append, clock=clock or Clock())
    return d, published


def test_key_made_once_published_and_peers_programmed(kernel: FakeKernel, tmp_path: Path) -> None:
    d, published = driver(tmp_path)
    d.on_update(snap(None))
    assert d.apply()
    key = published[-1]
    assert key == kernel.device.public_key and kernel.mtu == 1440 and kernel.rule  # type: ignore[union-attr]
    assert kernel.table == {"10.244.0.0/26": "throw", "10.244.1.0/26": "dev"}
    assert f"PublicKey = {OTHER}" in kernel.conf and "Endpoint = 10.99.1.11:51820" in kernel.conf
    d.on_update(snap(None))  # our Node not updated yet: no new key, no loop
    d.resync()
    assert d.apply() and kernel.device.public_key == key  # type: ignore[union-attr]
    d.on_update(snap(key))  # our key came back on our Node
    assert d.apply() and published == [key, key]


def test_removed_published_key_rotates(kernel: FakeKernel, tmp_path: Path) -> None:
    d, published = driver(tmp_path)
    d.on_update(snap(None))
    d.apply()
    old = published[-1]
    d.on_update(snap(old))
    d.apply()
    d.on_update(snap(None))  # an operator removed it
    assert d.apply()
    assert published[-1] not in (None, old) and kernel.device.public_key == published[-1]  # type: ignore[union-attr]


def test_device_without_key_gets_a_new_pair(kernel: FakeKernel, tmp_path: Path) -> None:
    d, published = driver(tmp_path)
    d.on_update(snap(None))
    d.apply()
    old = published[-1]
    d.on_update(snap(old))
    d.apply()
    kernel.device = None  # deleted, e.g. a reboot
    d.resync()
    assert d.apply() and published[-1] != old and kernel.device is not None


def test_node_without_key_is_not_a_peer(kernel: FakeKernel, tmp_path: Path) -> None:
    d, _ = driver(tmp_path)
    d.on_update(snap(None, other_key=None))
    d.apply()
    assert "[Peer]" not in kernel.conf and kernel.table["10.244.1.0/26"] == "throw"


def test_off_clears_key_and_rule_then_drains_until_quiet(kernel: FakeKernel, tmp_path: Path) -> None:
    on, published = driver(tmp_path)
    on.on_update(snap(None))
    on.apply()
    key = published[-1]
    clock = Clock()
    off, published = driver(tmp_path, enabled=False, clock=clock)
    off.on_update(snap(key))
    assert off.apply()
    assert published == [None] and not kernel.rule and kernel.table == {}
    assert kernel.device is not None and off.pending()
    clock.now += DRAIN_SECONDS - 1
    kernel.rx += 100  # a peer still sends encrypted: keep decrypting
    off.resync()
    off.apply()
    clock.now += DRAIN_SECONDS - 1
    off.resync()
    off.apply()
    assert kernel.device is not None
    clock.now += 1
    off.resync()
    off.apply()
    assert kernel.device is None and not off.pending()


def test_off_drain_is_bounded(kernel: FakeKernel, tmp_path: Path) -> None:
    driver(tmp_path)[0].apply()
    clock = Clock()
    off, _ = driver(tmp_path, enabled=False, clock=clock)
    off.apply()
    while clock.now < 100 + DRAIN_MAX_SECONDS:
        clock.now += 1
        kernel.rx += 1
        off.resync()
        off.apply()
    assert kernel.device is None


def test_kernel_without_wireguard_keeps_going_unencrypted(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wgnode, "drv", FakeKernel(supported=False))
    d, published = driver(tmp_path)
    d.on_update(snap("stale"))
    assert d.apply() and d.usable is False and published == [None]


def test_ipv6_driver_reads_and_publishes_wireguard_public_key_v6(kernel: FakeKernel, tmp_path: Path) -> None:
    """The wg-v6.cali driver (wireguardEnabledV6): peers on IPv6 addresses and keys, IPv6 table 2,
    its key compared with our Node's wireguardPublicKeyV6 (the IPv4 key there is not its own)."""
    published: list[str | None] = []
    d = WireguardDriver(WireguardConfig.v6(enabled=True), nodename="node1", host_mtu=1500,
                        key_dir=str(tmp_path), publish=published.append, clock=Clock())
    assert d.key_field == "status.wireguardPublicKeyV6"
    assert d.conf_path == str(tmp_path / "wireguard" / "wg-v6.cali.conf")

    def snap6(own_v6: str | None) -> WireguardUpdate:
        return WireguardUpdate(
            nodes=(WgNode("node1", "10.99.1.10", OTHER, ip6="fd00:99::10", public_key_v6=own_v6),
                   WgNode("node2", "10.99.1.11", None, ip6="fd00:99::11", public_key_v6=OTHER)),
            blocks=(("10.244.0.0/26", "node1"), ("fd00:244::/122", "node1"), ("fd00:244:0:1::/122", "node2")))

    d.on_update(snap6(None))
    assert d.apply()
    key = published[-1]
    assert key and key != OTHER and kernel.mtu == 1420
    assert kernel.where == ("wg-v6.cali", 2, socket.AF_INET6) and kernel.rule_at == (99, 2, socket.AF_INET6)
    assert kernel.table == {"fd00:244::/122": "throw", "fd00:244:0:1::/122": "dev"}
    assert "Endpoint = [fd00:99::11]:51821" in kernel.conf and "ListenPort = 51821" in kernel.conf
    d.on_update(snap6(key))  # our IPv6 key came back: nothing more to publish, no new key
    d.resync()
    assert d.apply() and published == [key] and kernel.device.public_key == key  # type: ignore[union-attr]
    d.on_update(snap6(None))  # an operator removed wireguardPublicKeyV6: a new IPv6 pair
    assert d.apply() and published[-1] not in (None, key)


def test_encap_driver_runs_both_wireguard_drivers(kernel: FakeKernel, tmp_path: Path) -> None:
    """One calc snapshot reaches both devices' drivers; each applies, resyncs and fails on its own."""
    from felixpy.dataplane.encap_driver import EncapDriver, EncapSettings

    seen: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, name: str, ok: bool = True) -> None:
            self.name, self.ok = name, ok

        def on_update(self, u: WireguardUpdate) -> None:
            seen.append((self.name, "update"))

        def resync(self) -> None:
            seen.append((self.name, "resync"))

        def apply(self) -> bool:
            seen.append((self.name, "apply"))
            return self.ok

    v4, v6 = Recorder("v4"), Recorder("v6", ok=False)
    e = EncapDriver(EncapSettings(parent="", parent_ip="", host_mtu=1500), wireguard=v4, wireguard_v6=v6,
                    ensure_vxlan=lambda *a, **k: 0, ensure_ipip=lambda *a, **k: 0,
                    delete_device=lambda *a, **k: False, fdb=object())
    e.on_update(snap(None))
    e.resync()
    assert not e.apply()  # the IPv6 device failed: the batch is retried...
    assert seen == [("v4", "update"), ("v6", "update"), ("v4", "resync"), ("v6", "resync"),
                    ("v4", "apply"), ("v6", "apply")]  # ...and the IPv4 device was applied all the same
    assert e.wireguard_drivers() == [v4, v6]
    assert EncapDriver(EncapSettings(parent="", parent_ip="", host_mtu=1500), wireguard=v4,
                       fdb=object()).wireguard_drivers() == [v4]


def test_agent_builds_the_ipv6_driver_from_the_v6_parameters(tmp_path: Path) -> None:
    """FelixConfiguration's *V6 fields make wg-v6.cali's config; the shared ones (rule priority,
    keep-alive, host encryption) apply to both; the private key's file is under FELIXPY_STATE_DIR."""
    from felixpy.agent import _wireguard_driver
    from felixpy.runtime.settings import FelixParams, Settings

    settings = Settings(nodename="node1", run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))
    params = FelixParams(wireguardEnabled=True, wireguardEnabledV6=True, wireguardListeningPortV6=51999,
                         wireguardInterfaceNameV6="wg6.test", wireguardMTUV6=1300,
                         wireguardRoutingRulePriority=98, wireguardKeepAlive=25.0)
    v6 = _wireguard_driver(settings, params, backend=None, mtu=1500, ipv6=True)
    assert (v6.cfg.enabled, v6.cfg.ipv6, v6.cfg.interface_name, v6.cfg.listening_port, v6.cfg.mtu,
            v6.cfg.table) == (True, True, "wg6.test", 51999, 1300, 2)
    assert (v6.cfg.routing_rule_priority, v6.cfg.keepalive) == (98, 25)
    assert v6.conf_path == str(tmp_path / "state" / "wireguard" / "wg6.test.conf")
    v4 = _wireguard_driver(settings, params, backend=None, mtu=1500)
    assert (v4.cfg.ipv6, v4.cfg.interface_name, v4.cfg.listening_port, v4.cfg.table) == (
        False, "wireguard.cali", 51820, 1)
