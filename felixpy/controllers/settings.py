"""The effective controller settings: KubeControllersConfiguration ``default`` plus Calico's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from felixpy.resources.kubecontrollers import KubeControllersConfiguration, parse_duration

DEFAULT_PERIOD_S = 300.0
DEFAULT_LEAK_GRACE_S = 900.0
DEFAULT_METRICS_PORT = 9094


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    node_enabled: bool = True
    reconciler_period: float = DEFAULT_PERIOD_S
    leak_grace_period: float = DEFAULT_LEAK_GRACE_S  # 0 disables IP garbage collection
    sync_labels: bool = True
    auto_host_endpoints: bool = False
    workload_endpoint_enabled: bool = True
    namespace_enabled: bool = True
    service_account_enabled: bool = True
    policy_enabled: bool = True
    health_checks: bool = True
    metrics_port: int = DEFAULT_METRICS_PORT  # 0 disables
    log_severity: str = "Info"

    @classmethod
    def from_resource(cls, kcc: KubeControllersConfiguration | None) -> ControllerSettings:
        """Calico's rules: no resource → every default; a controller block left out → that controller off."""
        if kcc is None:
            return cls()
        spec = kcc.spec
        node = spec.controllers.node
        wep = spec.controllers.workload_endpoint

        def dur(text: str | None, default: float) -> float:
            return default if text is None else parse_duration(text)

        return cls(
            node_enabled=node is not None,
            reconciler_period=dur(node.reconciler_period if node else None, DEFAULT_PERIOD_S),
            leak_grace_period=dur(node.leak_grace_period if node else None, DEFAULT_LEAK_GRACE_S),
            sync_labels=node is not None and node.sync_labels == "Enabled",
            auto_host_endpoints=bool(
                node and node.host_endpoint and node.host_endpoint.auto_create == "Enabled"
            ),
            workload_endpoint_enabled=wep is not None,
            namespace_enabled=spec.controllers.namespace is not None,
            service_account_enabled=spec.controllers.service_account is not None,
            policy_enabled=spec.controllers.policy is not None,
            health_checks=spec.health_checks == "Enabled",
            metrics_port=DEFAULT_METRICS_PORT
            if spec.prometheus_metrics_port is None
            else spec.prometheus_metrics_port,
            log_severity=spec.log_severity_screen,
        )

    @property
    def gc_interval(self) -> float:
        """How often a GC pass runs: the reconciler period, but at least twice per grace period."""
        half = self.leak_grace_period / 2 if self.leak_grace_period > 0 else DEFAULT_PERIOD_S
        return max(0.2, min(self.reconciler_period, half))
