"""Health and metrics listeners as Felix configures them (issue 12): health on 127.0.0.1:9099 by
default, metrics off by default, each with its own host and port, from FELIX_* or FelixConfiguration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from felixpy.resources.parse import parse_documents
from felixpy.runtime.config_watch import ROUTE_REFLECTOR_FIELDS
from felixpy.runtime.settings import FelixParams


def test_defaults_bind_health_to_loopback_and_leave_metrics_off() -> None:
    p = FelixParams.resolve({})
    assert (p.healthEnabled, p.healthHost, p.healthPort) == (True, "127.0.0.1", 9099)
    assert (p.prometheusMetricsEnabled, p.prometheusMetricsHost, p.prometheusMetricsPort) == (
        False, "127.0.0.1", 9091)  # fmt: skip


def test_env_sets_each_listener_apart() -> None:
    env = {
        "FELIX_HEALTHHOST": "0.0.0.0",
        "FELIX_HEALTHPORT": "9199",
        "FELIX_PROMETHEUSMETRICSENABLED": "true",
        "FELIX_PROMETHEUSMETRICSHOST": "10.0.0.5",
        "FELIX_PROMETHEUSMETRICSPORT": "9191",
    }
    p = FelixParams.resolve(env)
    assert (p.healthHost, p.healthPort) == ("0.0.0.0", 9199)
    assert (p.prometheusMetricsEnabled, p.prometheusMetricsHost, p.prometheusMetricsPort) == (
        True, "10.0.0.5", 9191)  # fmt: skip


def test_felixconfiguration_fields_have_calicos_names_and_env_wins() -> None:
    (cfg,) = parse_documents(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        "spec: {healthHost: '::1', healthPort: 9200, prometheusMetricsEnabled: true,\n"
        "       prometheusMetricsHost: 127.0.0.2, prometheusMetricsPort: 9300}\n"
    )
    spec = cfg.to_dict()["spec"]
    p = FelixParams.resolve({}, None, spec)
    assert (p.healthHost, p.healthPort) == ("::1", 9200)
    assert (p.prometheusMetricsEnabled, p.prometheusMetricsHost, p.prometheusMetricsPort) == (
        True, "127.0.0.2", 9300)  # fmt: skip
    p = FelixParams.resolve({"FELIX_PROMETHEUSMETRICSENABLED": "false"}, None, spec)
    assert p.prometheusMetricsEnabled is False


def test_localhost_and_empty_host_mean_what_felix_means() -> None:
    assert FelixParams.resolve({"FELIX_HEALTHHOST": "localhost"}).healthHost == "127.0.0.1"
    # An empty value in FelixConfiguration means every address (env "" is "unset", as for every FELIX_*).
    assert FelixParams.resolve({}, None, {"prometheusMetricsHost": ""}).prometheusMetricsHost == "0.0.0.0"


@pytest.mark.parametrize(
    ("field", "value"),
    [("healthHost", "not-an-ip"), ("prometheusMetricsHost", "10.0.0.300"), ("healthPort", 0),
     ("prometheusMetricsPort", 70000)],
)  # fmt: skip
def test_bad_listener_values_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        FelixParams.resolve({}, None, {field: value})
    assert field in str(info.value)


def test_route_reflectors_restart_for_every_listener_field() -> None:
    listener = {f for f in FelixParams.model_fields if f.startswith(("health", "prometheusMetrics"))}
    assert listener == ROUTE_REFLECTOR_FIELDS
