"""Kubernetes kinds felixpy reads: networking.k8s.io/v1 NetworkPolicy and v1 Namespace."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from felixpy.resources.base import Model, Resource


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class IPBlock(Model):
    cidr: str
    except_: list[str] = Field(default_factory=list, alias="except")


class NetworkPolicyPeer(Model):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


class NetworkPolicyPort(Model):
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int | str | None = None
    end_port: int | None = None


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
