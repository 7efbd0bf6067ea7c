"""The WireGuard driver's decisions (keys, rotation, publishing, draining) over an in-memory kernel.

The kernel calls (felixpy.dataplane.wireguard) are swapped for :class:`FakeKernel`, a small stand-in
that keeps one device's key, peers, table and rule; the real calls run in the VM stage
(tests/kernel/test_wireguard_kernel.py).
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from felixpy.calc.updates import WgNode, WireguardUpdate
from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane import wireguard as real
from felixpy.dataplane import wireguard_driver as wgnode
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
        return len(routes), 0

    def ensure_rule(self, *, table: int, priority: int, fwmark: int, netns: str | None = None,
                    family: int = 2) -> bool:
        added, self.rule = not self.rule, True
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
                        run_dir=str(tmp_path), publish=published.append, clock=clock or Clock())
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
