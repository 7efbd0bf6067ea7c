"""Pure helpers of the agent-side CNI handler: request parsing, names, result formats.

CNI_ARGS is ``K=V;K=V``. felixpy extension for labs without a kube-apiserver: pod labels in
``K8S_POD_LABELS=app=a,tier=b`` (``,``-separated; ``;``-separated ``k=v`` pairs following
``K8S_POD_LABELS`` are accepted too), or in the config's ``args.labels`` / ``args.cni.labels`` /
``runtimeConfig.labels``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from felixpy.resources.name_rules import (
    wep_name as wep_name,  # re-exported: the handler and tests name it here
)

_ARG_KEY = re.compile(r"^(K8S_[A-Z_]+|IgnoreUnknown)$")
LEGACY_VERSIONS = ("0.3.0", "0.3.1", "0.4.0")


class HandlerError(Exception):
    """A CNI error to return: spec codes (3 unknown container, 7 invalid config, 11 retry) or >= 100."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "msg": self.msg, "details": self.details}}


@dataclass(frozen=True)
class CNIRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    config: dict[str, Any]
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", "1.0.0"))

    @property
    def namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE") or "default"

    @property
    def pod(self) -> str | None:
        return self.args.get("K8S_POD_NAME") or None

    @property
    def orchestrator(self) -> str:
        return "k8s" if self.pod else "cni"

    @property
    def network(self) -> str:
        return str(self.config.get("name") or "k8s-pod-network")

    @property
    def handle_id(self) -> str:
        return f"{self.network}.{self.container_id}"


def parse_cni_args(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(args, labels) from CNI_ARGS."""
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    in_labels = False
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition("=")
        if _ARG_KEY.match(key):
            in_labels = key == "K8S_POD_LABELS"
            if in_labels:
                labels.update(_pairs(value, ","))
            else:
                args[key] = value
        elif in_labels and "=" in part:
            labels[key] = value
    return args, labels


def _pairs(text: str, sep: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (p.strip() for p in text.split(sep))):
        k, _, v = item.partition("=")
        out[k] = v
    return out


def config_labels(config: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    args = config.get("args") or {}
    for source in (args.get("cni") or {}, args, config.get("runtimeConfig") or {}):
        labels = source.get("labels") if isinstance(source, dict) else None
        if isinstance(labels, dict):
            out.update({str(k): str(v) for k, v in labels.items()})
    return out


def parse_request(raw: dict[str, Any]) -> CNIRequest:
    config = raw.get("config")
    if not isinstance(config, dict):
        raise HandlerError(7, "network configuration missing or not an object")
    args, labels = parse_cni_args(str(raw.get("args") or ""))
    labels = config_labels(config) | labels
    return CNIRequest(
        command=str(raw.get("command", "")),
        container_id=str(raw.get("containerID", "")),
        netns=str(raw.get("netns", "")),
        ifname=str(raw.get("ifname") or "eth0"),
        config=config,
        args=args,
        labels=labels,
    )


@dataclass(frozen=True, slots=True)
class IpamOptions:
    """What to ask IPAM for: Calico's ``ipam`` config section (``assign_ipv4`` defaults to true,
    ``assign_ipv6`` to false; ``ipv4_pools``/``ipv6_pools`` restrict the pools, by name or CIDR)."""

    num_v4: int = 1
    num_v6: int = 0
    pools: tuple[str, ...] = ()


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise HandlerError(7, f"invalid boolean {value!r} in the ipam configuration")


def ipam_options(config: dict[str, Any]) -> IpamOptions:
    """IpamOptions from the network config (raises HandlerError code 7 when it is unusable)."""
    ipam = config.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise HandlerError(7, "ipam configuration must be an object")
    v4, v6 = _flag(ipam.get("assign_ipv4"), True), _flag(ipam.get("assign_ipv6"), False)
    if not (v4 or v6):
        raise HandlerError(7, "assign_ipv4 and assign_ipv6 are both false: nothing to assign")
    pools: list[str] = []
    for key, wanted in (("ipv4_pools", v4), ("ipv6_pools", v6)):
        value = ipam.get(key) or []
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise HandlerError(7, f"{key} must be a list of pool names or CIDRs")
        pools += value if wanted else []
    return IpamOptions(int(v4), int(v6), tuple(pools))


def format_result(
    version: str,
    *,
    host_iface: str,
    host_mac: str,
    ifname: str,
    mac: str,
    sandbox: str,
    addresses: list[str],
) -> dict[str, Any]:
    """The ADD result: CNI 1.0.0, or the 0.3.x/0.4.0 shape (``version`` per IP) when asked."""
    ips = []
    for addr in addresses:
        iface = ipaddress.ip_interface(addr)
        entry: dict[str, Any] = {"address": addr, "interface": 1}
        if version in LEGACY_VERSIONS:
            entry["version"] = str(iface.version)
        ips.append(entry)
    routes = [{"dst": "0.0.0.0/0"} for a in addresses if ":" not in a][:1]
    routes += [{"dst": "::/0"} for a in addresses if ":" in a][:1]
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": host_iface, "mac": host_mac},
            {"name": ifname, "mac": mac, "sandbox": sandbox},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }
