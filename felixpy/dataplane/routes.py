"""RouteTable: desired-state driver for the routes of ONE protocol number in one table.

The agent owns protocol 80 (``RTPROT_FELIXPY``: workload /32s, blackholes, encap routes); bgp/ owns 81.
Each table only ever deletes routes carrying its own protocol, so several tables coexist. Note that
``replace`` takes over a route with the same destination/table/metric whatever its protocol (as
Felix does for the CNI's ``<pod>/32 dev caliX`` route): give two owners different metrics if they
may want the same destination.

Batch then commit: ``set_desired``/``set_route``/``remove_route`` only change memory; ``apply``
writes the difference in one batched call (``Netlink.apply_routes``: a few netlink sends for a
thousand routes, each route's failure reported on its own); ``resync`` forgets the cached kernel
view and re-reads it (drift repair).
IPv4 and IPv6 go through the same path; the family comes from each destination.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from felixpy.dataplane.errors import LinkNotFound
from felixpy.dataplane.kernel_objects import MAIN_TABLE, RTPROT_FELIXPY, RouteTarget
from felixpy.dataplane.netlink_ops import KernelRoute, Netlink, normalise_cidr
from felixpy.dataplane.prefetch import Prefetch, take

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What ``apply`` must do: routes to replace (with the kernel route they overwrite, if any and a
    reason), kernel routes to delete."""

    replace: tuple[tuple[str, RouteTarget, str, KernelRoute | None], ...] = ()
    delete: tuple[KernelRoute, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.replace and not self.delete


def plan_routes(desired: Mapping[str, RouteTarget], actual: Iterable[KernelRoute]) -> RoutePlan:
    """Pure diff of desired routes against the kernel's routes of our protocol."""
    seen: dict[str, KernelRoute] = {}
    delete: list[KernelRoute] = []
    for route in actual:
        if route.dst in seen or route.dst not in desired:
            delete.append(route)  # duplicate (other metric) or no longer wanted
        else:
            seen[route.dst] = route
    replace: list[tuple[str, RouteTarget, str, KernelRoute | None]] = []
    for dst, target in sorted(desired.items()):
        have = seen.get(dst)
        if have is None:
            replace.append((dst, target, "missing", None))
        elif not _same_target(have.target, target):
            replace.append((dst, target, f"was {have.target}", have))
    return RoutePlan(tuple(replace), tuple(delete))


def _same_target(have: RouteTarget, want: RouteTarget) -> bool:
    if want.type == "blackhole" or have.type == "blackhole":
        return have.type == want.type
    return (have.type, have.gateway, have.onlink) == (want.type, want.gateway, want.onlink) and (
        not want.dev or have.dev == want.dev
    )


@dataclass
class ApplyStats:
    replaced: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)


