"""WorkloadEndpoint and HostEndpoint (projectcalico.org/v3)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from felixpy.resources.base import Model, Resource


class EndpointPort(Model):
    name: str
    protocol: str = "TCP"
    port: int
    host_port: int | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")


class IPNAT(Model):
    internal_ip: str = Field(alias="internalIP")
    external_ip: str = Field(alias="externalIP")


class WorkloadEndpointSpec(Model):
    orchestrator: str = "k8s"
    workload: str | None = None
    node: str
    container_id: str | None = Field(default=None, alias="containerID")
    pod: str | None = None
    endpoint: str = "eth0"
    service_account_name: str | None = None
    ip_networks: list[str] = Field(default_factory=list)  # /32 and /128 CIDRs
    ip_na_ts: list[IPNAT] = Field(default_factory=list, alias="ipNATs")
    ipv4_gateway: str | None = None
    ipv6_gateway: str | None = None
    profiles: list[str] = Field(default_factory=list)
    interface_name: str
    mac: str | None = None
    ports: list[EndpointPort] = Field(default_factory=list)
    allow_spoofed_source_prefixes: list[str] = Field(default_factory=list)


class WorkloadEndpoint(Resource):
    KIND: ClassVar[str] = "WorkloadEndpoint"
    PLURAL: ClassVar[str] = "workloadendpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("workloadendpoint", "workloadendpoints", "wep", "weps")
    NAMESPACED: ClassVar[bool] = True
    spec: WorkloadEndpointSpec


class HostEndpointSpec(Model):
    node: str
    interface_name: str | None = None
    expected_i_ps: list[str] = Field(default_factory=list, alias="expectedIPs")
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


class HostEndpoint(Resource):
    KIND: ClassVar[str] = "HostEndpoint"
    PLURAL: ClassVar[str] = "hostendpoints"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("hostendpoint", "hostendpoints", "hep", "heps")
    spec: HostEndpointSpec
