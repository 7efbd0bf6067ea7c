"""Names of the chains, ipsets and mark bits the policy compiler emits (Calico's, reference 2.2-2.12)."""

from __future__ import annotations

import functools

from policy.selector import b64hash

MAX_CHAIN_NAME = 28
MAX_IPSET_NAME = 31

# Mark bits (classic Calico v3.x layout inside the default IptablesMarkMask 0xffff0000).
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_SCRATCH0 = 0x40000
MARK_SCRATCH1 = 0x80000
MARK_ALL = MARK_ACCEPT | MARK_PASS | MARK_SCRATCH0 | MARK_SCRATCH1
# raw cali-PREROUTING's "arrived on a workload interface" (Calico uses scratch0 for it). Safe to share:
# every later user of scratch0 (a policy rule's multi-rule match, filter cali-FORWARD) clears it first.
MARK_FROM_WORKLOAD = MARK_SCRATCH0

# Top-level chains.
FORWARD = "cali-FORWARD"
INPUT = "cali-INPUT"
OUTPUT = "cali-OUTPUT"
WL_TO_HOST = "cali-wl-to-host"
FROM_WL_DISPATCH = "cali-from-wl-dispatch"
TO_WL_DISPATCH = "cali-to-wl-dispatch"
FROM_HOST_ENDPOINT = "cali-from-host-endpoint"
TO_HOST_ENDPOINT = "cali-to-host-endpoint"
FROM_HEP_FORWARD = "cali-from-hep-forward"
TO_HEP_FORWARD = "cali-to-hep-forward"
ALL_INTERFACES = "any-interface-at-all"  # Felix's chain suffix for interfaceName "*" (> IFNAMSIZ)
POLICY_LIST_TO = "cali-tp-"  # shared policy part of cali-tw- chains (see chains.policy_list_chain)
POLICY_LIST_FROM = "cali-fp-"  # ... of cali-fw- chains
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
NAT_POSTROUTING = "cali-POSTROUTING"
NAT_OUTGOING = "cali-nat-outgoing"
RPF_SKIP = "cali-rpf-skip"  # raw: workload source prefixes exempt from the strict RPF check

# Well-known ipset IDs (prefixed by cali40/cali60).
ALL_POOLS_ID = "all-ipam-pools"
MASQ_POOLS_ID = "masq-ipam-pools"
ALL_HOSTS_ID = "all-hosts-net"


@functools.lru_cache(maxsize=1 << 16)  # pure; the dispatch tree asks it for every endpoint on each change
def length_limited(prefix: str, suffix: str, max_len: int = MAX_CHAIN_NAME) -> str:
    """Calico's GetLengthLimitedID: ``prefix+suffix``, or ``prefix_<hash>`` when too long."""
    if not suffix:
        suffix = "_"
    if len(prefix) + len(suffix) > max_len or (
        len(prefix) + len(suffix) == max_len and suffix.startswith("_")
    ):
        return prefix + "_" + b64hash(suffix, "sha256")[: max_len - 1 - len(prefix)]
    return prefix + suffix


def policy_chain(policy_id: str, direction: str) -> str:
    """``cali-pi-<id>`` (ingress) / ``cali-po-<id>`` (egress)."""
    return length_limited("cali-pi-" if direction == "Ingress" else "cali-po-", policy_id)


def profile_chain(profile: str, direction: str) -> str:
    return length_limited("cali-pri-" if direction == "Ingress" else "cali-pro-", profile)


def to_endpoint_chain(iface: str) -> str:
    return length_limited("cali-tw-", iface)


def from_endpoint_chain(iface: str) -> str:
    return length_limited("cali-fw-", iface)


HEP_CHAIN_PREFIXES = {
    ("Ingress", False): "cali-fh-",  # into the host through the interface
    ("Egress", False): "cali-th-",  # out of the host through the interface
    ("Ingress", True): "cali-fhfw-",  # forwarded, arriving on the interface
    ("Egress", True): "cali-thfw-",  # forwarded, leaving through the interface
}


def host_endpoint_chain(iface: str, direction: str, *, forward: bool = False) -> str:
    """``cali-fh-``/``cali-th-``/``cali-fhfw-``/``cali-thfw-<iface>`` ("*" → ``any-interface-at-all``)."""
    suffix = ALL_INTERFACES if iface == "*" else iface
    return length_limited(HEP_CHAIN_PREFIXES[(direction, forward)], suffix)


def ipset_name(set_id: str, version: int = 4) -> str:
    """``cali40<id>`` / ``cali60<id>``, truncated to the kernel's 31 characters."""
    return f"cali{version}0{set_id}"[:MAX_IPSET_NAME]


def nets_set_id(nets: tuple[str, ...]) -> str:
    """ID of an ipset holding a rule's CIDR list (shared by every rule with the same list)."""
    return "s:" + b64hash("nets:" + ",".join(sorted(nets)))


def named_port_set_id(selector_id: str, protocol: str, port_name: str) -> str:
    return "n:" + b64hash(f"{selector_id},{protocol},{port_name}")


def mark(value: int, mask: int) -> str:
    return f"-m mark --mark {value:#x}/{mask:#x}"


def set_mark(value: int, mask: int) -> str:
    return f"-j MARK --set-xmark {value:#x}/{mask:#x}"
