"""Writing /proc/sys for the current or another network namespace.

/proc/sys/net shows the network namespace of the thread that opens the file. With ``netns=None`` we
write directly (the agent runs inside its node's namespace, so that is the common case). For
another namespace we never setns() a long-lived thread (that is easy to leak in a threaded agent):
:func:`run_in_netns` runs the reads/writes of one call in a short helper thread that enters the
namespace and then ends, with no child process. Keys are /proc/sys-relative paths with ``/``
("net/ipv4/conf/X/proxy_arp"), because interface names may contain dots (``vxlan.calico``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

import structlog

from felixpy.dataplane.errors import NetnsNotFound

log = structlog.get_logger(__name__)
PROC_SYS = "/proc/sys"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def netns_path(netns: str) -> str:
    """A netns name (under /var/run/netns) or a path (e.g. /proc/PID/ns/net) -> a path."""
    return netns if "/" in netns else f"/var/run/netns/{netns}"


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a short helper thread that first enters ``netns`` (setns is per thread).

    The thread ends when ``fn`` returns, so no thread of this process stays in another namespace.
    Whatever ``fn`` opens there (a /proc/sys file, a socket) belongs to that namespace.
    """
    path = netns_path(netns)
    result: list[tuple[bool, object]] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            result.append((False, NetnsNotFound(path)))
            return
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {path}: {os.strerror(err)}")
            result.append((True, fn()))
        except BaseException as exc:  # handed to the caller
            result.append((False, exc))
        finally:
            os.close(fd)

    thread = threading.Thread(target=body, name="felixpy-setns", daemon=True)
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def _write_all(values: Mapping[str, str | int]) -> None:
    for key, value in values.items():
        with open(f"{PROC_SYS}/{key}", "w") as f:
            f.write(f"{value}\n")


def write_here(values: Mapping[str, str | int]) -> None:
    """Write ``values`` in the calling thread's namespace, unlogged (for a caller already inside a
    :func:`run_in_netns` body, which logs what it wrote itself)."""
    _write_all(values)


def _read(key: str) -> str:
    with open(f"{PROC_SYS}/{key}") as f:
        return f.read().strip()


def write_sysctls(values: Mapping[str, str | int], *, netns: str | None = None, reason: str = "") -> None:
    """Set every ``values`` key (relative to /proc/sys) in ``netns`` (None = this process's)."""
    if not values:
        return
    if netns is None:
        _write_all(values)
    else:
        run_in_netns(netns, lambda: _write_all(values))
    log.info("sysctl.set", netns=netns, values=dict(values), reason=reason)


def repair_sysctls(
    values: Mapping[str, str], *, netns: str | None = None, reason: str = ""
) -> dict[str, tuple[str, str]]:
    """Rewrite the keys whose value is not ``values``' (keys that vanished, e.g. a veth deleted
    meanwhile, are skipped). Returns {key: (found, written)}; logs one line when anything changed."""

    def body() -> dict[str, tuple[str, str]]:
        fixed: dict[str, tuple[str, str]] = {}
        for key, want in values.items():
            try:
                have = _read(key)
                if have != str(want):
                    _write_all({key: want})
                    fixed[key] = (have, str(want))
            except FileNotFoundError:
                continue
        return fixed

    fixed = body() if netns is None else run_in_netns(netns, body)
    if fixed:
        log.info("sysctl.repaired", netns=netns, values={k: v[1] for k, v in fixed.items()},
                 found={k: v[0] for k, v in fixed.items()}, reason=reason)
    return fixed


def read_sysctl(key: str, *, netns: str | None = None) -> str:
    return _read(key) if netns is None else run_in_netns(netns, lambda: _read(key))


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


def container_v6_sysctls(ifname: str = "eth0") -> dict[str, str]:
    """Inside a pod with an IPv6 address: the stack enabled (Calico: all, default, lo, and eth0)."""
    return {f"net/ipv6/conf/{name}/disable_ipv6": "0" for name in ("all", "default", "lo", ifname)}


def ipv6_available(*, netns: str | None = None) -> bool:
    """The kernel has IPv6 (a node booted with ipv6.disable=1 has no /proc/sys/net/ipv6)."""
    if netns is None:
        return os.path.exists(f"{PROC_SYS}/net/ipv6")
    return run_in_netns(netns, lambda: os.path.exists(f"{PROC_SYS}/net/ipv6"))


def forwarding_sysctls(*, ipv6: bool = True) -> dict[str, str]:
    values = {"net/ipv4/ip_forward": "1"}
    if ipv6:
        values["net/ipv6/conf/all/forwarding"] = "1"
    return values


def enable_ip_forwarding(*, netns: str | None = None, ipv6: bool = True) -> None:
    """Turn on routing in the node namespace (never call with netns=None from tests)."""
    write_sysctls(forwarding_sysctls(ipv6=ipv6), netns=netns, reason="node forwards pod traffic")
