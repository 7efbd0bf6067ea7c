"""The chart's Grafana dashboard has BGP panels, and every felixpy_bgp_* name they query is one the agent's
metrics registry exports (a panel querying a name nobody exports shows "No data" forever)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bgp.metrics import BGPCollector
from felixpy.runtime.health import Metrics
from tests.unit.test_bgp_import_safety import _Service

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/felixpy/dashboards/felixpy.json"


def queried_bgp_names() -> dict[str, set[str]]:
    """felixpy_bgp_* name -> titles of the panels querying it."""
    out: dict[str, set[str]] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\b(felixpy_bgp_[a-z_]+)", target["expr"]):
                out.setdefault(name, set()).add(panel["title"])
    return out


def exported(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}


def test_every_bgp_name_in_the_dashboard_is_exported() -> None:
    metrics = Metrics()  # the agent's registry: the BGP collector is registered in it (felixpy.agent)
    metrics.registry.register(BGPCollector(_Service()))
    names = exported(metrics.registry)
    queried = queried_bgp_names()
    assert not set(queried) - names, {n: queried[n] for n in set(queried) - names}


def test_the_bgp_panels_cover_sessions_routes_refusals_and_limits() -> None:
    queried = set(queried_bgp_names())
    for wanted in (
        "felixpy_bgp_sessions",  # sessions by state
        "felixpy_bgp_session_up",
        "felixpy_bgp_prefixes_received",
        "felixpy_bgp_prefixes_accepted",
        "felixpy_bgp_prefixes_advertised",
        "felixpy_bgp_prefixes_rejected",  # refused, by reason
        "felixpy_bgp_routes_refused_total",
        "felixpy_bgp_max_prefixes_exceeded_total",  # receive-limit crossings
    ):
        assert wanted in queried, wanted
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)  # ids unique
    spots = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(spots)) == len(spots)  # no two panels on top of each other
