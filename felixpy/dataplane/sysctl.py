"""Writing /proc/sys for the current or another network namespace.

/proc/sys/net shows the network namespace of the task that opens the file. With ``netns=None`` we
write directly (the agent runs inside its node's namespace, so that is the common case). For
another namespace we do NOT setns() this process (that is per-thread and easy to leak in a
threaded agent); we run one short child, ``nsenter --net=<path> sh -c ...``, that writes all the
values of one call at once. Keys are /proc/sys-relative paths with ``/`` ("net/ipv4/conf/X/proxy_arp"),
because interface names may contain dots (``vxlan.calico``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

import structlog

from felixpy.dataplane.errors import CommandFailed, NetnsNotFound

log = structlog.get_logger(__name__)
PROC_SYS = "/proc/sys"
_WRITE_ALL = 'while [ "$#" -gt 1 ]; do printf "%s\\n" "$2" > "$1" || exit 1; shift 2; done'


def netns_path(netns: str) -> str:
    """A netns name (under /var/run/netns) or a path (e.g. /proc/PID/ns/net) -> a path."""
    return netns if "/" in netns else f"/var/run/netns/{netns}"


def write_sysctls(values: Mapping[str, str | int], *, netns: str | None = None, reason: str = "") -> None:
    """Set every ``values`` key (relative to /proc/sys) in ``netns`` (None = this process's)."""
    if not values:
        return
    if netns is None:
        for key, value in values.items():
            with open(f"{PROC_SYS}/{key}", "w") as f:
                f.write(f"{value}\n")
    else:
        path = netns_path(netns)
        if not os.path.exists(path):
            raise NetnsNotFound(path)
        args: list[str] = []
        for key, value in values.items():
            args += [f"{PROC_SYS}/{key}", str(value)]
        argv = ["nsenter", f"--net={path}", "sh", "-c", _WRITE_ALL, "sh", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stderr)
    log.info("sysctl.set", netns=netns, values=dict(values), reason=reason)


def read_sysctl(key: str, *, netns: str | None = None) -> str:
    if netns is None:
        with open(f"{PROC_SYS}/{key}") as f:
            return f.read().strip()
    argv = ["nsenter", f"--net={netns_path(netns)}", "cat", f"{PROC_SYS}/{key}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return proc.stdout.strip()


def host_veth_sysctls(iface: str, *, ipv4: bool = True, ipv6: bool = False) -> dict[str, str]:
    """Calico's settings for the host side of a workload veth (reference 3.2)."""
    values: dict[str, str] = {}
    if ipv4:
        values |= {
            f"net/ipv4/conf/{iface}/route_localnet": "1",
            f"net/ipv4/neigh/{iface}/proxy_delay": "0",
            f"net/ipv4/conf/{iface}/proxy_arp": "1",
            f"net/ipv4/conf/{iface}/forwarding": "1",
        }
    if ipv6:
        values |= {
            f"net/ipv6/conf/{iface}/disable_ipv6": "0",
            f"net/ipv6/conf/{iface}/accept_dad": "0",
            f"net/ipv6/conf/{iface}/proxy_ndp": "1",
            f"net/ipv6/conf/{iface}/forwarding": "1",
        }
    if os.path.exists(f"{PROC_SYS}/net/ipv6"):
        values[f"net/ipv6/conf/{iface}/accept_ra"] = "0"
    return values


def forwarding_sysctls(*, ipv6: bool = True) -> dict[str, str]:
    values = {"net/ipv4/ip_forward": "1"}
    if ipv6:
        values["net/ipv6/conf/all/forwarding"] = "1"
    return values


def enable_ip_forwarding(*, netns: str | None = None, ipv6: bool = True) -> None:
    """Turn on routing in the node namespace (never call with netns=None from tests)."""
    write_sysctls(forwarding_sysctls(ipv6=ipv6), netns=netns, reason="node forwards pod traffic")
