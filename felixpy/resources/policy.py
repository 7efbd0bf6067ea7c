"""Calico NetworkPolicy and GlobalNetworkPolicy (projectcalico.org/v3) and their rules."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import PORT_PROTOCOLS, FieldError, Net, Port, Protocol, Selector
from felixpy.resources.tier import check_policy_name

Action = Literal["Allow", "Deny", "Log", "Pass"]
PolicyType = Literal["Ingress", "Egress"]
ICMP_PROTOCOLS = frozenset({"ICMP", "ICMPv6", 1, 58})


class ICMPFields(Model):
    type: int | None = Field(default=None, ge=0, le=254)
    code: int | None = Field(default=None, ge=0, le=255)

    @model_validator(mode="after")
    def _code_needs_type(self) -> ICMPFields:
        if self.code is not None and self.type is None:
            raise FieldError("an ICMP code requires an ICMP type", field="code")
        return self


class ServiceAccountMatch(Model):
    names: list[str] = Field(default_factory=list)
    selector: Selector | None = None


class ServiceMatch(Model):
    name: str
    namespace: str | None = None


class EntityRule(Model):
    nets: list[Net] = Field(default_factory=list)
    not_nets: list[Net] = Field(default_factory=list)
    selector: Selector | None = None
    not_selector: Selector | None = None
    namespace_selector: Selector | None = None
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
    protocol: Protocol | None = None
    not_protocol: Protocol | None = None
    icmp: ICMPFields | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        for side in ("source", "destination"):
            entity: EntityRule = getattr(self, side)
            for ports in ("ports", "not_ports"):
                if getattr(entity, ports) and self.protocol not in PORT_PROTOCOLS:
                    alias = "ports" if ports == "ports" else "notPorts"
                    raise FieldError("ports require protocol TCP, UDP or SCTP", field=f"{side}.{alias}")
        for icmp, alias in ((self.icmp, "icmp"), (self.not_icmp, "notICMP")):
            if icmp is not None and self.protocol not in ICMP_PROTOCOLS:
                raise FieldError("ICMP matches require protocol ICMP or ICMPv6", field=alias)
        self._check_ip_version()
        return self

    def _check_ip_version(self) -> None:
        if self.ip_version is None:
            return
        icmp_version = {"ICMP": 4, 1: 4, "ICMPv6": 6, 58: 6}.get(self.protocol or "")
        if icmp_version is not None and icmp_version != self.ip_version:
            raise FieldError(f"{self.protocol} does not match ipVersion {self.ip_version}", field="protocol")
        for side in ("source", "destination"):
            entity: EntityRule = getattr(self, side)
            for nets, alias in ((entity.nets, "nets"), (entity.not_nets, "notNets")):
                for i, net in enumerate(nets):
                    if (":" in net) != (self.ip_version == 6):
                        raise FieldError(
                            f"{net} does not match ipVersion {self.ip_version}", field=f"{side}.{alias}[{i}]"
                        )


class NetworkPolicySpec(Model):
    tier: str = "default"
    order: int | float | None = None  # None = applied last
    selector: Selector = "all()"
    types: list[PolicyType] | None = None  # None = derived from which rule lists are present
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    service_account_selector: Selector | None = None
    performance_hints: list[str] = Field(default_factory=list)


class GlobalNetworkPolicySpec(NetworkPolicySpec):
    namespace_selector: Selector | None = None
    do_not_track: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    apply_on_forward: bool = False

    @model_validator(mode="after")
    def _host_table_flags(self) -> GlobalNetworkPolicySpec:
        """Calico's rules for untracked and pre-DNAT policy (libcalico-go's v3 validator)."""
        if self.pre_dnat and self.do_not_track:
            raise FieldError("preDNAT and doNotTrack cannot both be true", field="preDNAT")
        if self.pre_dnat and self.egress:
            raise FieldError("a preDNAT policy cannot have egress rules", field="egress")
        if self.pre_dnat and "Egress" in (self.types or ()):
            raise FieldError("a preDNAT policy's types cannot include Egress", field="types")
        if (self.pre_dnat or self.do_not_track) and not self.apply_on_forward:
            flag = "preDNAT" if self.pre_dnat else "doNotTrack"
            raise FieldError(f"applyOnForward must be true when {flag} is true", field="applyOnForward")
        return self


class NetworkPolicy(Resource):
    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "networkpolicies"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = (
        "networkpolicy",
        "networkpolicies",
        "policy",
        "policies",
        "np",
        "netpol",
        "netpols",
    )
    NAMESPACED: ClassVar[bool] = True
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)

    @model_validator(mode="after")
    def _tiered_name(self) -> NetworkPolicy:
        check_policy_name(self.metadata.name, self.spec.tier)
        return self


class GlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    PLURAL: ClassVar[str] = "globalnetworkpolicies"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps")
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)

    @model_validator(mode="after")
    def _tiered_name(self) -> GlobalNetworkPolicy:
        check_policy_name(self.metadata.name, self.spec.tier)
        return self
