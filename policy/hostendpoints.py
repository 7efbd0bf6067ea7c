"""Host endpoint chains: what Calico enforces on the host's own interfaces (reference 2.2, 2.5, 2.14, 8.3).

Semantics implemented (Calico's, from ``felix/rules/endpoints.go``, ``dispatch.go`` and the
HostEndpoint resource documentation):

- A HostEndpoint of *this* node is an endpoint like a workload: its own metadata labels (no
  namespace, so only GlobalNetworkPolicy selectors, which do not carry a namespace
  selector, can pick it), its ``profiles``, its ``expectedIPs`` (which also feed selector
  ipsets, so rules elsewhere can name the host by label).
- Traffic into the host through the interface (filter INPUT) runs ``cali-fh-<iface>``: ingress
  policies; traffic the host sends out of it (filter OUTPUT) runs ``cali-th-<iface>``: egress
  policies. Each chain: conntrack ESTABLISHED/RELATED accept and INVALID drop, then the jump
  to ``cali-failsafe-in``/``-out`` (ACCEPTs the FelixConfiguration failsafe ports whatever the
  policy says), then tiers exactly as for workloads (end-of-tier drop), then profiles, then
  DROP. So a host endpoint with no policy and no allow-all profile denies everything but the
  failsafe ports, which is Calico's documented default; the ``projectcalico-default-allow``
  profile turns that into allow-all.
- A named host endpoint polices only its interface; other interfaces are ignored (the
  dispatch chain falls through and INPUT/OUTPUT continue with the host's own rules). With
  ``interfaceName: "*"`` every interface without a named host endpoint is policed by the
  chains ``cali-fh-/cali-th-any-interface-at-all`` (Felix's name, longer than any real
  interface). Several host endpoints for one interface: the earliest key wins, as in Felix.
- Workload traffic never reaches these chains: ``cali-INPUT`` sends ``-i cali+`` to
  ``cali-wl-to-host`` and ``cali-OUTPUT`` returns for ``-o cali+`` before dispatching.
- Forwarded traffic (filter FORWARD) arriving on / leaving through a host endpoint runs
  ``cali-fhfw-``/``cali-thfw-<iface>``: only ``applyOnForward`` policies, no failsafes, no
  profiles; with no such policy it is allowed (accept mark, return), as in Calico.
- ``preDNAT`` and ``doNotTrack`` policies belong to the mangle and raw tables: they are left out
  of every filter chain (as in Calico) and enforced there by ``policy.compile_hostraw``. A packet
  one of them allowed carries the accept mark, which ``cali-INPUT``/``-OUTPUT``/``-FORWARD``
  honour before any host endpoint chain here ("Accepted earlier").

Differences from Felix, on purpose: the host-endpoint rules in ``cali-INPUT``/``-OUTPUT``/
``-FORWARD`` and their dispatch chains exist only while this node has a host endpoint (Felix
always writes them; without host endpoints they are no-ops), so nodes without host endpoints
keep the exact chains they had; the dispatch chains are flat (a host has few interfaces);
``cali-OUTPUT`` also polices DNAT'd host traffic (Felix leaves it to mangle POSTROUTING).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from felixpy.dataplane.kernel_objects import Chain, Rule
from policy.chain_names import (
    FAILSAFE_IN,
    FAILSAFE_OUT,
    FORWARD,
    FROM_HEP_FORWARD,
    FROM_HOST_ENDPOINT,
    INPUT,
    MARK_ACCEPT,
    MARK_ALL,
    MARK_PASS,
    OUTPUT,
    TO_HEP_FORWARD,
    TO_HOST_ENDPOINT,
    host_endpoint_chain,
    mark,
    set_mark,
)
from policy.chains import ESTABLISHED, INVALID, TierPolicies, profile_rules, tier_rules
from policy.entities import Direction

HEP_ACCEPTED = Rule(mark(MARK_ACCEPT, MARK_ACCEPT), "-j ACCEPT", "Host endpoint policy accepted packet.")


def host_endpoint_chains(
    iface: str,
    tiers: Mapping[Direction, Sequence[TierPolicies]],
    forward_tiers: Mapping[Direction, Sequence[TierPolicies]],
    profiles: Sequence[str],
) -> tuple[Chain, ...]:
    """The four chains of one host endpoint: fh, th (host traffic) and fhfw, thfw (forwarded)."""
    return (
        _hep_chain(iface, "Ingress", tiers.get("Ingress", ()), profiles, forward=False),
        _hep_chain(iface, "Egress", tiers.get("Egress", ()), profiles, forward=False),
        _hep_chain(iface, "Ingress", forward_tiers.get("Ingress", ()), (), forward=True),
        _hep_chain(iface, "Egress", forward_tiers.get("Egress", ()), (), forward=True),
    )


def host_endpoint_chain_names(iface: str) -> tuple[str, ...]:
    return tuple(
        host_endpoint_chain(iface, d, forward=f) for f in (False, True) for d in ("Ingress", "Egress")
    )


def _hep_chain(
    iface: str, direction: Direction, tiers: Sequence[TierPolicies], profiles: Sequence[str], *, forward: bool
) -> Chain:
    rules = [
        Rule(ESTABLISHED, "-j ACCEPT", "Accept established and related"),
        Rule(INVALID, "-j DROP", "Drop invalid"),
    ]
    if not forward:
        failsafe = FAILSAFE_IN if direction == "Ingress" else FAILSAFE_OUT
        rules.append(Rule("", f"-j {failsafe}", "Failsafe ports"))
    rules.append(Rule("", set_mark(0, MARK_ACCEPT | MARK_PASS), "Clear accept and pass marks"))
    rules += tier_rules(tiers, direction)
    if forward and not tiers:
        rules.append(Rule("", set_mark(MARK_ACCEPT, MARK_ACCEPT), "Allow forwarded traffic by default"))
        rules.append(Rule("", "-j RETURN", "Return for accepted forward traffic"))
    elif not forward:
        rules += profile_rules(profiles, direction)
    return Chain(host_endpoint_chain(iface, direction, forward=forward), tuple(rules))


def host_dispatch_chains(ifaces: Iterable[str]) -> tuple[Chain, ...]:
    """``cali-from/to-host-endpoint`` and ``cali-from/to-hep-forward``: ``-i``/``-o <iface>`` goto the
    endpoint's chain; with an all-interfaces endpoint (``"*"``) everything else goes to its chain."""
    names = sorted(set(ifaces) - {"*"})
    wildcard = "*" in set(ifaces)
    out = []
    for root, flag, direction, forward in (
        (FROM_HOST_ENDPOINT, "-i", "Ingress", False),
        (TO_HOST_ENDPOINT, "-o", "Egress", False),
        (FROM_HEP_FORWARD, "-i", "Ingress", True),
        (TO_HEP_FORWARD, "-o", "Egress", True),
    ):
        verb = "From" if flag == "-i" else "To"
        rules = [
            Rule(f"{flag} {n}", f"-g {host_endpoint_chain(n, direction, forward=forward)}", f"{verb} {n}")
            for n in names
        ]
        if wildcard:
            target = host_endpoint_chain("*", direction, forward=forward)
            rules.append(Rule("", f"-g {target}", f"{verb} any other interface"))
        out.append(Chain(root, tuple(rules)))
    return tuple(out)