class RouteTable:
    """Routes with protocol ``proto`` in routing table ``table``, converged to a desired set."""

    def __init__(
        self,
        nl: Netlink,
        *,
        proto: int = RTPROT_FELIXPY,
        table: int = MAIN_TABLE,
        metric: int | None = None,
    ) -> None:
        self._nl = nl
        self.proto = proto
        self.table = table
        self.metric = metric
        self._desired: dict[str, RouteTarget] = {}
        # kernel view keyed by (dst, metric); None: re-read the kernel
        self._actual: dict[tuple[str, int | None], KernelRoute] | None = None
        self._dirty = True
        self._log = log.bind(proto=proto, table=table)
        # felix_route_table_resync_seconds (a summary): full resyncs (kernel re-read and write) and
        # their total time; only the writer thread adds, a scrape reads
        self.resyncs = 0
        self.resync_seconds = 0.0
        self._prefetch: Prefetch[list[KernelRoute]] | None = None

    def prefetch(self) -> None:
        """Start the route dump now, in its own thread, for :meth:`start` to plan against
        (``felixpy.dataplane.prefetch``)."""
        if self._actual is None and self._prefetch is None:
            self._prefetch = Prefetch(f"routes-{self.proto}", self._list)

    def _list(self) -> list[KernelRoute]:
        return self._nl.list_routes(proto=self.proto, table=self.table)

    # --- desired state (memory only) ------------------------------------------------------
    def set_desired(self, routes: Mapping[str, RouteTarget]) -> None:
        """Replace the whole desired set: {dest CIDR: target}."""
        self._desired = {normalise_cidr(dst): _checked(t) for dst, t in routes.items()}
        self._dirty = True

    def set_route(self, dst: str, target: RouteTarget) -> None:
        self._desired[normalise_cidr(dst)] = _checked(target)
        self._dirty = True

    def remove_route(self, dst: str) -> None:
        if self._desired.pop(normalise_cidr(dst), None) is not None:
            self._dirty = True

    @property
    def desired(self) -> Mapping[str, RouteTarget]:
        return dict(self._desired)

    # --- kernel ---------------------------------------------------------------------------
    def start(self) -> ApplyStats:
        """First sync: read the kernel (or take the read :meth:`prefetch` started), remove stale
        routes of our protocol, add what is missing."""
        early, self._prefetch = take(self._prefetch), None
        return self._converge(None if early is None else {(r.dst, r.metric): r for r in early})

    def resync(self) -> ApplyStats:
        """Forget the cached kernel view and converge again (repairs routes changed by hand)."""
        self._prefetch = None  # a re-read is asked for: not one made earlier
        return self._converge(None)

    def _converge(self, actual: dict[tuple[str, int | None], KernelRoute] | None) -> ApplyStats:
        """A full comparison against ``actual`` (None: read the kernel), counted as a resync."""
        self._actual = actual
        self._dirty = True
        start = time.monotonic()
        try:
            return self.apply()
        finally:
            self.resyncs += 1
            self.resync_seconds += time.monotonic() - start

    def apply(self, *, removals_only: bool = False) -> ApplyStats:
        """Write the difference between desired and (cached) actual; no-op when nothing changed.
        ``removals_only``: delete what is no longer wanted and leave additions and replacements for
        the next ``apply`` (the dataplane removes routes before the chains of their endpoints)."""
        stats = ApplyStats()
        if not self._dirty:
            return stats
        if self._actual is None:
            routes = self._list()
            self._actual = {(r.dst, r.metric): r for r in routes}
        plan = plan_routes(self._desired, list(self._actual.values()))
        left = bool(plan.replace) and removals_only
        if left:
            plan = RoutePlan(delete=plan.delete)
        if not plan.empty:
            self._write(plan, stats)
        self._dirty = left or bool(stats.failed)  # retry failed routes (e.g. interface not there yet)
        return stats

    def _write(self, plan: RoutePlan, stats: ApplyStats) -> None:
        """One batched write of the whole plan, then the bookkeeping and one log line per route."""
        replace = [
            (KernelRoute(dst, target, self.proto, self.table, self._metric(have)), reason, have)
            for dst, target, reason, have in plan.replace
        ]
        wanted = [r for r, _reason, _have in replace]
        failed = {id(r): e for r, e in self._nl.apply_routes(delete=plan.delete, replace=wanted)}
        assert self._actual is not None
        for route in plan.delete:
            error = failed.get(id(route))
            if error is not None:
                self._log.warning("route.delete_failed", dst=route.dst, error=str(error))
                stats.failed.append(route.dst)
                continue
            self._actual.pop((route.dst, route.metric), None)
            stats.deleted += 1
            reason = "duplicate" if route.dst in self._desired else "not desired"
            self._log.info("route.deleted", dst=route.dst, target=str(route.target), reason=reason)
        for route, reason, have in replace:
            error = failed.get(id(route))
            if isinstance(error, LinkNotFound):
                self._log.info(
                    "route.deferred",
                    dst=route.dst,
                    target=str(route.target),
                    reason=f"no interface {error.name}",
                )
                stats.failed.append(route.dst)
                continue
            if error is not None:
                self._log.warning(
                    "route.replace_failed", dst=route.dst, target=str(route.target), error=str(error)
                )
                stats.failed.append(route.dst)
                continue
            if have is not None:
                self._actual.pop((have.dst, have.metric), None)
            self._actual[(route.dst, route.metric)] = route
            stats.replaced += 1
            self._log.info("route.replaced", dst=route.dst, target=str(route.target), reason=reason)

    def _metric(self, have: KernelRoute | None) -> int | None:
        return have.metric if have is not None and self.metric is None else self.metric


def _checked(target: RouteTarget) -> RouteTarget:
    if target.type == "dev" and not target.dev:
        raise ValueError("a device route needs a device")
    if target.type == "via" and not target.gateway:
        raise ValueError("a via route needs a gateway")
    return target
