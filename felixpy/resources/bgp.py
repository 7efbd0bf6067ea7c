"""BGPPeer and BGPConfiguration (projectcalico.org/v3)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, ASNumber, FieldError, PeerIP, Selector
from felixpy.resources.names import check_subdomain


class SecretKeyRef(Model):
    name: str
    key: str


class BGPPassword(Model):
    secret_key_ref: SecretKeyRef | None = None
    # felixpy extension for etcd-mode clusters without Secrets: the password in clear.
    value: str | None = None


class BGPPeerSpec(Model):
    node: str | None = None
    node_selector: Selector | None = None
    # "ip", "ip:port" or "[v6]:port"; felixpy.resources.fields.split_peer_ip splits it
    peer_ip: PeerIP | None = Field(default=None, alias="peerIP")
    peer_selector: Selector | None = None
    as_number: ASNumber | None = None  # plain or asdot ("1.10") on input, always int once validated
    local_as_number: ASNumber | None = Field(default=None, alias="localASNumber")
    keep_original_next_hop: bool = False
    next_hop_mode: Literal["Auto", "Self", "Keep"] | None = None
    password: BGPPassword | None = None
    source_address: Literal["UseNodeIP", "None"] = "UseNodeIP"
    max_restart_time: str | None = None  # Go duration, e.g. "120s"
    keepalive_time: str | None = None
    num_allowed_local_as_numbers: int | None = Field(default=None, alias="numAllowedLocalASNumbers")
    ttl_security: int | None = None
    reachable_by: str | None = None
    filters: list[str] = Field(default_factory=list)
    reverse_peering: Literal["Auto", "Manual"] | None = None

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        return None if value is None else check_subdomain(value, what="node name")

    @model_validator(mode="after")
    def _consistent(self) -> BGPPeerSpec:
        if self.node and self.node_selector:
            raise FieldError("node and nodeSelector cannot both be set", field="nodeSelector")
        if self.peer_ip and self.peer_selector:
            raise FieldError("peerIP and peerSelector cannot both be set", field="peerSelector")
        if self.peer_ip and self.as_number is None:
            raise FieldError("asNumber is required when peerIP is set", field="asNumber")
        if not self.peer_ip and not self.peer_selector:
            raise FieldError("one of peerIP or peerSelector is required", field="peerIP")
        return self


class BGPPeer(Resource):
    KIND: ClassVar[str] = "BGPPeer"
    PLURAL: ClassVar[str] = "bgppeers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps")
    spec: BGPPeerSpec


class Community(Model):
    name: str
    value: str


class PrefixAdvertisement(Model):
    cidr: CIDR
    communities: list[str] = Field(default_factory=list)


class ServiceCIDR(Model):
    cidr: CIDR


class BGPConfigurationSpec(Model):
    log_severity_screen: str | None = None
    node_to_node_mesh_enabled: bool | None = None  # None = default true
    as_number: ASNumber | None = None  # None = default 64512
    listen_port: int | None = Field(default=None, ge=1, le=65535)  # None = 179
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: str | None = None
    bind_mode: Literal["None", "NodeIP"] | None = None
    communities: list[Community] = Field(default_factory=list)
    prefix_advertisements: list[PrefixAdvertisement] = Field(default_factory=list)
    service_cluster_i_ps: list[ServiceCIDR] = Field(default_factory=list, alias="serviceClusterIPs")
    service_external_i_ps: list[ServiceCIDR] = Field(default_factory=list, alias="serviceExternalIPs")
    service_load_balancer_i_ps: list[ServiceCIDR] = Field(
        default_factory=list, alias="serviceLoadBalancerIPs"
    )
    ignored_interfaces: list[str] = Field(default_factory=list)
    # felixpy extensions: accept a learned default route; install equal-cost paths.
    import_default_route: bool | None = None
    ecmp: bool | None = None


class BGPConfiguration(Resource):
    KIND: ClassVar[str] = "BGPConfiguration"
    PLURAL: ClassVar[str] = "bgpconfigurations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = (
        "bgpconfiguration",
        "bgpconfigurations",
        "bgpconfig",
        "bgpconfigs",
    )
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)
