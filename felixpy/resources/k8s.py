"""Kubernetes kinds felixpy reads: networking.k8s.io/v1 NetworkPolicy, v1 Namespace and v1 ServiceAccount."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, FieldError, check_port
from felixpy.resources.name_rules import check_dns_label, check_label_key, check_labels


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_label_key(value)

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldError(f"operator {self.operator} requires at least one value", field="values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldError(f"operator {self.operator} takes no values", field="values")
        return self


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class IPBlock(Model):
    cidr: CIDR
    except_: list[CIDR] = Field(default_factory=list, alias="except")


class NetworkPolicyPeer(Model):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selects = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selects:
            raise FieldError("ipBlock cannot be combined with a pod or namespace selector", field="ipBlock")
        if self.ip_block is None and not selects:
            raise FieldError("needs podSelector, namespaceSelector or ipBlock", field="podSelector")
        return self


class NetworkPolicyPort(Model):
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int | str | None = None
    end_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: object) -> int | str | None:
        if value is None:
            return None
        port = check_port(value)
        if isinstance(port, str) and ":" in port:
            raise FieldError("a port range is written with port and endPort, not 'min:max'")
        return port

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        if self.end_port is not None:
            if not isinstance(self.port, int):
                raise FieldError("endPort requires a numeric port", field="endPort")
            if self.end_port < self.port:
                raise FieldError(f"endPort {self.end_port} is below port {self.port}", field="endPort")
        return self


class NetworkPolicyIngressRule(Model):
    # None = field absent (matches all); [] = present and empty (also matches all per the API)
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(Model):
    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class K8sNetworkPolicySpec(Model):
    pod_selector: LabelSelector = Field(default_factory=LabelSelector)
    policy_types: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None


class K8sNetworkPolicy(Resource):
    API_VERSION: ClassVar[str] = "networking.k8s.io/v1"
    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "k8snetworkpolicies"  # etcd-mode storage plural, distinct from Calico's
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("knp", "k8snetworkpolicy", "k8snetworkpolicies")
    NAMESPACED: ClassVar[bool] = True
    spec: K8sNetworkPolicySpec = Field(default_factory=K8sNetworkPolicySpec)


class NamespaceSpec(Model):
    model_config = ConfigDict(extra="allow")
    finalizers: list[str] = Field(default_factory=list)


class Namespace(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Namespace"
    PLURAL: ClassVar[str] = "namespaces"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("namespace", "namespaces", "ns")
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)

    @classmethod
    def check_name(cls, name: str) -> None:
        check_dns_label(name)


class ServiceAccount(Resource):
    """A v1 ServiceAccount: only its name and labels matter here (Calico's ``ksa.<ns>.<sa>`` profile:
    the labels reach endpoints running as it as ``pcsa.<key>``, for serviceAccountSelectors). Its
    secrets and token settings are not kept."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ServiceAccount"
    PLURAL: ClassVar[str] = "serviceaccounts"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("serviceaccount", "serviceaccounts", "sa")
    NAMESPACED: ClassVar[bool] = True
