"""Calico's ``wireguard_*`` metric families, read from the device at scrape time.

Felix's names, types and labels (reference wave 2 §1.2): ``wireguard_meta`` (gauge, value 1, the
device in its labels ``hostname``, ``public_key``, ``iface``, ``listen_port``), per peer
``wireguard_bytes_rcvd`` / ``wireguard_bytes_sent`` (counters, bare names as Felix's) and
``wireguard_latest_handshake_seconds`` (gauge, Unix seconds, 0 before the first handshake), each
labelled ``hostname``, ``public_key``, ``peer_key``, ``peer_endpoint``. A scrape runs
``wg show <iface> dump`` in the agent's namespace; with WireGuard off, or before the device
exists, the families are absent (as in Felix). FelixConfiguration ``prometheusWireGuardMetricsEnabled``
(default true, as Felix's) false leaves them out altogether: :func:`register` adds no collector.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane import wireguard_kernel as drv
from felixpy.dataplane.encap_driver import Wireguard
from felixpy.dataplane.errors import DataplaneError
from felixpy.runtime.felix_metrics import add, counter

log = structlog.get_logger(__name__)
PEER_LABELS = ("hostname", "public_key", "peer_key", "peer_endpoint")


def families(hostname: str, iface: str, state: drv.DeviceState) -> list[Metric]:
    """The four families for one device (pure: unit-tested on a parsed dump)."""
    return devices_families(hostname, [(iface, state)])


def devices_families(hostname: str, devices: list[tuple[str, drv.DeviceState]]) -> list[Metric]:
    """The four families, one series set per device: ``wireguard.cali`` and ``wg-v6.cali`` side by
    side in the same families (each device its own ``wireguard_meta``, told apart by ``iface``; its
    peers by ``public_key``, the device's own key)."""
    meta = GaugeMetricFamily("wireguard_meta", "WireGuard device (value 1; the device in its labels)",
                             labels=["hostname", "public_key", "iface", "listen_port"])
    rcvd = counter("wireguard_bytes_rcvd", "Bytes received from the peer")
    sent = counter("wireguard_bytes_sent", "Bytes sent to the peer")
    handshake = GaugeMetricFamily("wireguard_latest_handshake_seconds",
                                  "Latest handshake with the peer, Unix seconds (0: none yet)",
                                  labels=list(PEER_LABELS))
    for iface, state in devices:
        own = state.public_key or ""
        meta.add_metric([hostname, own, iface, str(state.listen_port)], 1)
        for key, peer in sorted(state.peers.items()):
            labels = dict(zip(PEER_LABELS, (hostname, own, key, peer.endpoint or ""), strict=True))
            add(rcvd, labels, peer.rx_bytes)
            add(sent, labels, peer.tx_bytes)
            handshake.add_metric(list(labels.values()), peer.latest_handshake)
    return [meta, rcvd, sent, handshake]


class WireguardCollector(Collector):
    """``wireguard_*`` for the agent's WireGuard drivers (``dataplane.wireguard_driver``): one, or a
    list (IPv4's and IPv6's); each device that is on and exists is exported."""

    def __init__(self, hostname: str, driver: Wireguard | Sequence[Wireguard] | None) -> None:
        self.hostname = hostname
        given: Sequence[Wireguard | None] = driver if isinstance(driver, Sequence) else [driver]
        self.drivers = [d for d in given if d is not None]

    def collect(self) -> Iterator[Metric]:
        devices = []
        for d in self.drivers:
            cfg: WireguardConfig | None = getattr(d, "cfg", None)
            if cfg is None or not cfg.enabled:
                continue
            try:
                devices.append((cfg.interface_name, drv.read_device(cfg.interface_name, netns=d.netns)))
            except (DataplaneError, OSError) as exc:  # no device yet (or being rebuilt): nothing to export
                log.debug("wireguard.metrics_unavailable", device=cfg.interface_name, error=str(exc))
        if devices:
            yield from devices_families(self.hostname, devices)


def register(
    registry: CollectorRegistry,
    hostname: str,
    driver: Wireguard | Sequence[Wireguard] | None,
    *,
    enabled: bool,
) -> bool:
    """Adds the ``wireguard_*`` collector unless ``prometheusWireGuardMetricsEnabled`` is false.

    Returns whether it was added. The parameter is read once, at start-up: a change of it restarts
    the agent in place (``felixpy.runtime.config_watch``), as a change of any Felix parameter does."""
    if not enabled:
        log.info("wireguard.metrics_off", reason="prometheusWireGuardMetricsEnabled is false")
        return False
    registry.register(WireguardCollector(hostname, driver))
    return True
