"""Tier facts read from (and one written to) any Backend: the `default` tier, a tier's policies.

- ``ensure_default_tier``: store the built-in ``default`` tier (order 1,000,000, Deny) when it is
  missing, as Calico does when it initialises a datastore, so ``felixctl get tiers`` shows it.
  Policy works without it: the compiler and the evaluator know ``default`` regardless.
- ``tier_exists``: ``default`` always does; any other tier when its resource is stored.
- ``policies_in_tier``: the NetworkPolicies (every namespace) and GlobalNetworkPolicies naming it,
  which felixctl uses to refuse deleting a tier that still has policies (as Calico does).
"""

from __future__ import annotations

import logging
from typing import Any

from felixpy.datastore.errors import AlreadyExists, DatastoreError, NotFound
from felixpy.resources.base import Resource
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.tier import DEFAULT_TIER, Tier

log = logging.getLogger(__name__)
TIERED_KINDS: tuple[type[Resource], ...] = (NetworkPolicy, GlobalNetworkPolicy)


def default_tier() -> Tier:
    return Tier.model_validate({"metadata": {"name": DEFAULT_TIER}})  # order and action filled in


def ensure_default_tier(backend: Any) -> bool:
    """Create the ``default`` Tier unless it exists; True when this call created it. A refusal
    (e.g. no RBAC permission) is logged, not raised: policy does not need the stored resource."""
    try:
        backend.get(Tier, DEFAULT_TIER)
        return False
    except NotFound:
        pass
    try:
        backend.create(default_tier())
    except AlreadyExists:  # another node got there first
        return False
    except DatastoreError as exc:
        log.warning("could not store the default tier (policy works without it): %s", exc)
        return False
    log.info("stored the default tier (order 1000000, defaultAction Deny)")
    return True


def tier_exists(backend: Any, name: str) -> bool:
    if name == DEFAULT_TIER:
        return True
    try:
        backend.get(Tier, name)
    except NotFound:
        return False
    return True


def tier_of(policy: Resource) -> str:
    spec = getattr(policy, "spec", None)
    return str(getattr(spec, "tier", "") or DEFAULT_TIER)


def policies_in_tier(backend: Any, name: str) -> list[Resource]:
    """Every stored NetworkPolicy (all namespaces) and GlobalNetworkPolicy whose tier is ``name``."""
    out: list[Resource] = []
    for kind in TIERED_KINDS:
        objs, _ = backend.list(kind)
        out += [o for o in objs if tier_of(o) == name]
    return sorted(out, key=lambda o: (o.KIND, o.namespace or "", o.name))
