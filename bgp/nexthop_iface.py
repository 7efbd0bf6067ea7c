"""The interface a next hop is reached over, for BGPFilter ``interface`` rules (BIRD's ``ifname``).

``NextHopInterfaces(netns)(address)`` asks the kernel (``ip -j route get <address>``, in the
node's namespace) and remembers the answer for ``TTL`` seconds. It is only called for routes a
rule with an ``interface`` match looks at, once per next hop, so a table of thousands of routes
from one peer costs one lookup. An address the kernel cannot route, or a failed lookup, has no
interface ("" — an interface rule never matches it); the failure is logged once per address.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time

log = logging.getLogger(__name__)
TTL = 30.0
TIMEOUT = 5.0
MAX_CACHED = 4096


class NextHopInterfaces:
    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._cache: dict[str, tuple[float, str]] = {}
        self._warned: set[str] = set()

    def __call__(self, address: str) -> str:
        now = time.monotonic()
        hit = self._cache.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        name = self._lookup(address)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[address] = (now + TTL, name)
        return name

    def _lookup(self, address: str) -> str:
        argv = ["ip", "-j", "route", "get", address]
        if self._netns:
            argv = ["ip", "netns", "exec", self._netns, *argv]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
            routes = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            routes = []
            reason = str(exc)
        else:
            reason = out.stderr.strip()
        name = str(routes[0].get("dev", "")) if routes and isinstance(routes[0], dict) else ""
        if not name and address not in self._warned:
            self._warned.add(address)
            log.warning(
                "bgp: no interface found for next hop %s (%s): interface rules do not match it",
                address,
                reason or "no route",
            )
        return name
