"""Workload anti-spoofing: strict reverse-path filtering in the raw table (Calico's, reference 2.9).

A pod may put any source address on its packets (a second address on its ``eth0``, a raw socket):
with another pod's address it would pass every rule that allows that pod by selector or ipBlock.
So, as in Calico, raw ``cali-PREROUTING`` marks every packet arriving on a workload interface
(``-i cali+``) with the from-workload bit (:data:`~policy.chain_names.MARK_FROM_WORKLOAD`), sends it
through ``cali-rpf-skip`` (whose ACCEPT ends the raw table for the packet: the exceptions), and
DROPs it when ``-m rpfilter --validmark --invert`` says the route back to its source does not leave
through the interface it came in on. A pod's own addresses pass (``<ip>/32 dev caliX``, ``/128``),
as do IPv6 link-local sources (the kernel's ``fe80::/64 dev caliX``: NDP, DHCPv6) and the unspecified
address (DAD, DHCP discovery), which rpfilter lets through: Calico adds no DHCPv6 or NDP exception
and neither does felixpy (the dual-stack kernel tests ping through it). ``--validmark`` makes the
reverse lookup use the packet's mark, as Calico's rule does.

``cali-rpf-skip`` holds one ``-i <iface> -s <prefix> -j ACCEPT`` per prefix of a local workload
endpoint's ``allowSpoofedSourcePrefixes`` (Kubernetes: the pod annotation
``cni.projectcalico.org/allowedSourcePrefixes``), of the chain's IP version, and only while
FelixConfiguration ``workloadSourceSpoofing`` is ``Any``; with the default ``Disabled`` the field
is ignored (the compiler lists such endpoints, the agent logs them). The chain always exists, so
the jump to it never dangles.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_network

from felixpy.dataplane.kernel_objects import Chain, Rule
from policy.chain_names import MARK_FROM_WORKLOAD, RPF_SKIP, mark, set_mark

FROM_WORKLOAD = mark(MARK_FROM_WORKLOAD, MARK_FROM_WORKLOAD)
NOT_FROM_WORKLOAD = mark(0, MARK_FROM_WORKLOAD)
RPF_FAILED = "-m rpfilter --validmark --invert"


def workload_rpf_rules(iface_prefixes: Iterable[str]) -> list[Rule]:
    """The workload part of raw ``cali-PREROUTING`` (after the marks are cleared): mark packets from
    workload interfaces, let ``cali-rpf-skip`` accept the allowed spoofed sources, drop the rest of
    those whose source fails strict RPF."""
    rules = [
        Rule(f"-i {p}+", set_mark(MARK_FROM_WORKLOAD, MARK_FROM_WORKLOAD), "Mark packets from workloads")
        for p in iface_prefixes
    ]
    rules.append(Rule(FROM_WORKLOAD, f"-j {RPF_SKIP}", "Workload source prefixes allowed to spoof"))
    rules.append(Rule(f"{FROM_WORKLOAD} {RPF_FAILED}", "-j DROP", "Drop workload packets failing strict RPF"))
    return rules


def version_prefixes(prefixes: Iterable[str], version: int) -> tuple[str, ...]:
    """The prefixes of one IP version, normalised, sorted, without duplicates."""
    nets = {ip_network(p, strict=False) for p in prefixes}
    return tuple(str(n) for n in sorted(n for n in nets if n.version == version))


def rpf_skip_chain(allowed: Iterable[tuple[str, tuple[str, ...]]]) -> Chain:
    """raw ``cali-rpf-skip`` from ``(iface, prefixes)`` pairs (one IP version), in interface order."""
    rules = tuple(
        Rule(f"-i {iface} -s {prefix}", "-j ACCEPT", f"Spoofed source allowed from {iface}")
        for iface, prefixes in sorted(allowed)
        for prefix in prefixes
    )
    return Chain(RPF_SKIP, rules, "raw")
