"""FelixConfiguration (projectcalico.org/v3): `default` and per-node `node.<name>`.

Only the fields felixpy acts on are typed; the rest of Felix's parameters are accepted
(extra="allow") so a Calico user's FelixConfiguration applies without edits.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from felixpy.resources.base import Model, Resource


class ProtoPort(Model):
    protocol: str = "TCP"
    port: int
    net: str | None = None


class FelixConfigurationSpec(Model):
    model_config = ConfigDict(extra="allow")

    log_severity_screen: str | None = None
    interface_prefix: str | None = None  # default "cali"
    ipip_enabled: bool | None = None
    ipip_mtu: int | None = Field(default=None, alias="ipipMTU")
    vxlan_enabled: bool | None = None
    vxlan_vni: int | None = Field(default=None, alias="vxlanVNI")
    vxlan_port: int | None = None
    vxlan_mtu: int | None = Field(default=None, alias="vxlanMTU")
    veth_mtu: int | None = Field(default=None, alias="vethMTU")  # felixpy: explicit pod MTU override
    iptables_refresh_interval: str | None = None
    route_refresh_interval: str | None = None
    ipsets_refresh_interval: str | None = None
    default_endpoint_to_host_action: (
        Literal["Drop", "Accept", "Return", "DROP", "ACCEPT", "RETURN"] | None
    ) = None
    chain_insert_mode: Literal["Insert", "Append"] | None = None
    iptables_backend: Literal["Legacy", "NFT", "Auto"] | None = None
    iptables_mark_mask: int | None = None
    nat_outgoing_address: str | None = None
    failsafe_inbound_host_ports: list[ProtoPort] | None = None
    failsafe_outbound_host_ports: list[ProtoPort] | None = None
    health_enabled: bool | None = None
    health_port: int | None = None
    health_host: str | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_host: str | None = None
    prometheus_metrics_port: int | None = None
    prometheus_wire_guard_metrics_enabled: bool | None = Field(
        default=None, alias="prometheusWireGuardMetricsEnabled"
    )  # default true: wireguard_* on /metrics
    device_route_protocol: int | None = None
    route_table_range: dict[str, int] | None = None
    workload_source_spoofing: Literal["Disabled", "Any"] | None = None  # default Disabled
    wireguard_enabled: bool | None = None  # WireGuard encryption of pod traffic (IPv4)
    wireguard_enabled_v6: bool | None = Field(default=None, alias="wireguardEnabledV6")
    wireguard_listening_port: int | None = Field(default=None, ge=1, le=65535)  # default 51820
    wireguard_interface_name: str | None = Field(default=None, min_length=1, max_length=15)
    wireguard_mtu: int | None = Field(default=None, alias="wireguardMTU", ge=0)  # 0 = host MTU - 60
    wireguard_routing_rule_priority: int | None = Field(default=None, ge=1, le=32765)  # default 99
    wireguard_host_encryption_enabled: bool | None = None
    wireguard_keep_alive: str | None = None  # duration, "0" = off
    # the IPv6 device (wireguardEnabledV6), Calico's names: defaults 51821, wg-v6.cali, 0 = host MTU - 80
    wireguard_listening_port_v6: int | None = Field(default=None, alias="wireguardListeningPortV6", ge=1,
                                                    le=65535)
    wireguard_interface_name_v6: str | None = Field(default=None, alias="wireguardInterfaceNameV6",
                                                    min_length=1, max_length=15)
    wireguard_mtu_v6: int | None = Field(default=None, alias="wireguardMTUV6", ge=0)


class FelixConfiguration(Resource):
    KIND: ClassVar[str] = "FelixConfiguration"
    PLURAL: ClassVar[str] = "felixconfigurations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = (
        "felixconfiguration",
        "felixconfigurations",
        "felixconfig",
        "felixconfigs",
    )
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)
