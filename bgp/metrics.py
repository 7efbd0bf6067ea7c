"""Prometheus view of the BGP service's counters (an I/O-side module: the pure engine only counts).

``felixpy_bgp_routes_refused_total{peer,reason}``: learned routes the import policy refused, by the
kind of reason (``bgp.filters.reason_kind``: "local workload", "covers IP pool", "max prefixes",
"AS path too long", "outside IP pools", ...). ``felixpy_bgp_max_prefixes_exceeded_total{peer,action}``:
times a session went past its receive limit. ``felixpy_bgp_notification_closes_total{peer}``:
sessions that ended with a NOTIFICATION, whose routes went at once (no graceful restart).
``felixpy_bgp_fib_refused_total``: learned host routes not installed because the dataplane owns
the destination. ``felixpy_bgp_received_prefixes{peer}``: what each session has sent and kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bgp import bfd_metrics


class BGPCollector(Collector):
    def __init__(self, service: Any) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        counters, received, fib_refused = self._service.counters()
        refused = CounterMetricFamily(
            "felixpy_bgp_routes_refused",
            "Learned routes refused by the BGP import policy, by peer and kind of reason",
            labels=["peer", "reason"],
        )
        limits = CounterMetricFamily(
            "felixpy_bgp_max_prefixes_exceeded",
            "Times a BGP session went past its receive limit (maxPrefixes), by peer and action",
            labels=["peer", "action"],
        )
        notified = CounterMetricFamily(
            "felixpy_bgp_notification_closes",
            "BGP sessions that ended with a NOTIFICATION: their routes were removed at once",
            labels=["peer"],
        )
        for key, value in sorted(counters.items()):
            if key[0] == "refused":
                refused.add_metric([key[1], key[2]], value)
            elif key[0] == "max_prefixes":
                limits.add_metric([key[1], key[2]], value)
            elif key[0] == "notification_down":
                notified.add_metric([key[1]], value)
        fib = CounterMetricFamily(
            "felixpy_bgp_fib_refused",
            "Learned host routes not installed because the dataplane owns the destination",
            value=fib_refused,
        )
        gauge = GaugeMetricFamily(
            "felixpy_bgp_received_prefixes", "Prefixes each BGP session has sent (kept)", labels=["peer"]
        )
        for peer, count in sorted(received.items()):
            gauge.add_metric([peer], count)
        yield from (refused, limits, notified, fib, gauge)
        yield from bfd_metrics.collect(self._service)  # issue 19
