"""Calico's Tier (projectcalico.org/v3): an ordered group of policies, and the policy naming rule it brings.

    apiVersion: projectcalico.org/v3
    kind: Tier
    metadata: {name: security}
    spec: {order: 100, defaultAction: Pass}

``order`` (optional, a number >= 0): lower runs first; no order runs after every ordered tier.
``defaultAction`` (optional, ``Deny`` | ``Pass``, default Deny): what happens to a packet that
the tier's policies applying to the endpoint neither allowed, denied nor passed.

Calico's fixed tiers keep Calico's fixed values (its CRD validation rules): ``default`` has order
1,000,000 and defaultAction Deny, ``kube-admin`` 1,000 and Pass, ``kube-baseline`` 10,000,000 and
Pass. Omitting them fills them in; anything else is refused. The ``default`` tier exists even when
no resource is stored (felixpy's agent stores it at start-up, as Calico does).

Tier names are DNS-1123 labels (no dots), so the tier of a policy name ``<tier>.<name>`` is
always the part before the first dot. Calico 3.29.4 to 3.31 require that prefix of every policy
outside the default tier: a NetworkPolicy or GlobalNetworkPolicy in tier ``security`` must be
named ``security.<something>``; in the default tier the name may be bare or ``default.``-prefixed.
(Calico 3.32 dropped the rule; felixpy keeps it, see :func:`check_policy_name`.)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from felixpy.resources.base import Model, Resource
from felixpy.resources.fields import FieldError
from felixpy.resources.name_rules import check_dns_label

DEFAULT_TIER = "default"
# Calico's fixed tiers: name → (order, defaultAction).
FIXED_TIERS: dict[str, tuple[float, Literal["Deny", "Pass"]]] = {
    DEFAULT_TIER: (1_000_000, "Deny"),
    "kube-admin": (1_000, "Pass"),
    "kube-baseline": (10_000_000, "Pass"),
}


class TierSpec(Model):
    order: int | float | None = Field(default=None, ge=0)  # None: after every ordered tier
    default_action: Literal["Deny", "Pass"] | None = None  # None: Deny

    @field_validator("order", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        """A JSON number, not a string or a boolean that would pass for one; finite."""
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"must be a number >= 0, not {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise FieldError(f"must be a finite number >= 0 (got {value})")
        return value


class Tier(Resource):
    KIND: ClassVar[str] = "Tier"
    PLURAL: ClassVar[str] = "tiers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tier", "tiers")
    spec: TierSpec = Field(default_factory=TierSpec)

    @classmethod
    def check_name(cls, name: str) -> None:
        check_dns_label(name, what="tier name")

    @model_validator(mode="after")
    def _fixed_tiers(self) -> Tier:
        fixed = FIXED_TIERS.get(self.metadata.name)
        if fixed is None:
            return self
        order, action = fixed
        if self.spec.order is None:
            self.spec.order = int(order)
        elif self.spec.order != order:
            raise FieldError(f"the {self.name} tier's order is fixed at {int(order)}", field="spec.order")
        if self.spec.default_action is None:
            self.spec.default_action = action
        elif self.spec.default_action != action:
            raise FieldError(
                f"the {self.name} tier's defaultAction is fixed at {action}", field="spec.defaultAction"
            )
        return self

    @property
    def default_action(self) -> Literal["Deny", "Pass"]:
        return self.spec.default_action or "Deny"


def check_policy_name(name: str, tier: str) -> None:
    """Calico's rule for the name of a policy in ``tier`` (raises FieldError, field relative to the
    resource): outside the default tier the name must be ``<tier>.<something>``."""
    tier = tier or DEFAULT_TIER
    try:
        check_dns_label(tier, what="tier name")
    except FieldError as exc:
        raise FieldError(exc.reason, field="spec.tier") from None
    if tier == DEFAULT_TIER or not name:
        return
    prefix = f"{tier}."
    if not name.startswith(prefix) or len(name) == len(prefix):
        raise FieldError(
            f"a policy in tier '{tier}' must be named '{prefix}<name>' (got '{name}')", field="metadata.name"
        )
