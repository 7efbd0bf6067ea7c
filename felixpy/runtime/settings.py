"""Agent settings: the calico-node environment, plus Felix parameters with Felix's precedence.

Built once in main and passed down. Felix parameters resolve, highest first:
``FELIX_<PARAM>`` env > FelixConfiguration ``node.<nodename>`` > FelixConfiguration ``default``
> built-in default (reference §1). `FelixParams.resolve` is pure, so it is tested alone.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from policy.chains import DEFAULT_FAILSAFE_IN, DEFAULT_FAILSAFE_OUT

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"1m30s"`` or ``"500ms"`` (Go duration syntax)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {value!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def parse_proto_ports(value: Any) -> tuple[tuple[str, int], ...]:
    """Felix's failsafe port lists: "tcp:22,udp:68", "none", or FelixConfiguration's [{protocol, port}]."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return ()
        items: list[Any] = [part.strip() for part in text.split(",") if part.strip()]
    else:
        items = list(value)
    out = []
    for item in items:
        if isinstance(item, str):
            proto, _, port = item.rpartition(":")
            out.append(((proto or "tcp").lower(), int(port)))
        elif isinstance(item, Mapping):
            out.append((str(item.get("protocol", "tcp")).lower(), int(item["port"])))
        else:
            proto, port = item
            out.append((str(proto).lower(), int(port)))
    return tuple(out)


class FelixParams(BaseModel):
    """The Felix parameters the agent acts on. Field name = FelixConfiguration camelCase key."""

    model_config = ConfigDict(frozen=True)

    routeRefreshInterval: float = 90.0
    iptablesRefreshInterval: float = 90.0
    ipsetsRefreshInterval: float = 90.0
    vethMTU: int = 0  # 0 = auto: host MTU - encapsulation overhead
    ipipMTU: int = 0
    vxlanMTU: int = 0
    vxlanVNI: int = 4096
    vxlanPort: int = 4789
    interfacePrefix: str = "cali"
    ipv6Support: bool = True  # ip6tables policy and IPv6 forwarding (Felix's FELIX_IPV6SUPPORT)
    # Health and metrics are two listeners, each with its own host and port. Health is on loopback
    # (the kubelet probes a hostNetwork pod on 127.0.0.1), metrics are off unless asked for, as in
    # Felix; when enabled they too stay on loopback unless FELIX_PROMETHEUSMETRICSHOST says otherwise.
    healthEnabled: bool = True
    healthHost: str = "127.0.0.1"
    healthPort: int = Field(default=9099, ge=1, le=65535)
    prometheusMetricsEnabled: bool = False
    prometheusMetricsHost: str = "127.0.0.1"
    prometheusMetricsPort: int = Field(default=9091, ge=1, le=65535)
    # Calico's wireguard_* families on /metrics (felixpy.runtime.wireguard_metrics); false drops them
    prometheusWireGuardMetricsEnabled: bool = True
    logSeverityScreen: str = "Info"
    defaultEndpointToHostAction: Literal["DROP", "ACCEPT", "RETURN"] = "DROP"
    # Host ports never blocked by host endpoint policy. FelixConfiguration: [{protocol, port}, ...];
    # env FELIX_FAILSAFEINBOUNDHOSTPORTS: "tcp:22,udp:68" (Felix's form) or "none".
    failsafeInboundHostPorts: tuple[tuple[str, int], ...] = DEFAULT_FAILSAFE_IN
    failsafeOutboundHostPorts: tuple[tuple[str, int], ...] = DEFAULT_FAILSAFE_OUT
    # "Any": honour workload endpoints' allowSpoofedSourcePrefixes (exceptions to the raw RPF check).
    workloadSourceSpoofing: Literal["Disabled", "Any"] = "Disabled"
    # WireGuard (Calico's names and defaults; felixpy.dataplane.wireguard_driver), IPv4 then IPv6
    wireguardEnabled: bool = False
    wireguardListeningPort: int = 51820
    wireguardInterfaceName: str = "wireguard.cali"
    wireguardMTU: int = 0  # 0 = host MTU - 60
    wireguardRoutingRulePriority: int = 99
    wireguardHostEncryptionEnabled: bool = False
    wireguardKeepAlive: float = 0.0  # seconds (FelixConfiguration: a duration), 0 = off
    wireguardEnabledV6: bool = False  # wg-v6.cali: IPv6 pod traffic, its own key (wireguardPublicKeyV6)
    wireguardListeningPortV6: int = 51821
    wireguardInterfaceNameV6: str = "wg-v6.cali"
    wireguardMTUV6: int = 0  # 0 = host MTU - 80

    @field_validator("healthHost", "prometheusMetricsHost")
    @classmethod
    def _listen_host(cls, value: str) -> str:
        """An IP address to bind ("" = every address, as Felix reads an empty host)."""
        text = value.strip()
        if text == "":
            return "0.0.0.0"
        if text == "localhost":
            return "127.0.0.1"
        ipaddress.ip_address(text)  # ValueError names the bad value
        return text

    @field_validator("defaultEndpointToHostAction", mode="before")
    @classmethod
    def _action(cls, value: object) -> str:
        return str(value).strip().upper()

    @field_validator("failsafeInboundHostPorts", "failsafeOutboundHostPorts", mode="before")
    @classmethod
    def _proto_ports(cls, value: Any) -> tuple[tuple[str, int], ...]:
        return parse_proto_ports(value)

    @classmethod
    def env_name(cls, field: str) -> str:
        return "FELIX_" + field.upper()

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str],
        node_config: Mapping[str, object] | None = None,
        global_config: Mapping[str, object] | None = None,
    ) -> FelixParams:
        values: dict[str, object] = {}
        for field, info in cls.model_fields.items():
            for source in (global_config or {}, node_config or {}):
                if source.get(field) is not None:
                    values[field] = source[field]
            env_value = env.get(cls.env_name(field))
            if env_value not in (None, ""):
                values[field] = env_value
            if field in values and info.annotation is float:
                values[field] = parse_duration(values[field])
            value = values.get(field)
            if info.annotation is bool and isinstance(value, str):
                values[field] = value.strip().lower() in ("true", "1", "yes")
        return cls.model_validate(values)


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """``true``/``false`` (also 1/0, yes/no, any case); unset or empty = default; else one clear error."""
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"{name}: expected true or false, not {env[name]!r}")


