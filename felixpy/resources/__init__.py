"""Pydantic models of the projectcalico.org/v3 kinds, networking.k8s.io/v1 NetworkPolicy and v1 Namespace."""

from felixpy.resources.base import ObjectMeta, Resource, ResourceError
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
from felixpy.resources.endpoint import HostEndpoint, WorkloadEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.ippool import IPPool
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace, ServiceAccount
from felixpy.resources.node import Node
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.tier import Tier

__all__ = [
    "BGPConfiguration",
    "BGPFilter",
    "BGPPeer",
    "FelixConfiguration",
    "GlobalNetworkPolicy",
    "HostEndpoint",
    "IPPool",
    "K8sNetworkPolicy",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "ObjectMeta",
    "Resource",
    "ResourceError",
    "ServiceAccount",
    "Tier",
    "WorkloadEndpoint",
]
