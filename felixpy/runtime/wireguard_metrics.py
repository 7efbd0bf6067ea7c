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

from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from felixpy.dataplane import wireguard as drv
from felixpy.dataplane.errors import DataplaneError
from felixpy.runtime.felix_metrics import add, counter

log = structlog.get_logger(__name__)
PEER_LABELS = ("hostname", "public_key", "peer_key", "peer_endpoint")


def families(hostname: str, iface: str, state: drv.DeviceState) -> list[Metric]:
    """The four families for one device (pure: unit-tested on a parsed dump)."""
    own = state.public_key or ""
    meta = GaugeMetricFamily("wireguard_meta", "WireGuard device (value 1; the device in its labels)",
                             labels=["hostname", "public_key", "iface", "listen_port"])
    meta.add_metric([hostname, own, iface, str(state.listen_port)], 1)
    rcvd = counter("wireguard_bytes_rcvd", "Bytes received from the peer")
    sent = counter("wireguard_bytes_sent", "Bytes sent to the peer")
    handshake = GaugeMetricFamily("wireguard_latest_handshake_seconds",
                                  "Latest handshake with the peer, Unix seconds (0: none yet)",
                                  labels=list(PEER_LABELS))
    for key, peer in sorted(state.peers.items()):
        labels = dict(zip(PEER_LABELS, (hostname, own, key, peer.endpoint or ""), strict=True))
        add(rcvd, labels, peer.rx_bytes)
        add(sent, labels, peer.tx_bytes)
        handshake.add_metric(list(labels.values()), peer.latest_handshake)
    return [meta, rcvd, sent, handshake]


class WireguardCollector(Collector):
    """``wireguard_*`` for the agent's WireGuard driver (``dataplane.wireguard_driver``)."""

    def __init__(self, hostname: str, driver: Any) -> None:
        self.hostname = hostname
        self.driver = driver

    def collect(self) -> Iterator[Metric]:
        cfg = getattr(self.driver, "cfg", None)
        if cfg is None or not cfg.enabled:
            return
        try:
            state = drv.read_device(cfg.interface_name, netns=self.driver.netns)
        except (DataplaneError, OSError) as exc:  # no device yet (or being rebuilt): nothing to export
            log.debug("wireguard.metrics_unavailable", error=str(exc))
            return
        yield from families(self.hostname, cfg.interface_name, state)


def register(registry: CollectorRegistry, hostname: str, driver: Any, *, enabled: bool) -> bool:
    """Adds the ``wireguard_*`` collector unless ``prometheusWireGuardMetricsEnabled`` is false.

    Returns whether it was added. The parameter is read once, at start-up: a change of it restarts
    the agent in place (``felixpy.runtime.config_watch``), as a change of any Felix parameter does."""
    if not enabled:
        log.info("wireguard.metrics_off", reason="prometheusWireGuardMetricsEnabled is false")
        return False
    registry.register(WireguardCollector(hostname, driver))
    return True
