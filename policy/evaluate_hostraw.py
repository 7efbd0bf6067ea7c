"""Reference verdicts of untracked and pre-DNAT host endpoint policy: the oracle for ``compile_hostraw``.

Slow and obvious, like ``policy.evaluator`` (whose rule matching, label views and failsafe ports it
uses). One packet meets, in order: the untracked policies of the interface (raw), then, if none
decided and it is inbound, the pre-DNAT policies (mangle, original destination), then the normal
host endpoint policy (filter, destination as DNAT left it). In each of the first two stages a
verdict is the first matching Allow/Deny of the tiers in order (Pass: next tier; no rule matched in
a tier: next tier too, there is no default deny), and failsafe traffic is never judged (None).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from policy.compile_hostraw import DIRECTIONS, Kind, kind_of
from policy.entities import PROTOCOL_NUMBERS, Direction, Endpoint, Policy
from policy.evaluator import Evaluator, Flow

Verdict = Literal["Allow", "Deny"] | None


def reply_of(flow: Flow) -> Flow:
    """The first packet back: addresses and ports swapped."""
    return replace(
        flow, src_ip=flow.dst_ip, dst_ip=flow.src_ip, src_port=flow.dst_port, dst_port=flow.src_port
    )


def prefilter_verdict(ev: Evaluator, hep: Endpoint, kind: Kind, direction: Direction, flow: Flow) -> Verdict:
    """What the ``kind`` policies of ``hep`` say about one packet (None: they leave it alone)."""
    if direction not in DIRECTIONS[kind] or _failsafe(ev, kind, direction, flow):
        return None
    view = ev.view(hep)
    tiers: dict[str, list[Policy]] = {}
    for p in ev.policies:
        if kind_of(p) == kind and direction in p.types and p.tier in ev.tiers and p.selector.matches(view):
            tiers.setdefault(p.tier, []).append(p)
    for tier in ev.tiers.ordered(tiers):
        verdict = _tier(sorted(tiers[tier], key=Policy.sort_key), ev, direction, flow)
        if verdict in ("Allow", "Deny"):
            return verdict  # type: ignore[return-value]
    return None


def _tier(
    policies: list[Policy], ev: Evaluator, direction: Direction, flow: Flow
) -> Verdict | Literal["Pass"]:
    for policy in policies:
        for rule in policy.rules(direction):
            if rule.action != "Log" and ev.rule_matches(rule, flow):
                return rule.action  # type: ignore[return-value]
    return None


def _failsafe(ev: Evaluator, kind: Kind, direction: Direction, flow: Flow) -> bool:
    """Failsafe ports by destination; in raw also the replies of the other direction's (by source)."""
    own, other = (
        (ev.failsafe_in, ev.failsafe_out) if direction == "Ingress" else (ev.failsafe_out, ev.failsafe_in)
    )
    if (flow.proto, flow.dst_port) in own:
        return True
    return kind == "untracked" and (flow.proto, flow.src_port) in other


def exchange_allowed(
    ev: Evaluator, hep: Endpoint, direction: Direction, flow: Flow, *, after_dnat: Flow | None = None
) -> bool:
    """Does a new request through ``hep``'s interface (Ingress: into the host, Egress: out of it) get
    its reply back? ``after_dnat``: the request as the nat table leaves it (normal policy sees that).

    The reply meets the untracked policies of the other direction first. Half an exchange untracked
    is a broken TCP connection (conntrack sees the other half out of sequence: invalid, dropped); a
    UDP reply whose request was untracked and which no untracked policy allows is a new flow for
    the normal policy.
    """
    back, back_direction = reply_of(flow), _opposite(direction)
    first = prefilter_verdict(ev, hep, "untracked", direction, flow)
    second = prefilter_verdict(ev, hep, "untracked", back_direction, back)
    if "Deny" in (first, second):
        return False
    if (first == "Allow") != (second == "Allow") and flow.proto == PROTOCOL_NUMBERS["tcp"]:
        return False
    if first == "Allow":
        return second == "Allow" or ev.host_allows(hep, back_direction, back)
    pre = prefilter_verdict(ev, hep, "prednat", direction, flow)
    if pre is not None:
        return pre == "Allow"
    return ev.host_allows(hep, direction, after_dnat or flow)


def _opposite(direction: Direction) -> Direction:
    return "Egress" if direction == "Ingress" else "Ingress"
