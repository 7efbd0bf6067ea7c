"""Install best paths into the kernel (the only part of bgp/ that talks to netlink).

``resolve`` (pure) turns best paths into a kernel route the way Calico's BIRD kernel filter
does: pools in VXLAN mode are skipped (the agent programs those from the datastore); IPIP
``Always`` routes, and ``CrossSubnet`` ones whose next hop is outside this node's subnet,
go ``via <node> dev tunl0 onlink``; everything else goes ``via <next hop>`` directly.
``Fib`` keeps desired vs applied state, writes only differences, and re-reads the kernel on
``resync`` to repair drift. Routes found at startup (a previous agent's) are adopted and
kept until ``release_adopted`` — after peers re-sent their tables — so a restart is hitless.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from bgp.filters import PoolInfo, pool_for
from bgp.route import Route

log = logging.getLogger(__name__)
TUNNEL_DEV = "tunl0"
BULK_THRESHOLD = 16  # from this many changes on, use the ops' batched path when it has one


@dataclass(frozen=True, slots=True, order=True)
class NextHop:
    gateway: str
    dev: str | None = None
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class FibRoute:
    dst: str
    hops: tuple[NextHop, ...]


class RouteOps(Protocol):
    def list_routes(self) -> dict[str, FibRoute]: ...
    def replace_route(self, route: FibRoute) -> None: ...
    def del_route(self, dst: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Resolver:
    pools: tuple[PoolInfo, ...] = ()
    local_subnets: tuple[str, ...] = ()  # this node's subnet(s), from Node.spec.bgp.ipv4Address
    tunnel_dev: str = TUNNEL_DEV

    def _same_subnet(self, gateway: str) -> bool:
        ip = ipaddress.ip_address(gateway)
        return any(ip in ipaddress.ip_network(s, strict=False) for s in self.local_subnets)

    def hop(self, route: Route, pool: PoolInfo | None) -> NextHop:
        gateway = route.next_hop
        v4 = ":" not in gateway
        mode = pool.ipip_mode if pool is not None else "Never"
        if v4 and (mode == "Always" or (mode == "CrossSubnet" and not self._same_subnet(gateway))):
            return NextHop(gateway, self.tunnel_dev, onlink=True)
        return NextHop(gateway)

    def resolve(self, prefix: str, best: Iterable[Route]) -> FibRoute | None:
        routes = list(best)
        if not routes:
            return None
        pool = pool_for(prefix, self.pools)
        if pool is not None and pool.vxlan_mode != "Never":
            return None
        hops = tuple(sorted({self.hop(r, pool) for r in routes}))
        return FibRoute(prefix, hops)


class Fib:
    def __init__(
        self, ops: RouteOps, *, resolver: Resolver | None = None, adopt_existing: bool = True
    ) -> None:
        self.ops = ops
        self.resolver = resolver or Resolver()
        self._desired: dict[str, FibRoute] = {}
        self._applied: dict[str, FibRoute] = {}
        self._dirty: set[str] = set()
        self._adopted: set[str] = set()
        self._adopt = adopt_existing
        self.errors = 0

    def stage(self, prefix: str, best: Iterable[Route]) -> None:
        route = self.resolver.resolve(prefix, best)
        if route is None:
            self._desired.pop(prefix, None)
        else:
            self._desired[prefix] = route
        self._dirty.add(prefix)

    def desired(self) -> dict[str, FibRoute]:
        return dict(self._desired)

    def apply(self) -> int:
        """Write staged differences; returns the number of kernel changes."""
        dirty, self._dirty = sorted(self._dirty), set()
        bulk = getattr(self.ops, "apply_many", None)
        if bulk is not None and len(dirty) >= BULK_THRESHOLD:
            return self._apply_bulk(dirty, bulk)
        return sum(self._apply_one(prefix) for prefix in dirty)

    def _apply_bulk(self, dirty: list[str], bulk: Callable[..., list[tuple[str, int]]]) -> int:
        replace = [
            want for p in dirty if (want := self._desired.get(p)) is not None and want != self._applied.get(p)
        ]
        delete = [
            p for p in dirty if p not in self._desired and p in self._applied and p not in self._adopted
        ]
        failed = dict(bulk(replace, delete))
        for route in replace:
            if route.dst not in failed:
                self._applied[route.dst] = route
                self._adopted.discard(route.dst)
        for prefix in delete:
            if prefix not in failed:
                del self._applied[prefix]
        for prefix, code in failed.items():
            self.errors += 1
            log.warning("bgp route %s failed: errno %s (retried at the next resync)", prefix, code)
        log.info("bgp routes: %d installed, %d removed, %d failed", len(replace), len(delete), len(failed))
        return len(replace) + len(delete) - len(failed)

    def _apply_one(self, prefix: str) -> int:
        want = self._desired.get(prefix)
        have = self._applied.get(prefix)
        try:
            if want is not None and want != have:
                self.ops.replace_route(want)
                self._applied[prefix] = want
                self._adopted.discard(prefix)
                log.info("bgp route installed %s via %s", prefix, [h.gateway for h in want.hops])
                return 1
            if want is None and (have is not None) and prefix not in self._adopted:
                self.ops.del_route(prefix)
                del self._applied[prefix]
                log.info("bgp route removed %s (no best path)", prefix)
                return 1
        except OSError as exc:
            self.errors += 1
            log.warning("bgp route %s failed: %s", prefix, exc)
        return 0

    def resync(self) -> int:
        """Re-read the kernel (our protocol only) and repair any difference."""
        actual = self.ops.list_routes()
        if self._adopt:
            self._adopted = {p for p in actual if p not in self._desired}
            self._adopt = False
        self._applied = actual
        self._dirty |= set(actual) | set(self._desired)
        return self.apply()

    def release_adopted(self) -> int:
        """Routes left by a previous run that nobody re-announced: remove them now."""
        released, self._adopted = self._adopted, set()
        self._dirty |= released
        return self.apply()
