"""Install best paths into the kernel (the only part of bgp/ that talks to netlink).

``resolve`` (pure) turns best paths into a kernel route the way Calico's BIRD kernel filter
does: pools in VXLAN mode are skipped (the agent programs those from the datastore); IPIP
``Always`` routes, and ``CrossSubnet`` ones whose next hop is outside this node's subnet,
go ``via <node> dev tunl0 onlink``; everything else goes ``via <next hop>`` directly.
The route's kernel metric is ``bgp.rtnl.BGP_METRIC`` unless a BGPFilter import rule's
``setPriority`` chose another for the best path (``PathAttrs.priority``, Calico's ``krt_metric``);
a metric change is written as the route at the new metric, then the old one deleted.
``Fib`` keeps desired vs applied state, writes only differences, and re-reads the kernel on
``resync`` to repair drift. Routes found at startup (a previous agent's) are adopted and
kept until ``release_adopted`` — after every peer re-sent its table (End-of-RIB, see
``bgp.engine``) — so a restart is hitless; a route learned again before that is ours at once.

Ownership: whatever best path and the filters let through, ``Fib`` never writes a host route
(/32, /128) that the dataplane owns — the ops' ``owned_elsewhere`` answers from the kernel —
and removes its own if the dataplane took the destination since; the kernel writer's metric
(``bgp.rtnl.BGP_METRIC``) and protocol-scoped deletes keep the rest apart. Such refusals are
counted in ``refused_owned`` and logged once per destination.
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
# The metric the dataplane's own routes have (the kernel's default: 0 for IPv4, 1024 for IPv6). A
# setPriority of that value would let a BGP replace overwrite one of them: such a route goes in at
# the default BGP metric instead (logged once per prefix).
DATAPLANE_METRIC = {4: 0, 6: 1024}
_warned_metric: set[str] = set()
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
    metric: int | None = None  # None: the family's default (bgp.rtnl.BGP_METRIC)


class RouteOps(Protocol):
    def list_routes(self) -> dict[str, FibRoute]: ...
    def replace_route(self, route: FibRoute) -> None: ...
    def del_route(self, dst: str) -> None: ...


def _is_host(dst: str) -> bool:
    return dst.endswith("/32") if ":" not in dst else dst.endswith("/128")


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
        # The best path's priority: ECMP members share one kernel route, as BIRD merges them.
        metric = routes[0].attrs.priority
        if metric is not None and metric == DATAPLANE_METRIC[6 if ":" in prefix else 4]:
            if prefix not in _warned_metric and len(_warned_metric) < 10_000:
                _warned_metric.add(prefix)
                log.warning(
                    "bgp route %s: BGPFilter setPriority %d is the dataplane's own route metric; "
                    "installed at the default BGP metric instead, so it can never replace a workload route",
                    prefix,
                    metric,
                )
            metric = None
        return FibRoute(prefix, hops, metric)


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
        self.refused_owned = 0  # writes skipped: the dataplane owns the destination
        self._owned: set[str] = set()  # destinations last found owned by the dataplane

    def stage(self, prefix: str, best: Iterable[Route]) -> None:
        route = self.resolver.resolve(prefix, best)
        if route is None:
            self._desired.pop(prefix, None)
        else:
            self._desired[prefix] = route
            # learned again: ours from now on, so a later withdrawal removes it at once
            self._adopted.discard(prefix)
        self._dirty.add(prefix)

    def desired(self) -> dict[str, FibRoute]:
        return dict(self._desired)

    def applied(self) -> dict[str, FibRoute]:
        """What the kernel holds of ours, as last written or read (``felixctl node routes``)."""
        return dict(self._applied)

    def apply(self) -> int:
        """Write staged differences; returns the number of kernel changes."""
        dirty, self._dirty = sorted(self._dirty), set()
        self._guard(dirty)
        bulk = getattr(self.ops, "apply_many", None)
        if bulk is not None and len(dirty) >= BULK_THRESHOLD:
            return self._apply_bulk(dirty, bulk)
        return sum(self._apply_one(prefix) for prefix in dirty)

    def _guard(self, dirty: list[str]) -> None:
        """Find which wanted host routes the dataplane owns; never write those (and drop ours)."""
        owned_elsewhere = getattr(self.ops, "owned_elsewhere", None)
        hosts = [p for p in dirty if p in self._desired and _is_host(p)]
        if owned_elsewhere is None or not hosts:
            return
        owned = set(owned_elsewhere(hosts))
        for prefix in sorted(owned - self._owned):
            log.warning(
                "bgp route %s not installed: the dataplane owns it (a local workload's route); "
                "the learned route is ignored",
                prefix,
            )
        self.refused_owned += len(owned - self._owned)
        self._owned = (self._owned - set(hosts)) | owned

    def _want(self, prefix: str) -> FibRoute | None:
        return None if prefix in self._owned else self._desired.get(prefix)

    def _apply_bulk(self, dirty: list[str], bulk: Callable[..., list[tuple[str, int]]]) -> int:
        replace = [
            want for p in dirty if (want := self._want(p)) is not None and want != self._applied.get(p)
        ]
        delete = [p for p in dirty if self._want(p) is None and p in self._applied and p not in self._adopted]
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
        want = self._want(prefix)
        have = self._applied.get(prefix)
        try:
            if want is not None and want != have:
                self.ops.replace_route(want)
                self._applied[prefix] = want
                self._adopted.discard(prefix)
                log.info(
                    "bgp route installed %s via %s%s",
                    prefix,
                    [h.gateway for h in want.hops],
                    "" if want.metric is None else f" metric {want.metric} (BGPFilter setPriority)",
                )
                return 1
            if want is None and (have is not None) and prefix not in self._adopted:
                self.ops.del_route(prefix)
                del self._applied[prefix]
                why = "the dataplane owns it" if prefix in self._owned else "no best path"
                log.info("bgp route removed %s (%s)", prefix, why)
                return 1
        except OSError as exc:
            self.errors += 1
            log.warning("bgp route %s (%s) failed: %s", prefix, want, exc)
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
        """Routes left by a previous run that nobody re-announced: remove them now. Those learned
        again since are not touched (they left ``_adopted`` when staged). Returns how many went."""
        released, self._adopted = self._adopted, set()
        gone = sum(1 for p in released if self._want(p) is None and p in self._applied)
        self._dirty |= released
        self.apply()
        return gone
