"""Which FelixConfiguration, BGPConfiguration, BGPPeer, IPPool, IPAMConfiguration and Profile fields
felixpy acts on, and which it only stores.

A Calico user's FelixConfiguration applies unchanged (felixpy accepts every Felix parameter), but
a field felixpy does not act on must not be accepted silently: ``felixctl apply`` warns naming
each, ``felixctl validate`` lists them, and docs/operations.md has the table `field_table`
renders (a test checks it is current).

FelixConfiguration: the honoured fields are exactly `felixpy.runtime.settings.FelixParams`' (the
parameters the agent resolves and uses). BGPConfiguration: those `bgp/` reads (listed here; the
BGP service is the only reader). BGPPeer: those `bgp.topology` (sessions, next hop, AS, GTSM, limits,
filters) and the BFD and BGP services read; ``keepaliveTime`` (the speaker's hold time is 90 s, its
keepalive the speaker's default), ``reachableBy`` (no static route to the peer is added) and
``sourceAddress: None`` are not. IPPool: those ``ipam.pools.pool_view`` gives IPAM, the encapsulation
and NAT the dataplane reads, and ``disableBGPExport``; not ``namespaceSelector`` (a pool serves
every namespace) nor ``assignmentMode: Manual`` (every enabled pool is used automatically).
IPAMConfiguration: those IPAM's ``ipam.allocator.IPAMConfig``
carries (what every allocation path reads). Profile: all of them. A stored Profile's ``ingress``/
``egress`` rules decide for the endpoints listing it what no policy did (``cali-pri-``/``cali-pro-``
chains) and its ``labelsToApply`` join those endpoints' labels (``policy.compiler``). In Kubernetes
mode Profiles are not stored: ``kns.*``/``ksa.*`` are generated from Namespaces and ServiceAccounts
(read-only, ``felixpy.datastore.kubernetes``).

Policy rules: a NetworkPolicy/GlobalNetworkPolicy rule match felixpy does not enforce (``http``,
``source.services``, ``destination.services``) is stored as Calico would accept it, and named with
what the rule does instead (`policy_rule_warnings`; the rule fails closed, ``policy.convert``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from felixpy.resources.base import Model, Resource
from felixpy.resources.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec
from felixpy.resources.felixconfig import FelixConfiguration, FelixConfigurationSpec
from felixpy.resources.ippool import IPPool, IPPoolSpec
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.stored import IPAMConfiguration, IPAMConfigurationSpec, Profile, ProfileSpec
from felixpy.runtime.settings import FelixParams
from ipam.allocator import IPAMConfig
from policy.convert import unenforced

FELIX_HONOURED: frozenset[str] = frozenset(FelixParams.model_fields)
BGP_HONOURED: frozenset[str] = frozenset(
    {
        "asNumber",
        "nodeToNodeMeshEnabled",
        "listenPort",
        "nodeMeshPassword",
        "nodeMeshMaxRestartTime",
        "communities",
        "prefixAdvertisements",
        "serviceClusterIPs",
        "serviceExternalIPs",
        "serviceLoadBalancerIPs",
        "importDefaultRoute",
        "ecmp",
        "nodePeerMaxPrefixes",
        "nodePeerMaxPrefixesAction",
        "maxASPathLength",
        "nodePeerFailureDetectionMode",  # BFD (issue 19)
        "nodePeerBFD",
    }
)
BGPPEER_HONOURED: frozenset[str] = frozenset(
    {
        "node",
        "nodeSelector",
        "peerIP",
        "peerSelector",
        "asNumber",
        "localASNumber",
        "keepOriginalNextHop",
        "nextHopMode",
        "password",
        "maxRestartTime",
        "numAllowedLocalASNumbers",
        "ttlSecurity",
        "filters",
        "reversePeering",
        "maxPrefixes",  # felixpy's receive limits (issue 12)
        "maxPrefixesAction",
        "maxASPathLength",
        "failureDetectionMode",  # BFD (issue 19)
        "bfd",
    }
)
IPPOOL_HONOURED: frozenset[str] = frozenset(
    {
        "cidr",
        "blockSize",
        "ipipMode",
        "vxlanMode",
        "natOutgoing",
        "disabled",
        "disableBGPExport",
        "nodeSelector",
        "allowedUses",
    }
)
IPAM_HONOURED: frozenset[str] = frozenset(
    IPAMConfigurationSpec.model_fields[f.name].alias or f.name for f in dataclasses.fields(IPAMConfig)
)
HONOURED: dict[str, frozenset[str]] = {
    "FelixConfiguration": FELIX_HONOURED,
    "BGPConfiguration": BGP_HONOURED,
    "BGPPeer": BGPPEER_HONOURED,
    "IPPool": IPPOOL_HONOURED,
    "IPAMConfiguration": IPAM_HONOURED,
    "Profile": frozenset({"ingress", "egress", "labelsToApply"}),
}
_SPECS: dict[str, type[Model]] = {
    "FelixConfiguration": FelixConfigurationSpec,
    "BGPConfiguration": BGPConfigurationSpec,
    "BGPPeer": BGPPeerSpec,
    "IPPool": IPPoolSpec,
    "IPAMConfiguration": IPAMConfigurationSpec,
    "Profile": ProfileSpec,
}


def _alias(spec: type[Model], name: str) -> str:
    info = spec.model_fields[name]
    return info.alias or name


def known_fields(kind: str) -> list[str]:
    """Every field of ``kind``'s spec felixpy names: the model's typed fields and the honoured ones."""
    spec = _SPECS[kind]
    names = {_alias(spec, n) for n in spec.model_fields} | HONOURED[kind]
    return sorted(names, key=str.lower)


def unhonoured(obj: Resource) -> list[str]:
    """``spec.<field>`` of each field set in ``obj`` that felixpy stores but does not act on."""
    honoured = HONOURED.get(obj.KIND)
    if honoured is None:
        return []
    spec: Any = getattr(obj, "spec", None)
    if spec is None:
        return []
    given = spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    return [f"spec.{name}" for name in given if name not in honoured]


def policy_rule_warnings(obj: Resource) -> list[str]:
    """``spec.ingress[0].http: not enforced by felixpy (...); the rule never allows`` for each rule
    match of a Calico policy felixpy does not enforce as written."""
    if not isinstance(obj, NetworkPolicy | GlobalNetworkPolicy):
        return []
    return [n.message for n in unenforced(obj)]


def field_table() -> str:
    """The Markdown table of every FelixConfiguration, BGPConfiguration, BGPPeer, IPPool,
    IPAMConfiguration and Profile field felixpy names."""
    lines = ["| Kind | Field | felixpy |", "|---|---|---|"]
    kinds = (FelixConfiguration, BGPConfiguration, BGPPeer, IPPool, IPAMConfiguration, Profile)
    for kind in (k.KIND for k in kinds):
        for name in known_fields(kind):
            acted = "honoured" if name in HONOURED[kind] else "stored, not acted on (apply warns)"
            lines.append(f"| {kind} | `{name}` | {acted} |")
    lines.append("| FelixConfiguration | any other Felix parameter | stored, not acted on (apply warns) |")
    return "\n".join(lines)
