"""BGPPeer, BGPFilter and BGPConfiguration (projectcalico.org/v3)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, ASNumber, FieldError, PeerIP, Selector
from felixpy.resources.name_rules import check_subdomain


class SecretKeyRef(Model):
    name: str
    key: str


class BGPPassword(Model):
    secret_key_ref: SecretKeyRef | None = None
    # felixpy extension for etcd-mode clusters without Secrets: the password in clear.
    value: str | None = None


MAX_PREFIXES_CAP = 10_000_000
MAX_AS_PATH_CAP = 1000
MaxPrefixesAction = Literal["Warn", "Block", "Restart", "Disable"]

# BFD (issue 19): Calico Enterprise's BGPPeer failureDetectionMode, plus "BFD" (felixpy: single-hop
# when the peer is on a link, else RFC 5883 multihop); timers named after Calico Enterprise's
# BFDConfiguration (BIRD: min rx / min tx / idle tx interval, multiplier)
FailureDetectionMode = Literal["None", "BFDIfDirectlyConnected", "BFD"]
BFD_LIMITS = {  # field -> (lowest, highest) seconds
    "minimumRecvInterval": (0.01, 60.0),
    "minimumSendInterval": (0.01, 60.0),
    "idleSendInterval": (1.0, 60.0),
    "holdDownTime": (0.0, 600.0),
}


class BFDSettings(Model):
    """Unset fields: the BGPConfiguration's ``nodePeerBFD``, then 300ms, 300ms, 1s, 3, 5s."""

    minimum_recv_interval: str | None = None
    minimum_send_interval: str | None = None
    idle_send_interval: str | None = None
    multiplier: int | None = Field(default=None, ge=1, le=255)
    # felixpy: flap damping, the first hold-down before a failed peer's routes come back (doubled
    # for each further failure within 10 minutes, at most 64x; "0s" turns damping off)
    hold_down_time: str | None = None

    @model_validator(mode="after")
    def _durations(self) -> BFDSettings:
        from felixpy.resources.kubecontrollers import parse_duration

        for name, (low, high) in BFD_LIMITS.items():
            text = getattr(self, to_snake(name))
            if text is None:
                continue
            try:
                seconds = parse_duration(text)
            except ValueError as err:
                raise FieldError(str(err), field=name) from None
            if not low <= seconds <= high:
                raise FieldError(f"{text!r} is outside {low:g}s..{high:g}s", field=name)
        return self


def to_snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


BGPFilterName = Annotated[str, AfterValidator(lambda name: check_subdomain(name, what="BGPFilter name"))]


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
    # how many times our own AS may appear in a received AS_PATH (BIRD "allow local as N")
    num_allowed_local_as_numbers: int | None = Field(default=None, ge=0, alias="numAllowedLocalASNumbers")
    # GTSM (RFC 5082): the peer is at most this many hops away; 0 or unset = off
    ttl_security: int | None = Field(default=None, ge=0, le=255)
    reachable_by: str | None = None
    filters: list[BGPFilterName] = Field(default_factory=list)  # applied in this order
    reverse_peering: Literal["Auto", "Manual"] | None = None
    # felixpy extensions (issue 12), after BIRD's "receive limit N action warn|block|restart|disable":
    # at most this many prefixes received on the session (unset: the BGPConfiguration's
    # nodePeerMaxPrefixes for sessions to other nodes, no limit for other peers; 0 = no limit)
    max_prefixes: int | None = Field(default=None, ge=0, le=MAX_PREFIXES_CAP)
    max_prefixes_action: MaxPrefixesAction | None = None  # unset: Restart
    # received routes whose AS_PATH is longer than this are refused (unset: the BGPConfiguration's)
    max_as_path_length: int | None = Field(default=None, ge=1, le=MAX_AS_PATH_CAP, alias="maxASPathLength")
    # BFD on this session (unset: the BGPConfiguration's nodePeerFailureDetectionMode when the peer
    # is a node, else None) and its timers
    failure_detection_mode: FailureDetectionMode | None = None
    bfd: BFDSettings | None = None

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


