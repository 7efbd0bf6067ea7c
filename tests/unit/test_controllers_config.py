"""KubeControllersConfiguration: parsing, validation naming the field, Calico's defaults."""

from __future__ import annotations

import pytest

from felixpy.controllers.settings import ControllerSettings
from felixpy.resources.base import ResourceError
from felixpy.resources.kubecontrollers import parse_duration
from felixpy.resources.parse import parse_documents

DOC = """
apiVersion: projectcalico.org/v3
kind: KubeControllersConfiguration
metadata: {name: default}
spec:
  logSeverityScreen: Info
  healthChecks: Enabled
  etcdV3CompactionPeriod: 10m
  prometheusMetricsPort: 9094
  controllers:
    node:
      reconcilerPeriod: 1m
      leakGracePeriod: 2s
      syncLabels: Enabled
      hostEndpoint: {autoCreate: Disabled}
    policy: {reconcilerPeriod: 5m}
    workloadEndpoint: {reconcilerPeriod: 5m}
    serviceAccount: {reconcilerPeriod: 5m}
    namespace: {reconcilerPeriod: 5m}
"""


def test_parses_and_gives_settings() -> None:
    [kcc] = parse_documents(DOC)
    s = ControllerSettings.from_resource(kcc)  # type: ignore[arg-type]
    assert (s.reconciler_period, s.leak_grace_period, s.metrics_port, s.sync_labels) == (
        60.0,
        2.0,
        9094,
        True,
    )
    assert s.gc_interval == 1.0, "at least two passes per grace period"
    assert s.service_account_enabled and s.namespace_enabled and s.policy_enabled


def test_every_controller_block_and_node_field_read() -> None:
    """Calico's KubeControllersConfiguration fields, each reaching the setting it drives."""
    [kcc] = parse_documents(DOC)
    s = ControllerSettings.from_resource(kcc)  # type: ignore[arg-type]
    assert s.node_enabled and s.workload_endpoint_enabled and not s.auto_host_endpoints
    assert s.health_checks and s.log_severity == "Info"
    text = DOC.replace("autoCreate: Disabled", "autoCreate: Enabled").replace(
        "syncLabels: Enabled", "syncLabels: Disabled"
    )
    [kcc] = parse_documents(text.replace("healthChecks: Enabled", "healthChecks: Disabled"))
    s = ControllerSettings.from_resource(kcc)  # type: ignore[arg-type]
    assert s.auto_host_endpoints and not s.sync_labels and not s.health_checks
    for block, attr in (
        ("    policy: {reconcilerPeriod: 5m}\n", "policy_enabled"),
        ("    workloadEndpoint: {reconcilerPeriod: 5m}\n", "workload_endpoint_enabled"),
        ("    namespace: {reconcilerPeriod: 5m}\n", "namespace_enabled"),
    ):
        [kcc] = parse_documents(DOC.replace(block, ""))
        assert not getattr(ControllerSettings.from_resource(kcc), attr), f"{attr}: its block left out"  # type: ignore[arg-type]
    [kcc] = parse_documents(DOC.replace("prometheusMetricsPort: 9094", "prometheusMetricsPort: 0"))
    assert ControllerSettings.from_resource(kcc).metrics_port == 0  # type: ignore[arg-type]


def test_service_account_controller_off_when_its_block_is_left_out() -> None:
    [kcc] = parse_documents(DOC.replace("    serviceAccount: {reconcilerPeriod: 5m}\n", ""))
    s = ControllerSettings.from_resource(kcc)  # type: ignore[arg-type]
    assert not s.service_account_enabled and s.namespace_enabled
    assert ControllerSettings().service_account_enabled, "on by default (no resource), as Calico"


def test_defaults_without_a_resource_and_node_block_left_out() -> None:
    s = ControllerSettings()
    assert (s.leak_grace_period, s.reconciler_period, s.metrics_port) == (900.0, 300.0, 9094)
    [kcc] = parse_documents(DOC.split("  controllers:")[0])
    assert not ControllerSettings.from_resource(kcc).node_enabled  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("leakGracePeriod: 2s", "leakGracePeriod: soon"), "spec.controllers.node.leakGracePeriod"),
        (("reconcilerPeriod: 1m", "reconcilerPeriod: 1x"), "spec.controllers.node.reconcilerPeriod"),
        (("prometheusMetricsPort: 9094", "prometheusMetricsPort: 70000"), "spec.prometheusMetricsPort"),
        (("healthChecks: Enabled", "healthChecks: On"), "spec.healthChecks"),
        (("autoCreate: Disabled", "autoCreate: yes-please"), "spec.controllers.node.hostEndpoint.autoCreate"),
        (("name: default", "name: other"), "metadata.name"),
        (("syncLabels: Enabled", "syncLabel: Enabled"), "spec.controllers.node.syncLabel"),
    ],
)
def test_bad_field_named(edit: tuple[str, str], field: str) -> None:
    with pytest.raises(ResourceError) as err:
        parse_documents(DOC.replace(*edit))
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("2s", 2), ("15m", 900), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5 m", "1h-2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