def _env_duration(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration from the environment; a bad value names the variable."""
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a duration (seconds, or like 90s, 1h)") from None


class Settings(BaseModel):
    """What `felixpy node` reads from its environment."""

    model_config = ConfigDict(frozen=True)

    nodename: str
    datastore_type: Literal["etcdv3", "kubernetes"] = "etcdv3"
    etcd_endpoints: str = "http://127.0.0.1:2379"
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    ip: str | None = "autodetect"  # addr/prefix | autodetect | none
    ip_autodetection_method: str = "first-found"
    ip6: str | None = "none"  # addr/prefix | autodetect | none (calico-node's IP6; none by default)
    ip6_autodetection_method: str = "first-found"
    as_number: str | None = None
    networking_backend: Literal["bird", "none", "vxlan"] = "bird"
    default_pool_cidr: str | None = None
    default_pool_ipip: str = "Never"
    default_pool_vxlan: str = "Never"
    default_pool_block_size: int = 26
    default_pool_nat_outgoing: bool = True
    default_pool_node_selector: str = "all()"
    default_pool_v6_cidr: str | None = None  # CALICO_IPV6POOL_CIDR: no IPv6 pool unless set
    default_pool_v6_block_size: int = 122
    default_pool_v6_vxlan: str = "Never"
    default_pool_v6_nat_outgoing: bool = False
    default_pool_v6_node_selector: str = "all()"
    no_default_pools: bool = False
    run_dir: str = "/var/run/felixpy"
    state_dir: str = "/var/lib/felixpy"  # FELIXPY_STATE_DIR: the nodename file for the CNI plugins
    log_level: str = "info"
    route_reflector: bool = False
    rr_cluster_id: str | None = None  # ROUTE_REFLECTOR_CLUSTER_ID (--route-reflector mode)
    rr_label: str | None = None  # ROUTE_REFLECTOR_LABEL: <label>=true on our Node
    policy_enabled: bool = True  # FELIXPY_POLICY=off: program nothing in iptables/ipsets
    bfd_external: bool = False  # FELIXPY_BFD_EXTERNAL: adopt the bfd sidecar's daemon, never start one
    # FELIXPY_DATASTORE_LOCK_WAIT: how long start-up waits for `felixctl datastore migrate unlock`
    # (ClusterInformation datastoreReady: false) before giving up with exit 1; 0 = do not wait.
    datastore_lock_wait: float = Field(default=3600.0, ge=0)
    env: dict[str, str] = Field(default_factory=dict, repr=False)  # FELIX_* for FelixParams

    @field_validator("ip", "ip6")
    @classmethod
    def _node_ip(cls, value: str | None, info: ValidationInfo) -> str | None:
        """IP / IP6: an address (optionally /prefix) of the right family, 'autodetect' or 'none'."""
        if value is None or value.strip().lower() in ("autodetect", "none"):
            return value
        name, version = ("IP6", 6) if info.field_name == "ip6" else ("IP", 4)
        try:
            given = ipaddress.ip_interface(value.strip())
        except ValueError:
            raise ValueError(
                f"{name}={value!r}: not an address, an address/prefix, 'autodetect' or 'none'"
            ) from None
        if given.version != version:
            raise ValueError(f"{name}={value!r}: not an IPv{version} address")
        return value.strip()

    @field_validator("ip_autodetection_method", "ip6_autodetection_method")
    @classmethod
    def _autodetection_method(cls, value: str, info: ValidationInfo) -> str:
        """first-found, interface=REGEX or can-reach=DESTINATION, as calico-node reads them."""
        v6 = info.field_name == "ip6_autodetection_method"
        name = "IP6_AUTODETECTION_METHOD" if v6 else "IP_AUTODETECTION_METHOD"
        text = value.strip()
        if text == "first-found" or (text.startswith("can-reach=") and text[len("can-reach="):]):
            return text
        if text.startswith("interface="):
            try:
                re.compile(text[len("interface="):])
            except re.error as err:
                raise ValueError(f"{name}={value!r}: not a regular expression ({err})") from None
            return text
        raise ValueError(f"{name}={value!r}: use first-found, interface=REGEX or can-reach=DESTINATION")

    @property
    def bgp_enabled(self) -> bool:
        return self.networking_backend == "bird"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "cni.sock")

    @property
    def mtu_path(self) -> str:
        return os.path.join(self.run_dir, "mtu")

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, route_reflector: bool = False) -> Settings:
        nodename = env.get("NODENAME") or env.get("HOSTNAME") or os.uname().nodename

        def get(name: str, default: Any = None) -> Any:
            value = env.get(name)
            return default if value in (None, "") else value

        return cls(
            nodename=nodename,
            datastore_type=get("DATASTORE_TYPE", "etcdv3"),
            etcd_endpoints=get("ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
            etcd_ca_cert_file=get("ETCD_CA_CERT_FILE"),
            etcd_cert_file=get("ETCD_CERT_FILE"),
            etcd_key_file=get("ETCD_KEY_FILE"),
            ip=get("IP", "autodetect"),
            ip_autodetection_method=get("IP_AUTODETECTION_METHOD", "first-found"),
            ip6=get("IP6", "none"),
            ip6_autodetection_method=get("IP6_AUTODETECTION_METHOD", "first-found"),
            as_number=get("AS"),
            networking_backend=get("CALICO_NETWORKING_BACKEND", "bird"),
            default_pool_cidr=get("CALICO_IPV4POOL_CIDR"),
            default_pool_ipip=get("CALICO_IPV4POOL_IPIP", "Never"),
            default_pool_vxlan=get("CALICO_IPV4POOL_VXLAN", "Never"),
            default_pool_block_size=int(get("CALICO_IPV4POOL_BLOCK_SIZE", 26)),
            default_pool_nat_outgoing=env_bool(env, "CALICO_IPV4POOL_NAT_OUTGOING", True),
            default_pool_node_selector=get("CALICO_IPV4POOL_NODE_SELECTOR", "all()"),
            default_pool_v6_cidr=get("CALICO_IPV6POOL_CIDR"),
            default_pool_v6_block_size=int(get("CALICO_IPV6POOL_BLOCK_SIZE", 122)),
            default_pool_v6_vxlan=get("CALICO_IPV6POOL_VXLAN", "Never"),
            default_pool_v6_nat_outgoing=env_bool(env, "CALICO_IPV6POOL_NAT_OUTGOING", False),
            default_pool_v6_node_selector=get("CALICO_IPV6POOL_NODE_SELECTOR", "all()"),
            no_default_pools=str(get("NO_DEFAULT_POOLS", "false")).lower() in ("true", "1", "yes"),
            run_dir=get("FELIXPY_RUN_DIR", "/var/run/felixpy"),
            state_dir=get("FELIXPY_STATE_DIR", "/var/lib/felixpy"),
            log_level=get("FELIXPY_LOG_LEVEL", get("FELIX_LOGSEVERITYSCREEN", "info")).lower(),
            route_reflector=route_reflector,
            rr_cluster_id=get("ROUTE_REFLECTOR_CLUSTER_ID"),
            rr_label=get("ROUTE_REFLECTOR_LABEL"),
            policy_enabled=str(get("FELIXPY_POLICY", "on")).lower() not in ("off", "false", "0"),
            bfd_external=env_bool(env, "FELIXPY_BFD_EXTERNAL", False),
            datastore_lock_wait=_env_duration(env, "FELIXPY_DATASTORE_LOCK_WAIT", 3600.0),
            env={k: v for k, v in env.items() if k.startswith("FELIX_")},
        )
