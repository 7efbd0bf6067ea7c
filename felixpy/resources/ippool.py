"""IPPool (projectcalico.org/v3)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import CIDR, FieldError, Selector

EncapMode = Literal["Never", "Always", "CrossSubnet"]
Use = Literal["Workload", "Tunnel", "LoadBalancer"]

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
DEFAULT_USES: tuple[Use, ...] = ("Workload", "Tunnel")
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class IPPoolSpec(Model):
    cidr: CIDR
    block_size: int | None = None  # default 26 (v4) / 122 (v6), filled by validation
    ipip_mode: EncapMode = "Never"
    vxlan_mode: EncapMode = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")
    node_selector: Selector = "all()"
    namespace_selector: Selector | None = None
    allowed_uses: list[Use] = Field(default_factory=lambda: list(DEFAULT_USES))
    assignment_mode: Literal["Automatic", "Manual"] = "Automatic"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    @model_validator(mode="after")
    def _consistent(self) -> IPPoolSpec:
        net = self.network
        for reserved in LINK_LOCAL:
            if net.version == reserved.version and net.overlaps(reserved):
                raise FieldError(f"pool {net} overlaps the link-local range {reserved}", field="cidr")
        self._check_block_size(net)
        if self.ipip_mode != "Never" and self.vxlan_mode != "Never":
            raise FieldError("ipipMode and vxlanMode cannot both be enabled", field="vxlanMode")
        if self.ipip_mode != "Never" and net.version == 6:
            raise FieldError("IPIP is only supported for IPv4 pools", field="ipipMode")
        if not self.allowed_uses:
            self.allowed_uses = list(DEFAULT_USES)
        if "LoadBalancer" in self.allowed_uses and len(self.allowed_uses) > 1:
            raise FieldError("LoadBalancer cannot be combined with other uses", field="allowedUses")
        return self

    def _check_block_size(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        if self.block_size is None:
            self.block_size = DEFAULT_BLOCK_SIZE[net.version]
        low, high = BLOCK_SIZE_RANGE[net.version]
        if not low <= self.block_size <= high:
            raise FieldError(f"must be between {low} and {high} for IPv{net.version}", field="blockSize")
        if net.prefixlen > self.block_size:
            raise FieldError(
                f"block size /{self.block_size} is larger than the pool {net}; it must be >= {net.prefixlen}",
                field="blockSize",
            )


class IPPool(Resource):
    KIND: ClassVar[str] = "IPPool"
    PLURAL: ClassVar[str] = "ippools"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ippool", "ippools", "pool", "pools")
    spec: IPPoolSpec


def check_pool_against(pool: IPPool, others: Iterable[IPPool]) -> None:
    """Refuse ``pool`` if it changes an existing pool's immutable fields or overlaps another pool.

    ``others`` are the pools already stored or about to be (a pool with ``pool``'s own name is
    its current version). Raises FieldError naming ``spec.cidr`` or ``spec.blockSize``.
    """
    net = pool.spec.network
    for other in others:
        if other.name == pool.name:
            if other.spec.cidr != pool.spec.cidr:
                reason = f"cannot be changed (is {other.spec.cidr}); create a new pool instead"
                raise FieldError(reason, field="spec.cidr")
            if other.spec.block_size != pool.spec.block_size:
                raise FieldError(f"cannot be changed (is {other.spec.block_size})", field="spec.blockSize")
        elif net.version == other.spec.network.version and net.overlaps(other.spec.network):
            raise FieldError(f"overlaps IPPool '{other.name}' ({other.spec.cidr})", field="spec.cidr")
