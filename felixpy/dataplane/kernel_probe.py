"""Can this kernel do IPIP, VXLAN, WireGuard the way felixpy uses them? Tried, never guessed.

Each probe runs the agent's own code path in a throwaway network namespace (never the root
one): IPIP is ``ensure_ipip`` (ask for ``tunl0``; the module's fallback device answering
"File exists" is success), VXLAN is ``ensure_vxlan`` over a veth, WireGuard is creating the
device and giving it a key over the WireGuard generic-netlink family, as the WireGuard driver
does. The verdict on an error text is :func:`classify`, a pure function unit-tested against the
kernel's real messages.

``FELIXPY_REQUIRE_KERNEL_FEATURES=ipip,wireguard`` (set by the VM stage) turns "this kernel
lacks X" from a skip into a failure for the features it names: inside the VM nothing may skip
for want of a module that the VM's kernel has.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

FEATURES = ("ipip", "vxlan", "wireguard")
REQUIRE_ENV = "FELIXPY_REQUIRE_KERNEL_FEATURES"

# Error texts meaning "the kernel has no such device kind" (iproute2's and pyroute2's wording).
_UNSUPPORTED = (
    "unknown device type",
    "operation not supported",
    "not supported",
    "no such file or directory",  # genl family missing (pyroute2: WireGuard family not found)
    "protocol not supported",
    "address family not supported",
    "no such device",
)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    feature: str
    supported: bool
    reason: str


def classify(feature: str, error: str) -> ProbeResult:
    """The verdict on the error text of a failed attempt to create ``feature``'s device.

    "File exists" for IPIP means the ``ipip`` module is loaded and its fallback device ``tunl0``
    holds the parameters asked for: IPIP works (this is what every kernel with the module says
    to ``ip link add X type ipip`` without addresses). For the other kinds it means a leftover
    device, which says nothing about the kernel: not supported, with the text as the reason.
    """
    text = error.strip()
    low = text.lower()
    if feature == "ipip" and "file exists" in low:
        return ProbeResult(feature, True, "ipip module loaded (its fallback device tunl0 exists)")
    for marker in _UNSUPPORTED:
        if marker in low:
            return ProbeResult(feature, False, f"kernel without {feature}: {text}")
    return ProbeResult(feature, False, f"cannot create a {feature} device: {text or 'no error text'}")


def required_features(env: dict[str, str] | None = None) -> set[str]:
    """Features named by FELIXPY_REQUIRE_KERNEL_FEATURES (comma separated)."""
    raw = (os.environ if env is None else env).get(REQUIRE_ENV, "")
    return {f.strip().lower() for f in raw.split(",") if f.strip()}


# ---- the probes (side effects: a throwaway namespace) -------------------------------------------
def _netns(tag: str) -> str:
    name = f"fprobe-{tag}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    return name


def _delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _probe_ipip(ns: str) -> ProbeResult:
    from felixpy.dataplane.tunnel_devices import EncapUnsupported, ensure_ipip

    try:
        ensure_ipip("10.255.255.1", mtu=1440, netns=ns)
    except EncapUnsupported as exc:
        return classify("ipip", str(exc))
    return ProbeResult("ipip", True, "tunl0 made and configured as the agent does")


def _probe_vxlan(ns: str) -> ProbeResult:
    from felixpy.dataplane.tunnel_devices import EncapUnsupported, VxlanConfig, ensure_vxlan

    ip = ["ip", "netns", "exec", ns, "ip"]
    subprocess.run([*ip, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                   check=True, capture_output=True, timeout=30)
    subprocess.run([*ip, "addr", "add", "10.255.255.2/24", "dev", "eth0"], check=True,
                   capture_output=True, timeout=30)
    try:
        ensure_vxlan(VxlanConfig(parent="eth0", parent_ip="10.255.255.2", address="10.255.254.1",
                                 mac="66:00:00:00:00:01"), netns=ns)
    except EncapUnsupported as exc:
        return classify("vxlan", str(exc))
    except subprocess.CalledProcessError as exc:  # ethtool
        return classify("vxlan", str(exc.stderr or exc))
    return ProbeResult("vxlan", True, "vxlan.calico made and configured as the agent does")


def _probe_wireguard(ns: str) -> ProbeResult:
    from felixpy.dataplane.wireguard_kernel import WireguardUnsupported, probe_device

    try:
        probe_device(ns)
    except WireguardUnsupported as exc:
        return classify("wireguard", str(exc))
    return ProbeResult("wireguard", True, "wireguard device made and keyed as the agent does")


_PROBES: dict[str, Callable[[str], ProbeResult]] = {
    "ipip": _probe_ipip,
    "vxlan": _probe_vxlan,
    "wireguard": _probe_wireguard,
}
_cache: dict[str, ProbeResult] = {}


def probe(feature: str) -> ProbeResult:
    """Try ``feature`` in a throwaway namespace (needs root); cached for the process."""
    if feature not in _PROBES:
        raise ValueError(f"unknown kernel feature {feature!r}: one of {', '.join(FEATURES)}")
    if feature not in _cache:
        ns = _netns(feature)
        try:
            _cache[feature] = _PROBES[feature](ns)
        finally:
            _delete_netns(ns)
    return _cache[feature]