def input_rules() -> list[Rule]:
    """Appended to ``cali-INPUT`` (after the workload goto): host endpoint ingress policy."""
    return [
        Rule("", set_mark(0, MARK_ALL), "Clear all marks"),
        Rule("", f"-j {FROM_HOST_ENDPOINT}", "Host endpoint ingress policy"),
        HEP_ACCEPTED,
    ]


def output_rules() -> list[Rule]:
    """Appended to ``cali-OUTPUT`` (after it cleared the marks): host endpoint egress policy."""
    return [Rule("", f"-j {TO_HOST_ENDPOINT}", "Host endpoint egress policy"), HEP_ACCEPTED]


def forward_from_rule() -> Rule:
    """Second rule of ``cali-FORWARD``: forward policy of the interface the packet came in on."""
    return Rule(mark(0, MARK_ACCEPT), f"-j {FROM_HEP_FORWARD}", "Host endpoint forward policy (in)")


def forward_to_rule() -> Rule:
    """Last rule of ``cali-FORWARD``: forward policy of the interface the packet leaves by."""
    return Rule("", f"-j {TO_HEP_FORWARD}", "Host endpoint forward policy (out)")


def with_host_endpoints(chain: Chain) -> Chain:
    """``cali-INPUT``, ``cali-OUTPUT`` or ``cali-FORWARD`` (as ``static_chains`` renders them) with
    the host endpoint rules added where Felix has them (reference 2.4, 2.5); others unchanged."""
    rules = list(chain.rules)
    if chain.name == INPUT:
        rules += input_rules()
    elif chain.name == OUTPUT:
        rules += output_rules()
    elif chain.name == FORWARD:
        rules = [rules[0], forward_from_rule(), *rules[1:], forward_to_rule()]
    return Chain(chain.name, tuple(rules), chain.table)
