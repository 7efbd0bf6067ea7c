"""The chart sets the agent's health and metrics listeners deliberately (issue 12): health on
loopback for the kubelet's probes of a hostNetwork pod, metrics off unless a value asks, each
with its own host and port, on the agent and on the route reflectors alike."""

from __future__ import annotations

from typing import Any

from tests.unit.test_helm_chart import by_kind, render


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"] if "value" in e}


def _agent(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = by_kind(docs, "DaemonSet")
    (agent,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "felixpy-node"]
    return agent


def test_default_health_on_loopback_probed_there_and_no_metrics() -> None:
    agent = _agent(render({}))
    env = _env(agent)
    assert env["FELIX_HEALTHENABLED"] == "true"
    assert env["FELIX_HEALTHHOST"] == "127.0.0.1"
    assert env["FELIX_HEALTHPORT"] == "9099"
    assert env["FELIX_PROMETHEUSMETRICSENABLED"] == "false"
    assert env["FELIX_PROMETHEUSMETRICSHOST"] == "127.0.0.1"
    for probe in ("livenessProbe", "readinessProbe"):
        get = agent[probe]["httpGet"]
        assert (get["host"], get["port"]) == ("127.0.0.1", 9099), probe
    assert "ports" not in agent, "no metrics port is declared while metrics are off"
    names = [e["name"] for e in agent["env"]]
    assert len(names) == len(set(names)), "an env variable is set twice"


def test_metrics_enabled_by_value_with_their_own_host_and_port() -> None:
    values = {
        "prometheusMetricsEnabled": True,
        "prometheusMetricsHost": "0.0.0.0",
        "prometheusMetricsPort": 9191,
    }
    agent = _agent(render(values))
    env = _env(agent)
    assert env["FELIX_PROMETHEUSMETRICSENABLED"] == "true"
    assert (env["FELIX_PROMETHEUSMETRICSHOST"], env["FELIX_PROMETHEUSMETRICSPORT"]) == ("0.0.0.0", "9191")
    assert env["FELIX_HEALTHHOST"] == "127.0.0.1", "health stays on loopback when metrics are opened"
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]


def test_route_reflectors_get_the_same_listener_settings() -> None:
    docs = render({"routeReflector": {"enabled": True}})
    (dep,) = [d for d in by_kind(docs, "Deployment") if "controllers" not in d["metadata"]["name"]]
    (rr,) = dep["spec"]["template"]["spec"]["containers"]
    env = _env(rr)
    assert env["FELIX_HEALTHHOST"] == "127.0.0.1"
    assert env["FELIX_PROMETHEUSMETRICSENABLED"] == "false"
