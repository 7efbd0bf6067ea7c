"""Table columns per kind for ``felixctl get`` (calicoctl's ``-o ps`` and ``-o wide`` columns).

``columns_for(kind, wide=...)`` returns (headers, cells) where ``cells(obj, context)`` gives one
row. Context keys: ``default_asn`` (int) for Node's inherited AS, shown as ``(64512)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration, BGPPeer
from felixpy.resources.endpoint import HostEndpoint, WorkloadEndpoint
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.stored import ClusterInformation, IPAMConfiguration
from felixpy.resources.tier import Tier

DEFAULT_ASN = 64512
Cells = Callable[[Any, dict[str, Any]], list[str]]
Columns = tuple[list[str], Cells]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _pool(wide: bool) -> Columns:
    if not wide:
        return ["NAME", "CIDR", "SELECTOR"], lambda o, c: [o.name, o.spec.cidr, o.spec.node_selector]
    headers = ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR",
               "ASSIGNMENTMODE"]  # fmt: skip
    return headers, lambda o, c: [
        o.name, o.spec.cidr, _text(o.spec.nat_outgoing), o.spec.ipip_mode, o.spec.vxlan_mode,
        _text(o.spec.disabled), _text(o.spec.disable_bgp_export), o.spec.node_selector,
        o.spec.assignment_mode,
    ]  # fmt: skip


def _node(wide: bool) -> Columns:
    if not wide:
        return ["NAME"], lambda o, c: [o.name]

    def cells(o: Node, ctx: dict[str, Any]) -> list[str]:
        bgp = o.spec.bgp
        asn = bgp.as_number if bgp and bgp.as_number is not None else None
        shown = str(asn) if asn is not None else f"({ctx.get('default_asn', DEFAULT_ASN)})"
        v4, v6 = (bgp.ipv4_address, bgp.ipv6_address) if bgp else (None, None)
        return [o.name, shown if bgp else "", _text(v4), _text(v6)]

    return ["NAME", "ASN", "IPV4", "IPV6"], cells


def _peer(wide: bool) -> Columns:
    def cells(o: BGPPeer, ctx: dict[str, Any]) -> list[str]:
        s = o.spec
        node = s.node or s.node_selector or "(global)"
        return [o.name, s.peer_ip or s.peer_selector or "", node, _text(s.as_number)]

    return ["NAME", "PEERIP", "NODE", "ASN"], cells


def _bgpconfig(wide: bool) -> Columns:
    def cells(o: BGPConfiguration, ctx: dict[str, Any]) -> list[str]:
        s = o.spec
        mesh = True if s.node_to_node_mesh_enabled is None else s.node_to_node_mesh_enabled
        return [o.name, s.log_severity_screen or "Info", _text(mesh), _text(s.as_number) or str(DEFAULT_ASN)]

    return ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"], cells


def _policy(wide: bool) -> Columns:
    if not wide:
        return ["NAME", "TIER"], lambda o, c: [o.name, o.spec.tier]
    return ["NAME", "TIER", "ORDER", "SELECTOR"], lambda o, c: [
        o.name, o.spec.tier, _text(o.spec.order), o.spec.selector,
    ]  # fmt: skip


def _tier(wide: bool) -> Columns:
    return ["NAME", "ORDER", "DEFAULTACTION"], lambda o, c: [o.name, _text(o.spec.order), o.default_action]


def _wep(wide: bool) -> Columns:
    def cells(o: WorkloadEndpoint, ctx: dict[str, Any]) -> list[str]:
        s = o.spec
        row = [s.workload or s.pod or "", s.node, _text(s.ip_networks), s.interface_name]
        if not wide:
            return row
        nats = ",".join(f"{n.internal_ip}:{n.external_ip}" for n in s.ip_na_ts)
        return [o.name, *row, _text(s.profiles), nats]

    if wide:
        return ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"], cells
    return ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"], cells


def _hep(wide: bool) -> Columns:
    if not wide:
        return ["NAME", "NODE"], lambda o, c: [o.name, o.spec.node]
    return ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"], lambda o, c: [
        o.name, o.spec.node, _text(o.spec.interface_name), _text(o.spec.expected_i_ps),
        _text(o.spec.profiles),
    ]  # fmt: skip


def _ipamconfig(wide: bool) -> Columns:
    headers = ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"] + (["MAXBLOCKSPERHOST"] if wide else [])
    return headers, lambda o, c: [
        o.name, _text(o.spec.strict_affinity), _text(o.spec.auto_allocate_blocks),
        *([_text(o.spec.max_blocks_per_host)] if wide else []),
    ]  # fmt: skip


def _clusterinfo(wide: bool) -> Columns:
    return ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"], lambda o, c: [
        o.name, _text(o.spec.cluster_guid), _text(o.spec.cluster_type), _text(o.spec.calico_version),
        _text(o.spec.datastore_ready),
    ]  # fmt: skip


_BY_KIND: dict[type[Resource], Callable[[bool], Columns]] = {
    IPPool: _pool,
    Node: _node,
    BGPPeer: _peer,
    BGPConfiguration: _bgpconfig,
    NetworkPolicy: _policy,
    GlobalNetworkPolicy: _policy,
    Tier: _tier,
    WorkloadEndpoint: _wep,
    HostEndpoint: _hep,
    IPAMConfiguration: _ipamconfig,
    ClusterInformation: _clusterinfo,
}


def columns_for(kind: type[Resource] | None, *, wide: bool = False) -> Columns:
    """(headers, cells) for ``kind``; kinds without their own columns show NAME only."""
    make = _BY_KIND.get(kind) if kind is not None else None
    if make is None:
        return ["NAME"], lambda o, c: [o.name]
    return make(wide)
