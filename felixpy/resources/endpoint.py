"""WorkloadEndpoint and HostEndpoint (projectcalico.org/v3)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, MAC, FieldError, IPAddress, check_port_name
from felixpy.resources.name_rules import check_subdomain, check_wep_name

_IFACE = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")


def check_iface(value: str) -> str:
    """A Linux interface name: 1..15 characters, no '/' or whitespace."""
    if not _IFACE.match(value):
        raise FieldError(f"'{value}' is not a valid interface name (1-15 characters, no '/' or spaces)")
    return value


NodeName = Annotated[str, AfterValidator(lambda v: check_subdomain(v, what="node name"))]
InterfaceName = Annotated[str, AfterValidator(check_iface)]


class EndpointPort(Model):
    name: Annotated[str, AfterValidator(check_port_name)]
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int = Field(ge=1, le=65535)
    host_port: int | None = Field(default=None, ge=1, le=65535)
    host_ip: IPAddress | None = Field(default=None, alias="hostIP")


class IPNAT(Model):
    internal_ip: IPAddress = Field(alias="internalIP")
    external_ip: IPAddress = Field(alias="externalIP")


class WorkloadEndpointSpec(Model):
    orchestrator: str = "k8s"
    workload: str | None = None
    node: NodeName
    container_id: str | None = Field(default=None, alias="containerID")
    pod: str | None = None
    endpoint: str = "eth0"
    service_account_name: str | None = None
    ip_networks: list[CIDR] = Field(default_factory=list)  # /32 and /128 CIDRs
    ip_na_ts: list[IPNAT] = Field(default_factory=list, alias="ipNATs")
    ipv4_gateway: IPAddress | None = None
    ipv6_gateway: IPAddress | None = None
    profiles: list[str] = Field(default_factory=list)
    interface_name: InterfaceName
    mac: MAC | None = None
    ports: list[EndpointPort] = Field(default_factory=list)
    allow_spoofed_source_prefixes: list[CIDR] = Field(default_factory=list)


class WorkloadEndpoint(Resource):
    KIND: ClassVar[str] = "WorkloadEndpoint"
    PLURAL: ClassVar[str] = "workloadendpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("workloadendpoint", "workloadendpoints", "wep", "weps")
    NAMESPACED: ClassVar[bool] = True
    spec: WorkloadEndpointSpec

    @classmethod
    def check_name(cls, name: str) -> None:
        check_wep_name(name)


class HostEndpointSpec(Model):
    node: NodeName
    interface_name: str | None = None  # "*" = all of the host's interfaces
    expected_i_ps: list[IPAddress] = Field(default_factory=list, alias="expectedIPs")
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @field_validator("interface_name")
    @classmethod
    def _iface(cls, value: str | None) -> str | None:
        return value if value in (None, "*") else check_iface(value)

    @model_validator(mode="after")
    def _consistent(self) -> HostEndpointSpec:
        if not self.interface_name and not self.expected_i_ps:
            raise FieldError("one of interfaceName or expectedIPs is required", field="interfaceName")
        return self


class HostEndpoint(Resource):
    KIND: ClassVar[str] = "HostEndpoint"
    PLURAL: ClassVar[str] = "hostendpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("hostendpoint", "hostendpoints", "hep", "heps")
    spec: HostEndpointSpec
