"""Prometheus families for BFD (issue 19), yielded by ``bgp.metrics.BGPCollector``.

``felixpy_bfd_session_up{peer}``: 1 while the peer's BFD session is Up. ``felixpy_bfd_session_state{peer}``:
RFC 5880's number (0 AdminDown, 1 Down, 2 Init, 3 Up). ``felixpy_bfd_failures_total{peer}``: BFD
failures that took the peer's routes out. ``felixpy_bfd_routes_held{peer}``: 1 while the peer's routes
are held back (BFD down, or the flap-damping hold-down). ``felixpy_bfd_packets_dropped_total{reason}``:
control packets the daemon refused (``bgp.bfd_packet.REASONS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

STATES = {"AdminDown": 0, "Down": 1, "Init": 2, "Up": 3}


def collect(service: Any) -> Iterator[Metric]:
    if not hasattr(service, "bfd_status"):
        return
    rows, drops = service.bfd_status(), service.bfd_drops()
    up = GaugeMetricFamily("felixpy_bfd_session_up", "1 while the peer's BFD session is Up", labels=["peer"])
    state = GaugeMetricFamily(
        "felixpy_bfd_session_state", "BFD session state (0 AdminDown, 1 Down, 2 Init, 3 Up)", labels=["peer"]
    )
    failures = CounterMetricFamily(
        "felixpy_bfd_failures", "BFD failures that removed the peer's routes at once", labels=["peer"]
    )
    held = GaugeMetricFamily(
        "felixpy_bfd_routes_held",
        "1 while the peer's routes are held back (BFD down or hold-down)",
        labels=["peer"],
    )
    for row in rows:
        peer = str(row["peer"])
        up.add_metric([peer], 1.0 if row.get("state") == "Up" else 0.0)
        state.add_metric([peer], STATES.get(str(row.get("state")), 1))
        failures.add_metric([peer], float(row.get("failures", 0)))
        held.add_metric([peer], 1.0 if row.get("held") else 0.0)
    dropped = CounterMetricFamily(
        "felixpy_bfd_packets_dropped", "BFD control packets refused, by reason", labels=["reason"]
    )
    for reason, count in sorted(drops.items()):
        dropped.add_metric([reason], count)
    yield from (up, state, failures, held, dropped)
