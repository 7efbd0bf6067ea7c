"""IPPool (projectcalico.org/v3)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from felixpy.resources.base import Model, Resource

EncapMode = Literal["Never", "Always", "CrossSubnet"]


class IPPoolSpec(Model):
    cidr: str
    block_size: int | None = None  # default 26 (v4) / 122 (v6), filled by validation
    ipip_mode: EncapMode = "Never"
    vxlan_mode: EncapMode = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")
    node_selector: str = "all()"
    namespace_selector: str | None = None
    allowed_uses: list[Literal["Workload", "Tunnel", "LoadBalancer"]] = Field(
        default_factory=lambda: ["Workload", "Tunnel"]
    )
    assignment_mode: Literal["Automatic", "Manual"] = "Automatic"


class IPPool(Resource):
    KIND: ClassVar[str] = "IPPool"
    PLURAL: ClassVar[str] = "ippools"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ippool", "ippools", "pool", "pools")
    spec: IPPoolSpec
