"""Calico kinds beside the main ones, with Calico's names, defaults and validation: their documents
apply, round-trip and show in ``felixctl get`` as Calico's do.

GlobalNetworkSet / NetworkSet (namespaced): ``spec.nets``, a list of CIDRs (a bare address matches
as a /32 or /128 and is kept as written, as Calico keeps it; host bits set, a bad prefix length or a
non-address is refused naming ``spec.nets[i]``).
Enforced: rule selectors match them by their labels and their nets join the rule's selector ipset
(``policy.compiler``, fed by ``felixpy.calc.policy_stage``).
IPReservation: ``spec.reservedCIDRs``; enforced by felixpy's IPAM (ipam.reservations).
IPAMConfiguration: one resource named ``default``: ``strictAffinity`` (false),
``maxBlocksPerHost`` (0: 20 with strict affinity, else no limit), ``autoAllocateBlocks`` (true);
enforced by felixpy's IPAM. As Calico validates it: maxBlocksPerHost > 0 needs strictAffinity, and
strictAffinity and autoAllocateBlocks cannot both be false (a node could get no address at all).
Profile: ``ingress``/``egress`` rules as a policy's, ``labelsToApply``.
CalicoNodeStatus: ``spec.node``, ``spec.classes`` (Agent, BGP, Routes), ``updatePeriodSeconds``;
``status`` is written by the agent of ``spec.node`` (felixpy.runtime.node_status_reporter, Calico's shape).
ClusterInformation: ``default``: clusterGUID, clusterType, calicoVersion, datastoreReady, variant;
``felixctl version`` reads its calicoVersion.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import FieldError, NetAsWritten
from felixpy.resources.policy import Rule


class NetworkSetSpec(Model):
    nets: list[NetAsWritten] = Field(default_factory=list)  # matched as /32 or /128, kept as written


class GlobalNetworkSet(Resource):
    KIND: ClassVar[str] = "GlobalNetworkSet"
    PLURAL: ClassVar[str] = "globalnetworksets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("globalnetworkset", "gns")
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class NetworkSet(Resource):
    KIND: ClassVar[str] = "NetworkSet"
    PLURAL: ClassVar[str] = "networksets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("networkset", "netset", "netsets")
    NAMESPACED: ClassVar[bool] = True
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class IPReservationSpec(Model):
    reserved_cidrs: list[NetAsWritten] = Field(default_factory=list, alias="reservedCIDRs")


class IPReservation(Resource):
    KIND: ClassVar[str] = "IPReservation"
    PLURAL: ClassVar[str] = "ipreservations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ipreservation",)
    spec: IPReservationSpec = Field(default_factory=IPReservationSpec)


class IPAMConfigurationSpec(Model):
    strict_affinity: bool = False
    max_blocks_per_host: int = Field(default=0, ge=0, le=2**31 - 1)
    auto_allocate_blocks: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> IPAMConfigurationSpec:
        if self.max_blocks_per_host > 0 and not self.strict_affinity:
            raise FieldError(
                "maxBlocksPerHost can only be set with strictAffinity: true (without it a node borrows)",
                field="maxBlocksPerHost",
            )
        if not self.strict_affinity and not self.auto_allocate_blocks:
            raise FieldError(
                "strictAffinity and autoAllocateBlocks cannot both be false", field="autoAllocateBlocks"
            )
        return self


class IPAMConfiguration(Resource):
    KIND: ClassVar[str] = "IPAMConfiguration"
    PLURAL: ClassVar[str] = "ipamconfigurations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ipamconfiguration", "ipamconfig")
    spec: IPAMConfigurationSpec = Field(default_factory=IPAMConfigurationSpec)

    @classmethod
    def check_name(cls, name: str) -> None:
        if name != "default":
            raise FieldError(f"must be 'default' (there is one IPAMConfiguration), not {name!r}")


class ProfileSpec(Model):
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    labels_to_apply: dict[str, str] = Field(default_factory=dict)


class Profile(Resource):
    KIND: ClassVar[str] = "Profile"
    PLURAL: ClassVar[str] = "profiles"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("profile", "pro", "pros")
    spec: ProfileSpec = Field(default_factory=ProfileSpec)


class CalicoNodeStatusSpec(Model):
    node: str | None = None
    classes: list[Literal["Agent", "BGP", "Routes"]] = Field(default_factory=list)
    update_period_seconds: int | None = Field(default=None, ge=0)


class CalicoNodeStatus(Resource):
    KIND: ClassVar[str] = "CalicoNodeStatus"
    PLURAL: ClassVar[str] = "caliconodestatuses"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("caliconodestatus", "cns")
    spec: CalicoNodeStatusSpec = Field(default_factory=CalicoNodeStatusSpec)
    status: dict[str, Any] | None = None


class ClusterInformationSpec(Model):
    cluster_guid: str | None = Field(default=None, alias="clusterGUID")
    cluster_type: str | None = None
    calico_version: str | None = None
    datastore_ready: bool | None = None
    variant: str | None = None


class ClusterInformation(Resource):
    KIND: ClassVar[str] = "ClusterInformation"
    PLURAL: ClassVar[str] = "clusterinformations"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("clusterinformation", "clusterinfo")
    spec: ClusterInformationSpec = Field(default_factory=ClusterInformationSpec)

    @classmethod
    def check_name(cls, name: str) -> None:
        if name != "default":
            raise FieldError(f"must be 'default' (there is one ClusterInformation), not {name!r}")


STORED_KINDS: tuple[type[Resource], ...] = (
    GlobalNetworkSet,
    NetworkSet,
    IPReservation,
    IPAMConfiguration,
    Profile,
    CalicoNodeStatus,
    ClusterInformation,
)