class BGPFilterPrefixLength(Model):
    min: int | None = Field(default=None, ge=0, le=128)
    max: int | None = Field(default=None, ge=0, le=128)


MAX_ROUTE_PRIORITY = 2147483646
# Calico's BGPFilter interface match: an interface name, ``*`` matching any run of characters
_IFACE_PATTERN = re.compile(r"^[A-Za-z0-9_.*-]{1,64}$")


def _check_community(value: str) -> str:
    """``aa:nn`` (standard, each 0..65535) or ``aa:nn:mm`` (large, each 0..4294967295)."""
    parts = value.split(":") if isinstance(value, str) else []
    top = {2: 65535, 3: 4294967295}.get(len(parts))
    if top is None or not all(p.isdigit() and int(p) <= top for p in parts):
        raise FieldError(
            f"{value!r} is not a community: 'aa:nn' (each 0..65535) or 'aa:nn:mm' (each 0..4294967295)"
        )
    return ":".join(str(int(p)) for p in parts)


Community_ = Annotated[str, AfterValidator(_check_community)]


class BGPFilterCommunityMatch(Model):
    values: list[Community_] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> BGPFilterCommunityMatch:
        if len(self.values) != 1:
            raise FieldError(f"exactly one community is supported (as in Calico), got {len(self.values)}",
                             field="values")  # fmt: skip
        return self


class BGPFilterAddCommunity(Model):
    value: Community_


class BGPFilterPrependASPath(Model):
    prefix: list[ASNumber] = Field(min_length=1)


class BGPFilterSetPriority(Model):
    value: int = Field(ge=1, le=MAX_ROUTE_PRIORITY)


