"""The Linux dataplane: applies calc deltas through the dataplane engineer's drivers.

``apply`` only records desired state (routes into the RouteTable, endpoints into a dict) and hands
the policy updates over; ``commit`` writes the kernel once per batch. Which policy writes go now
and which wait (a CNI DEL's chains, what an insert-only commit left) is decided on the writers'
side, by ``felixpy.dataplane.deferral.PolicyDeferral``, not here: the dataplane asks it to commit
every batch and passes the writer loop's ``next_deadline``/``commit_deferred`` through.
Commit order is Felix's: routes that go are removed first, then policy is written (ipsets, then
iptables, then ipsets nothing references any more, see ``policy_driver``), then the routes that
are new or changed. So a new pod's route appears only once its ``cali-tw/fw`` chains exist, and a
gone pod's route leaves before its chains do. While a policy commit has failed, routes are not added
(the commit that writes policy adds them: the next batch, or ``commit_deferred``).
The first commit after in-sync is the start-up
sweep: routes of our protocol that nothing wants are removed by the RouteTable, and ``cali*``
veths without a workload endpoint are deleted. Policy (iptables/ipsets) is handed to an optional
``policy`` driver; without one the agent programs nothing in iptables. With IPv6 that driver is
a :class:`FamilyPolicies` of an iptables and an ip6tables driver.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import structlog

from felixpy.calc.updates import (
    IPIP_DEVICE,
    VXLAN_DEVICE,
    ChainsUpdate,
    EncapUpdate,
    EndpointUpdate,
    HooksUpdate,
    InSync,
    IpsetsUpdate,
    PolicyInputsUpdate,
    Route,
    RouteUpdate,
    Update,
    VtepUpdate,
    WireguardUpdate,
)
from felixpy.dataplane.deferral import FlushClock, PolicyDeferral, PolicyWriters
from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.netlink_ops import normalise_cidr
from felixpy.dataplane.orphans import Orphans
from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.dataplane.encap_driver import EncapDriver
    from felixpy.dataplane.links import WorkloadLinks
    from felixpy.dataplane.policy_driver import CommitStep
    from felixpy.dataplane.routes import RouteTable

log = structlog.get_logger(__name__)
# What the policy writers are given: local endpoints (their removal may wait), the compiled policy and
# which inputs it came from (what the deferral decides by), and InSync.
POLICY_UPDATES = (EndpointUpdate, PolicyInputsUpdate, ChainsUpdate, IpsetsUpdate, HooksUpdate, InSync)


class PolicyDriver(PolicyWriters, Protocol):
    """What the agent hands calc's compiled policy to (the iptables/ipset writers); the dataplane
    puts a :class:`PolicyDeferral` in front of it."""

    def resync(self, what: str) -> None: ...

    def post_write_check(self) -> None: ...

    def endpoint_programmed(self, iface: str) -> bool: ...

    def prefetch(self) -> None: ...


class FamilyDriver(PolicyDriver, Protocol):
    """A policy driver whose commit comes in steps (``felixpy.dataplane.policy_driver.PolicyDriver``):
    ``commit(a)`` is ``finish(write_iptables(prepare(a)))``; a step (``policy_driver.CommitStep``)
    is opaque here."""

    def prepare(self, additive: bool = False) -> CommitStep: ...

    def write_iptables(self, step: CommitStep) -> CommitStep: ...

    def finish(self, step: CommitStep) -> bool: ...

    def post_write_check_due(self) -> bool: ...


class FamilyPolicies:
    """One policy driver per IP version (each with its own compiler and iptables/ip6tables writer)
    behind the single :class:`PolicyDriver` the dataplane talks to. Every driver sees every update
    and commits every batch; an endpoint is programmed once it is in all of them.

    A commit runs the drivers' steps side by side where they are independent: each driver's
    ``prepare`` in turn (they share one ipset writer), each family's iptables write starting as
    soon as its own ``prepare`` is done (an iptables-restore and an ip6tables-restore: separate
    processes and tables, so a CNI ADD waits for the slower of the two, not their sum, and the
    IPv4 restore runs while the IPv6 driver prepares), then each ``finish`` in turn (ipsets no
    longer referenced go only once every family's chains stopped using them)."""

    def __init__(self, drivers: Sequence[FamilyDriver]) -> None:
        self.drivers = tuple(drivers)
        self._pool: ThreadPoolExecutor | None = None

    def on_updates(self, updates: list[Update]) -> None:
        for driver in self.drivers:
            driver.on_updates(updates)

    def prefetch(self) -> None:
        """Each family's start-up reads, started now (``LinuxDataplane.prefetch``)."""
        for driver in self.drivers:
            driver.prefetch()

    def _others(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = max(1, len(self.drivers) - 1)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="felixpy-policy")
        return self._pool

    def commit(self, additive: bool = False) -> bool:
        # Each family's iptables write goes to the pool as soon as its own ipsets are written, so
        # the IPv4 restore runs while the IPv6 driver prepares (its chains' hashes, its sets): the
        # shared ipset writer is still used by one thread at a time (write_iptables never touches
        # it), and sets are destroyed only in the finish steps, once every family's write is done.
        # The last family writes in this thread. No short cut on a failure: each retries alone.
        *ahead, last = self.drivers
        started = [self._others().submit(d.write_iptables, d.prepare(additive)) for d in ahead]
        done_last = last.write_iptables(last.prepare(additive))
        steps = [*(f.result() for f in started), done_last]
        return all([driver.finish(step) for driver, step in zip(self.drivers, steps, strict=True)])

    @property
    def deferred(self) -> bool:
        return any(driver.deferred for driver in self.drivers)

    def resync(self, what: str) -> None:
        for driver in self.drivers:
            driver.resync(what)

    def post_write_check(self) -> None:
        """Each family's check (when due, a re-read of its whole tables) side by side, as their
        writes are: the writer loop, and the change waiting for it, wait for the slower one."""
        # only those due go to the pool: the writer loop calls this on every turn (about once a
        # second when idle), and a hand-over to a pool thread for nothing is an idle wake-up
        others = [
            self._others().submit(driver.post_write_check)
            for driver in self.drivers[1:]
            if driver.post_write_check_due()
        ]
        self.drivers[0].post_write_check()
        for future in others:
            future.result()

    def endpoint_programmed(self, iface: str) -> bool:
        return all(driver.endpoint_programmed(iface) for driver in self.drivers)


def iface_exists(name: str) -> bool:
    """Whether a network interface of this name exists in the calling thread's namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def route_target(route: Route) -> RouteTarget:
    if route.kind == "local":
        return RouteTarget.device(route.iface or "")
    if route.kind == "blackhole":
        return RouteTarget.blackhole()
    if route.kind == "vxlan":
        return RouteTarget.via(route.gateway or "", route.iface or VXLAN_DEVICE, onlink=True)
    if route.kind == "ipip":
        return RouteTarget.via(route.gateway or "", route.iface or IPIP_DEVICE, onlink=True)
    return RouteTarget.via(route.gateway or "", route.iface or "")


class LinuxDataplane:
    def __init__(
        self,
        *,
        routes: RouteTable,
        links: WorkloadLinks,
        encap: EncapDriver | None = None,
        policy: PolicyDriver | None = None,
        bgp_sink: Callable[[list[Update]], None] | None = None,
        iface_exists: Callable[[str], bool] = iface_exists,
        flush_clock: FlushClock | None = None,
    ) -> None:
        self.routes = routes
        self.links = links
        self.encap = encap
        self.policy = policy
        self.bgp_sink = bgp_sink
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self._pending_sweep = False
        self._started = False
        self._ipip_routes: set[str] = set()  # routes over tunl0 (dropped if the kernel has no ipip)
        self.orphans = Orphans(iface_exists)  # local endpoints whose interface is gone (routes withheld)
        # The policy writers' front: what goes now and what waits is decided there, not here.
        self.deferral = None if policy is None else PolicyDeferral(policy, flush_clock)

    def prefetch(self) -> None:
        """Start the reads the first commit plans against (the route dump, each family's
        ``iptables-save``, ``ipset save``, the link list of the stale-veth sweep) in their own
        threads, so they run while the datastore snapshot is fetched and the calc graph digests
        it instead of after (the agent calls this
        once it has built the dataplane; ``felixpy.dataplane.prefetch`` says what a read taken
        early may miss and how that is caught)."""
        self.routes.prefetch()
        if self.links is not None:
            self.links.prefetch()
        if self.policy is not None:
            self.policy.prefetch()

    def _on_route(self, u: RouteUpdate) -> None:
        self._ipip_routes.discard(u.dst)
        orphan = self.orphans.withholding(u.dst)
        if orphan is not None:  # no interface to route to: keep it out of the table until there is
            dst = normalise_cidr(u.dst)
            if u.route is None:
                orphan.withheld.pop(dst, None)
            else:
                orphan.withheld[dst] = route_target(u.route)
            return
        if u.route is None:
            self.routes.remove_route(u.dst)
            return
        if u.route.kind == "ipip":
            self._ipip_routes.add(u.dst)
            if self.encap is not None and self.encap.ipip_usable is False:
                self.routes.remove_route(u.dst)
                return
        self.routes.set_route(u.dst, route_target(u.route))

    def apply(self, updates: list[Update]) -> None:
        for u in updates:
            if isinstance(u, RouteUpdate):
                self._on_route(u)
            elif isinstance(u, EndpointUpdate):
                if u.key in self.orphans:
                    why = "endpoint deleted" if u.endpoint is None else "endpoint updated"
                    self._restore_orphan(u.key, why)
                if u.endpoint is None:
                    self.endpoints.pop(u.key, None)
                else:
                    self.endpoints[u.key] = u.endpoint
            elif isinstance(u, EncapUpdate | VtepUpdate | WireguardUpdate) and self.encap is not None:
                self.encap.on_update(u)
            elif isinstance(u, InSync):
                self._pending_sweep = True
        if self.deferral is not None:
            self.deferral.on_updates([u for u in updates if isinstance(u, POLICY_UPDATES)])
        if self.bgp_sink is not None:
            self.bgp_sink(updates)

    def commit(self) -> bool:
        first = not self._started
        clock = time.monotonic
        t0 = clock()
        if self._pending_sweep:
            self._pending_sweep = False
            self._sweep_links()
        t_sweep = clock()
        ok = True
        if self.encap is not None:
            ok = bool(self.encap.apply()) and ok
            if self.encap.ipip_usable is False:
                for dst in self._ipip_routes:  # no tunl0 on this kernel: never ask for them
                    self.routes.remove_route(dst)
        self._revive_orphans()
        if self._started:  # routes that go leave before their endpoints' chains do
            ok = self._write_routes(removals_only=True) and ok
        t_encap = clock()
        if self.deferral is not None:  # what must go now goes; the rest waits for next_deadline
            ok = self.deferral.commit() and ok
        t_policy = clock()
        ok = self._write_routes() and ok  # new routes only once the chains they lead to exist
        if first:  # start-up's phases, to line up with the agent's other start-up timestamps
            log.info(
                "dataplane.first_commit",
                ok=ok,
                sweep_ms=round((t_sweep - t0) * 1000, 1),
                encap_ms=round((t_encap - t_sweep) * 1000, 1),
                policy_ms=round((t_policy - t_encap) * 1000, 1),  # ipsets, iptables of each family
                routes_ms=round((clock() - t_policy) * 1000, 1),
                reason="the first programming after the datastore snapshot",
            )
        return ok

    @property
    def _policy_failed(self) -> bool:
        return self.deferral is not None and self.deferral.failed

    def _write_routes(self, *, removals_only: bool = False) -> bool:
        """The route table's pending changes (the first time: the start-up sweep of our protocol).
        While a policy commit has failed, routes are not added: a new endpoint's route would lead
        to an interface whose chains are missing. They go with the commit that writes policy."""
        if self._policy_failed and not removals_only:
            log.info("route.held", reason="the last policy commit failed: routes wait for their chains")
            return False
        stats = self.routes.apply(removals_only=removals_only) if self._started else self.routes.start()
        self._started = True
        return not self._unexplained(stats.failed)

    @property
    def deferred(self) -> bool:
        """Policy writes are waiting (endpoint removals, what an insert-only commit left, a failure)."""
        return self.deferral is not None and self.deferral.deferred

    @property
    def flush_clock(self) -> FlushClock | None:
        """The deferral's clock (None without policy)."""
        return None if self.deferral is None else self.deferral.clock

    @flush_clock.setter
    def flush_clock(self, clock: FlushClock) -> None:
        if self.deferral is not None:
            self.deferral.clock = clock

    def next_deadline(self) -> float | None:
        """When what earlier batches deferred is due to be written alone (None: nothing deferred)."""
        return None if self.deferral is None else self.deferral.next_deadline()

    def commit_deferred(self) -> bool:
        """Write what earlier batches deferred (the writer calls this at :meth:`next_deadline`)."""
        if self.deferral is None or not self.deferral.deferred:
            return True
        ok = self.deferral.commit_deferred()
        if ok and self._started:
            ok = self._write_routes()  # routes held back by an earlier failed commit
        return ok

    def resync(self, what: str) -> None:
        if what == "routes":
            if self.encap is not None:
                self.encap.resync()
                self.encap.apply()
            self._repair_sysctls()
            self._revive_orphans()
            if self._policy_failed:  # as in commit: no route before its chains
                return
            stats = self.routes.resync()
            self._unexplained(stats.failed)
            if stats.replaced or stats.deleted:
                log.info(
                    "dataplane.resync",
                    what=what,
                    replaced=stats.replaced,
                    deleted=stats.deleted,
                    reason="periodic refresh found drift",
                )
        elif self.policy is not None:
            self.policy.resync(what)

    def _unexplained(self, failed: list[str]) -> list[str]:
        """Route failures not explained by an orphan: endpoints whose interface is gone become orphans
        (their routes withheld, so the table stops retrying them); the rest are real failures."""
        if not failed:
            return failed
        for _, orphan in self.orphans.find(failed, self.endpoints, self.routes.desired):
            for dst in orphan.withheld:
                self.routes.remove_route(dst)
        return [dst for dst in failed if self.orphans.withholding(dst) is None]

    def _revive_orphans(self) -> None:
        """Orphans whose interface exists again (a re-ADD of the pod, say) get their routes back: one
        name lookup per orphan, so every commit can afford it."""
        if self.orphans:
            for key in self.orphans.revived():
                self._restore_orphan(key, "its interface exists again")

    def _restore_orphan(self, key: tuple[str, str], reason: str) -> None:
        orphan = self.orphans.forget(key, reason=reason)
        if orphan is not None:
            for dst, target in orphan.withheld.items():
                self.routes.set_route(dst, target)

    def _repair_sysctls(self) -> None:
        families: dict[str, set[int]] = {}
        for ep in self.endpoints.values():
            if ep.iface:
                families.setdefault(ep.iface, set()).update(6 if ":" in ip else 4 for ip in ep.ips)
        try:
            self.links.repair_sysctls(families)
        except OSError as exc:  # a veth or the namespace gone meanwhile: the next refresh tries again
            log.warning("sysctl.repair_failed", error=str(exc))

    def post_write_check(self) -> None:
        """Felix's post-write check of the iptables tables (the writer loop calls this every turn)."""
        if self.policy is not None:
            self.policy.post_write_check()

    def wanted_ifaces(self) -> set[str]:
        return {ep.iface for ep in self.endpoints.values() if ep.iface}

    def _sweep_links(self) -> None:
        removed = self.links.remove_stale(self.wanted_ifaces())
        if removed:
            log.info(
                "dataplane.startup_sweep", removed=removed, reason="no workload endpoint for these veths"
            )
