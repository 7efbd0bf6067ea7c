"""Tier conformance cases as data, on the conformance topology (``policy.conformance_cases``).

The same two policies in every case, into the pods of namespace ``x``:

- ``security.gate`` (tier ``security``): Deny from pods ``c``, Pass from pods ``b``; pods ``a``
  match no rule, so the tier's defaultAction decides for them;
- ``platform.allow-a`` (tier ``platform``): Allow from pods ``a``; ``b`` and ``c`` match nothing.

What changes from case to case is only the tiers: which exist, their order and defaultAction.
``tiers-order-*`` differ in nothing but the order of the two tiers, and the verdict for pods ``a``
flips with it. The reference evaluator, the compiled chains (unit tests) and the real kernel
(tests/kernel/test_policy_tiers_kernel.py) must all give each case's truth table.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.conformance_cases import TCP80, Doc, Expect, NetpolCase, calico
from policy.tiers import DefaultAction, TierInfo

GATE = calico(
    "GlobalNetworkPolicy",
    "security.gate",
    {
        "tier": "security",
        "order": 10,
        "namespaceSelector": "ns == 'x'",
        "ingress": [
            {"action": "Deny", "source": {"selector": "pod == 'c'"}},
            {"action": "Pass", "source": {"selector": "pod == 'b'"}},
        ],
    },
)
ALLOW_A = calico(
    "GlobalNetworkPolicy",
    "platform.allow-a",
    {
        "tier": "platform",
        "namespaceSelector": "ns == 'x'",
        "ingress": [{"action": "Allow", "source": {"selector": "pod == 'a'"}}],
    },
)
E = Expect
INTO_X_DENIED = E("*/*", "x/*", False)


@dataclass(frozen=True)
class TierCase:
    name: str
    tiers: tuple[TierInfo, ...]
    expects: tuple[Expect, ...]
    policies: tuple[Doc, ...] = (GATE, ALLOW_A)

    def netpol(self) -> NetpolCase:
        """The policies and truth table as a conformance case (probe: TCP 80)."""
        return NetpolCase(self.name, self.policies, self.expects, (TCP80,))


Spec = tuple[float, DefaultAction] | None


def _tiers(security: Spec, platform: Spec) -> tuple[TierInfo, ...]:
    out = []
    for name, spec in (("security", security), ("platform", platform)):
        if spec is not None:
            out.append(TierInfo(name, spec[0], spec[1]))
    return tuple(out)


TIER_CASES: tuple[TierCase, ...] = (
    # security first: a gets security's end-of-tier Deny, b passes to platform, which denies it.
    TierCase("tiers-order-security-first", _tiers((100, "Deny"), (200, "Deny")), (INTO_X_DENIED,)),
    # the same tiers, platform first: it allows a before security is reached.
    TierCase(
        "tiers-order-platform-first",
        _tiers((100, "Deny"), (50, "Deny")),
        (INTO_X_DENIED, E("*/a", "x/*", True)),
    ),
    # security's defaultAction Pass: a goes on to platform and is allowed there.
    TierCase(
        "tier-default-action-pass",
        _tiers((100, "Pass"), (200, "Deny")),
        (INTO_X_DENIED, E("*/a", "x/*", True)),
    ),
    # both Pass: what no rule decided reaches the profiles (kns.x allows); c is still denied.
    TierCase("tiers-both-pass", _tiers((100, "Pass"), (200, "Pass")), (E("*/c", "x/*", False),)),
    # no platform tier: its policy applies to nothing, so b (passed) and a reach the profiles.
    TierCase("tier-missing-policy-not-applied", _tiers((100, "Pass"), None), (E("*/c", "x/*", False),)),
)
