"""Calico NetworkPolicy and GlobalNetworkPolicy (projectcalico.org/v3) and their rules."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from felixpy.resources.base import Model, Resource

Action = Literal["Allow", "Deny", "Log", "Pass"]
PolicyType = Literal["Ingress", "Egress"]
Port = int | str  # 80, "8080:8090", or a named port "http"


class ICMPFields(Model):
    type: int | None = None
    code: int | None = None


class ServiceAccountMatch(Model):
    names: list[str] = Field(default_factory=list)
    selector: str | None = None


class ServiceMatch(Model):
    name: str
    namespace: str | None = None


class EntityRule(Model):
    nets: list[str] = Field(default_factory=list)
    not_nets: list[str] = Field(default_factory=list)
    selector: str | None = None
    not_selector: str | None = None
    namespace_selector: str | None = None
    ports: list[Port] = Field(default_factory=list)
    not_ports: list[Port] = Field(default_factory=list)
    service_accounts: ServiceAccountMatch | None = None
    services: ServiceMatch | None = None


class HTTPMatch(Model):
    methods: list[str] = Field(default_factory=list)
    paths: list[dict[str, str]] = Field(default_factory=list)


class RuleMetadata(Model):
    annotations: dict[str, str] = Field(default_factory=dict)


class Rule(Model):
    action: Action
    ip_version: Literal[4, 6] | None = None
    protocol: str | int | None = None
    not_protocol: str | int | None = None
    icmp: ICMPFields | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None


class NetworkPolicySpec(Model):
    tier: str = "default"
    order: float | None = None
    selector: str = "all()"
    types: list[PolicyType] | None = None  # None = derived from which rule lists are present
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    service_account_selector: str | None = None
    performance_hints: list[str] = Field(default_factory=list)


class GlobalNetworkPolicySpec(NetworkPolicySpec):
    namespace_selector: str | None = None
    do_not_track: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    apply_on_forward: bool = False


class NetworkPolicy(Resource):
    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "networkpolicies"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("networkpolicy", "networkpolicies", "policy", "policies", "np", "netpol", "netpols")
    NAMESPACED: ClassVar[bool] = True
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    PLURAL: ClassVar[str] = "globalnetworkpolicies"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps")
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)
