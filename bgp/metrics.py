"""Prometheus view of the BGP service's counters (an I/O-side module: the pure engine only counts).

``felixpy_bgp_routes_refused_total{peer,reason}``: learned routes the import policy refused, by the
kind of reason (``bgp.filters.reason_kind``: "local workload", "covers IP pool", "max prefixes",
"AS path too long", "outside IP pools", ...). ``felixpy_bgp_max_prefixes_exceeded_total{peer,action}``:
times a session went past its receive limit. ``felixpy_bgp_notification_closes_total{peer}``:
sessions that ended with a NOTIFICATION, whose routes went at once (no graceful restart).
``felixpy_bgp_command_errors_total{peer}``: API commands ExaBGP answered with ``error`` (the
engine re-sends what each was for, ``bgp.command_errors``).
``felixpy_bgp_fib_refused_total``: learned host routes not installed because the dataplane owns
the destination. ``felixpy_bgp_received_prefixes{peer}``: what each session has sent and kept.

Per session (calico-wave2.md names no Calico BGP metrics: Calico exports none, so these follow
felixpy's own ``felixpy_bgp_*`` names, one label ``peer`` = the peer address):
``felixpy_bgp_sessions{state}`` sessions by BGP state (Established, Active, OpenSent, ...; every
state felixpy can report is present, 0 when no session is in it);
``felixpy_bgp_session_up{peer}`` 1 when Established;
``felixpy_bgp_session_last_change_timestamp_seconds{peer}`` Unix time of the last state change;
``felixpy_bgp_session_established_total{peer}`` times the session came up since the agent started;
``felixpy_bgp_prefixes_received{peer}``, ``felixpy_bgp_prefixes_accepted{peer}``,
``felixpy_bgp_prefixes_rejected{peer,reason}`` (kind of reason, as the refusal counter),
``felixpy_bgp_prefixes_advertised{peer}``: the session's routes now.
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
        refusals = CounterMetricFamily(
            "felixpy_bgp_command_errors",
            "API commands ExaBGP answered with error, by peer (what they were for is re-sent)",
            labels=["peer"],
        )
        for key, value in sorted(counters.items()):
            if key[0] == "refused":
                refused.add_metric([key[1], key[2]], value)
            elif key[0] == "max_prefixes":
                limits.add_metric([key[1], key[2]], value)
            elif key[0] == "notification_down":
                notified.add_metric([key[1]], value)
            elif key[0] == "command_error":
                refusals.add_metric([key[1]], value)
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
        yield from (refused, limits, notified, refusals, fib, gauge)
        yield from session_metrics(self._service.status())
        yield from bfd_metrics.collect(self._service)  # issue 19


SESSION_STATES = ("Established", "OpenSent", "OpenConfirm", "Connect", "Active", "Idle")


def session_metrics(peers: list[Any]) -> Iterator[Metric]:
    """The per-session families from the service's ``status()`` (``bgp.status.PeerStatus``)."""
    by_state = GaugeMetricFamily("felixpy_bgp_sessions", "BGP sessions by BGP state", labels=["state"])
    up = GaugeMetricFamily("felixpy_bgp_session_up", "1 when the BGP session is Established", labels=["peer"])
    since = GaugeMetricFamily(
        "felixpy_bgp_session_last_change_timestamp_seconds",
        "Unix time of the BGP session's last state change",
        labels=["peer"],
    )
    flaps = CounterMetricFamily(
        "felixpy_bgp_session_established",
        "Times the BGP session reached Established since the agent started",
        labels=["peer"],
    )
    received = GaugeMetricFamily(
        "felixpy_bgp_prefixes_received", "Prefixes the peer has sent (kept, accepted or not)", labels=["peer"]
    )
    accepted = GaugeMetricFamily(
        "felixpy_bgp_prefixes_accepted", "Prefixes from the peer that passed import policy", labels=["peer"]
    )
    rejected = GaugeMetricFamily(
        "felixpy_bgp_prefixes_rejected",
        "Prefixes from the peer that import policy refuses, by kind of reason",
        labels=["peer", "reason"],
    )
    advertised = GaugeMetricFamily(
        "felixpy_bgp_prefixes_advertised", "Prefixes advertised to the peer", labels=["peer"]
    )
    counts = dict.fromkeys(SESSION_STATES, 0)
    for p in peers:
        state = p.info.split(" ", 1)[0] or "Idle"
        counts[state] = counts.get(state, 0) + 1
        up.add_metric([p.address], 1.0 if p.state == "up" else 0.0)
        since.add_metric([p.address], p.since)
        flaps.add_metric([p.address], p.established)
        received.add_metric([p.address], p.routes_received)
        accepted.add_metric([p.address], p.routes_accepted)
        for reason, count in sorted(p.routes_rejected.items()):
            rejected.add_metric([p.address, reason], count)
        advertised.add_metric([p.address], p.routes_advertised)
    for state, count in counts.items():
        by_state.add_metric([state], count)
    yield from (by_state, up, since, flaps, received, accepted, rejected, advertised)