class BGPFilterOperation(Model):
    """Exactly one of ``addCommunity``, ``prependASPath``, ``setPriority``."""

    add_community: BGPFilterAddCommunity | None = None
    prepend_as_path: BGPFilterPrependASPath | None = Field(default=None, alias="prependASPath")
    set_priority: BGPFilterSetPriority | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BGPFilterOperation:
        given = [
            n for n in ("add_community", "prepend_as_path", "set_priority") if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise FieldError(
                "an operation is exactly one of addCommunity, prependASPath, setPriority"
                + (f" (got {len(given)})" if given else "")
            )
        return self


class BGPFilterRule(Model):
    """One rule of a BGPFilter list: ``action`` and any of the matches, all of which must hold —
    ``cidr`` + ``matchOperator`` (both or neither), ``prefixLength`` (needs ``cidr``),
    ``source: RemotePeers`` (export lists only), ``interface``, ``peerType``, ``communities``,
    ``asPathPrefix``, ``priority`` — and ``operations`` (``Accept`` rules only)."""

    cidr: CIDR | None = None
    match_operator: Literal["Equal", "NotEqual", "In", "NotIn"] | None = None
    prefix_length: BGPFilterPrefixLength | None = None
    source: Literal["RemotePeers"] | None = None
    action: Literal["Accept", "Reject"]
    interface: str | None = None
    peer_type: Literal["eBGP", "iBGP"] | None = None
    communities: BGPFilterCommunityMatch | None = None
    as_path_prefix: list[ASNumber] | None = Field(default=None, alias="asPathPrefix")
    priority: int | None = Field(default=None, ge=1, le=MAX_ROUTE_PRIORITY)
    operations: list[BGPFilterOperation] | None = None

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str | None) -> str | None:
        if value is not None and not _IFACE_PATTERN.match(value):
            raise FieldError(
                f"{value!r} is not an interface name pattern"
                " (letters, digits, '_', '.', '-'; '*' is a wildcard)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BGPFilterRule:
        if (self.cidr is None) != (self.match_operator is None):
            missing = "matchOperator" if self.match_operator is None else "cidr"
            raise FieldError("cidr and matchOperator must both be set or both be left out", field=missing)
        if self.prefix_length is not None:
            if self.cidr is None:
                raise FieldError("requires cidr", field="prefixLength")
            low, high = self.prefix_length.min, self.prefix_length.max
            if low is not None and high is not None and low > high:
                raise FieldError(f"min {low} is larger than max {high}", field="prefixLength")
        if self.as_path_prefix is not None and not self.as_path_prefix:
            raise FieldError("must name at least one AS number", field="asPathPrefix")
        if self.operations and self.action != "Accept":
            raise FieldError("only Accept rules can have operations", field="operations")
        return self


def _check_rules(rules: list[BGPFilterRule], field: str, version: int, *, export: bool) -> None:
    bits = 32 if version == 4 else 128
    for i, rule in enumerate(rules):
        where = f"{field}[{i}]"
        if rule.cidr is not None and ipaddress.ip_network(rule.cidr).version != version:
            raise FieldError(f"'{rule.cidr}' is not an IPv{version} CIDR", field=f"{where}.cidr")
        if rule.source is not None and not export:
            raise FieldError("applies to export rules only (imported routes all come from the peer)",
                             field=f"{where}.source")  # fmt: skip
        length = rule.prefix_length
        for end in ("min", "max"):
            value = getattr(length, end) if length is not None else None
            if value is not None and value > bits:
                raise FieldError(f"must be 0..{bits} for IPv{version}", field=f"{where}.prefixLength.{end}")


class BGPFilterSpec(Model):
    export_v4: list[BGPFilterRule] = Field(default_factory=list, alias="exportV4")
    import_v4: list[BGPFilterRule] = Field(default_factory=list, alias="importV4")
    export_v6: list[BGPFilterRule] = Field(default_factory=list, alias="exportV6")
    import_v6: list[BGPFilterRule] = Field(default_factory=list, alias="importV6")

    @model_validator(mode="after")
    def _families(self) -> BGPFilterSpec:
        _check_rules(self.export_v4, "exportV4", 4, export=True)
        _check_rules(self.import_v4, "importV4", 4, export=False)
        _check_rules(self.export_v6, "exportV6", 6, export=True)
        _check_rules(self.import_v6, "importV6", 6, export=False)
        return self


class BGPFilter(Resource):
    """Import/export rules for the sessions of the BGPPeers that name it in ``filters``: evaluated in
    order, the first rule that matches decides, no match leaves the route to the default behaviour."""

    KIND: ClassVar[str] = "BGPFilter"
    PLURAL: ClassVar[str] = "bgpfilters"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bgpfilter", "bgpfilters", "bgpf", "bgpfs")
    spec: BGPFilterSpec = Field(default_factory=BGPFilterSpec)


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
    # felixpy extensions (issue 12): the receive limit of every session whose other end is a node
    # (mesh, route reflectors and their clients, peerSelector peerings) unless its BGPPeer sets
    # maxPrefixes (unset: 10,000; 0 = no limit), what happens past it (unset: Restart), and the
    # longest AS_PATH accepted from any peer (unset: 64)
    node_peer_max_prefixes: int | None = Field(default=None, ge=0, le=MAX_PREFIXES_CAP)
    node_peer_max_prefixes_action: MaxPrefixesAction | None = None
    max_as_path_length: int | None = Field(default=None, ge=1, le=MAX_AS_PATH_CAP, alias="maxASPathLength")
    # felixpy (issue 19): BFD on every session whose other end is a node (mesh, route reflectors,
    # peerSelector peerings) unless its BGPPeer says otherwise (unset: "BFD"), and the timers
    node_peer_failure_detection_mode: FailureDetectionMode | None = None
    node_peer_bfd: BFDSettings | None = Field(default=None, alias="nodePeerBFD")


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
