"""KubeControllersConfiguration (projectcalico.org/v3): what `felixpy controllers` runs and how.

Calico's kind and field names; the only name allowed is ``default``. Durations are Go duration
strings (``15m``, ``2s``, ``1h30m``); a controller block left out is disabled (Calico's rule).
Defaults: reconcilerPeriod 5m, leakGracePeriod 15m (``0s`` disables IP garbage collection),
syncLabels Enabled, hostEndpoint.autoCreate Disabled, healthChecks Enabled,
etcdV3CompactionPeriod 10m, prometheusMetricsPort 9094 (0 disables), logSeverityScreen Info.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import FieldError

EnabledDisabled = Literal["Enabled", "Disabled"]
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (``"1h30m"``, ``"2s"``, ``"0"``); ValueError when malformed."""
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 5m, 1h30m)")
    return total


def _duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as err:
            raise FieldError(str(err)) from None
    return value


class _Periodic(Model):
    reconciler_period: str | None = None

    @field_validator("reconciler_period")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        return _duration(v)


class AutoHostEndpointConfig(Model):
    auto_create: EnabledDisabled = "Disabled"


class NodeControllerConfig(_Periodic):
    sync_labels: EnabledDisabled = "Enabled"
    host_endpoint: AutoHostEndpointConfig | None = None
    leak_grace_period: str | None = None

    @field_validator("leak_grace_period")
    @classmethod
    def _grace(cls, v: str | None) -> str | None:
        return _duration(v)


class ControllersConfig(Model):
    node: NodeControllerConfig | None = None
    policy: _Periodic | None = None
    workload_endpoint: _Periodic | None = None
    service_account: _Periodic | None = None
    namespace: _Periodic | None = None


class KubeControllersConfigurationSpec(Model):
    log_severity_screen: Literal["Debug", "Info", "Warning", "Error", "Fatal", "Panic"] = "Info"
    health_checks: EnabledDisabled = "Enabled"
    etcd_v3_compaction_period: str | None = Field(default=None, alias="etcdV3CompactionPeriod")
    prometheus_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    debug_profile_port: int | None = Field(default=None, ge=0, le=65535)
    controllers: ControllersConfig = Field(default_factory=ControllersConfig)

    @field_validator("etcd_v3_compaction_period")
    @classmethod
    def _compaction(cls, v: str | None) -> str | None:
        return _duration(v)


class KubeControllersConfigurationStatus(Model):
    running_config: KubeControllersConfigurationSpec | None = None
    environment_vars: dict[str, str] = Field(default_factory=dict)


class KubeControllersConfiguration(Resource):
    KIND: ClassVar[str] = "KubeControllersConfiguration"
    PLURAL: ClassVar[str] = "kubecontrollersconfigurations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("kubecontrollersconfiguration", "kcc")
    spec: KubeControllersConfigurationSpec = Field(default_factory=KubeControllersConfigurationSpec)
    status: KubeControllersConfigurationStatus | None = None

    @classmethod
    def check_name(cls, name: str) -> None:
        if name != "default":
            raise FieldError("the only KubeControllersConfiguration is named 'default'")
