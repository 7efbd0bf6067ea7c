"""Every kind felixpy knows: lookup by kind name, plural or short name, and by (apiVersion, kind)."""

from __future__ import annotations

from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
from felixpy.resources.endpoint import HostEndpoint, WorkloadEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.ippool import IPPool
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace, ServiceAccount
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from felixpy.resources.node import Node
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.stored import STORED_KINDS
from felixpy.resources.tier import Tier

ALL_KINDS: tuple[type[Resource], ...] = (
    IPPool,
    BGPPeer,
    BGPFilter,
    BGPConfiguration,
    Node,
    WorkloadEndpoint,
    HostEndpoint,
    NetworkPolicy,
    GlobalNetworkPolicy,
    Tier,
    FelixConfiguration,
    KubeControllersConfiguration,
    K8sNetworkPolicy,
    Namespace,
    ServiceAccount,
    *STORED_KINDS,
)

_BY_API_KIND: dict[tuple[str, str], type[Resource]] = {(k.API_VERSION, k.KIND): k for k in ALL_KINDS}
_BY_PLURAL: dict[str, type[Resource]] = {k.PLURAL: k for k in ALL_KINDS}


def _names() -> dict[str, type[Resource]]:
    out: dict[str, type[Resource]] = {}
    for k in ALL_KINDS:
        for n in (k.KIND.lower(), k.PLURAL, *k.SHORT_NAMES):
            out.setdefault(n.lower(), k)
    return out


_BY_NAME = _names()


def kind_for(api_version: str, kind: str) -> type[Resource] | None:
    """The model class for a document's apiVersion and kind, or None."""
    return _BY_API_KIND.get((api_version, kind))


def kind_by_name(name: str) -> type[Resource] | None:
    """Resolve what a user types on the command line: `ippool`, `IPPools`, `gnp`, `netpol`, ..."""
    return _BY_NAME.get(name.lower())


def kind_by_plural(plural: str) -> type[Resource] | None:
    return _BY_PLURAL.get(plural)
