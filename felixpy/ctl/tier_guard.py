"""felixctl's tier rules, checked before anything is written (Calico's API server enforces the same):

- a NetworkPolicy or GlobalNetworkPolicy may only name a tier that exists: ``default`` always
  does, any other once its Tier is stored or comes earlier in the same file;
- a tier that still has policies cannot be deleted (delete or move them first; policies deleted
  earlier in the same file count as gone), and the ``default`` tier cannot be deleted at all.

Both raise ResourceError, which felixctl prints as ``Failed to execute command: ...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from felixpy.datastore.backend import Backend
from felixpy.datastore.tiers import TIERED_KINDS, policies_in_tier, tier_exists, tier_of
from felixpy.resources.base import Resource, ResourceError
from felixpy.resources.tier import DEFAULT_TIER, Tier

SHOWN = 5  # policies named in a refusal; the rest are counted


def check_policy_tiers(backend: Backend, objs: Sequence[Resource]) -> None:
    """Every policy in ``objs`` names a tier that exists (or that ``objs`` creates before it)."""
    batch: set[str] = set()
    known: dict[str, bool] = {}
    for index, obj in enumerate(objs, start=1):
        if isinstance(obj, Tier):
            batch.add(obj.name)
            continue
        if not isinstance(obj, TIERED_KINDS):
            continue
        tier = tier_of(obj)
        if tier in batch:
            continue
        if tier not in known:
            known[tier] = tier_exists(backend, tier)
        if not known[tier]:
            reason = (
                f"tier '{tier}' does not exist; create the Tier first "
                "(felixctl apply it, or put it before the policy in the same file)"
            )
            raise ResourceError(reason, field="spec.tier", kind=obj.KIND, name=obj.name, index=index)


def guard_tier_deletes(backend: Backend, targets: Iterable[Resource | str]) -> None:
    """Refuse, before anything is deleted, to delete the default tier or a tier with policies.

    ``targets``: what is being deleted, in order (resources of any kind from a file, or tier names).
    """
    gone: set[tuple[str, str | None, str]] = set()
    for target in targets:
        if isinstance(target, TIERED_KINDS):
            gone.add(_ident(target))
            continue
        if not isinstance(target, Tier | str):
            continue
        name = target if isinstance(target, str) else target.name
        if name == DEFAULT_TIER:
            raise ResourceError("the default tier cannot be deleted", kind="Tier", name=name)
        left = [p for p in policies_in_tier(backend, name) if _ident(p) not in gone]
        if left:
            raise ResourceError(_in_use(name, left), kind="Tier", name=name)


def _ident(obj: Resource) -> tuple[str, str | None, str]:
    return (obj.KIND, obj.namespace, obj.name)


def _where(obj: Resource) -> str:
    return f"{obj.namespace}/" if obj.namespace else ""


def _in_use(tier: str, policies: list[Resource]) -> str:
    shown = ", ".join(f"{p.KIND} '{_where(p)}{p.name}'" for p in policies[:SHOWN])
    more = f" and {len(policies) - SHOWN} more" if len(policies) > SHOWN else ""
    count = f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}"
    return (
        f"cannot delete a tier that still has policies: {count} in tier '{tier}' ({shown}{more}); "
        "delete them or move them to another tier first"
    )
