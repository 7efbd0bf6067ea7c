"""The Linux dataplane: applies calc deltas through the dataplane engineer's drivers.

``apply`` only records desired state (routes into the RouteTable, endpoints into a dict);
``commit`` writes the kernel once per batch. A batch whose only policy input is endpoints going
away (a CNI DEL) does not wait for iptables: the interface is gone, so its ``cali-tw/fw`` chains
and dispatch entries are unreachable, and their removal is folded into the next batch (the next
ADD's commit, which must write chains anyway), or flushed by the writer once it has been idle
(``felixpy.dataplane.deferral``). Anything else (a new endpoint, a policy change) commits at once, so an
ADD still returns only after its isolating chains are in. That commit is additive (see
``policy_driver``): iptables only adds where it can (the new chains, an inserted dispatch rule) and
the removals pending from earlier DELs stay deferred with the hash fix-ups; the writer loop flushes
them with a plain commit once idle, and at the latest ``DEFERRED_MAX_SECONDS`` later, however
busy it is. A dispatch rule left that long matches only the gone pod's interface name: an address
the IPAM hands out again goes to a new pod's interface (new name, new chains), and a re-ADD of the
same pod (same name) makes that rule and its chains desired again, rewritten first if they differ.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

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
from felixpy.dataplane.deferral import FlushClock
from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.netlink_ops import normalise_cidr
from felixpy.dataplane.orphans import Orphans
from policy.entities import Endpoint

if TYPE_CHECKING:
    from felixpy.dataplane.encap_driver import EncapDriver
    from felixpy.dataplane.links import WorkloadLinks
    from felixpy.dataplane.routes import RouteTable

log = structlog.get_logger(__name__)
# What the policy driver is given: local endpoints (their removal may wait), the compiled policy and
# which inputs it came from, and InSync.
POLICY_UPDATES = (EndpointUpdate, PolicyInputsUpdate, ChainsUpdate, IpsetsUpdate, HooksUpdate, InSync)


class PolicyDriver(Protocol):
    """What the agent hands calc's compiled policy to (the iptables/ipset writers)."""

    def on_updates(self, updates: list[Update]) -> None: ...

    def commit(self, additive: bool = False) -> bool: ...

    @property
    def deferred(self) -> bool: ...

    def resync(self, what: str) -> None: ...

    def post_write_check(self) -> None: ...

    def endpoint_programmed(self, iface: str) -> bool: ...


class FamilyDriver(PolicyDriver, Protocol):
    """A policy driver whose commit comes in steps (``felixpy.dataplane.policy_driver.PolicyDriver``):
    ``commit(a)`` is ``finish(write_iptables(prepare(a)))``; a step's state is opaque here."""

    def prepare(self, additive: bool = False) -> Any: ...

    def write_iptables(self, step: Any) -> Any: ...

    def finish(self, step: Any) -> bool: ...


class FamilyPolicies:
    """One policy driver per IP version (each with its own compiler and iptables/ip6tables writer)
    behind the single :class:`PolicyDriver` the dataplane talks to. Every driver sees every update
    and commits every batch; an endpoint is programmed once it is in all of them.

    A commit runs the drivers' steps side by side where they are independent: each driver's
    ``prepare`` in turn (they share one ipset writer), then their iptables writes at once (an
    iptables-restore and an ip6tables-restore: separate processes and tables, so a CNI ADD waits
    for the slower of the two, not their sum), then each ``finish`` in turn (ipsets no longer
    referenced go only once every family's chains stopped using them)."""

    def __init__(self, drivers: Sequence[FamilyDriver]) -> None:
        self.drivers = tuple(drivers)
        self._pool: ThreadPoolExecutor | None = None

    def on_updates(self, updates: list[Update]) -> None:
        for driver in self.drivers:
            driver.on_updates(updates)

    def _others(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = max(1, len(self.drivers) - 1)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="felixpy-policy")
        return self._pool

    def commit(self, additive: bool = False) -> bool:
        steps = [driver.prepare(additive) for driver in self.drivers]  # no short cut: each retries alone
        others = [
            self._others().submit(driver.write_iptables, step)
            for driver, step in zip(self.drivers[1:], steps[1:], strict=True)
        ]
        steps = [self.drivers[0].write_iptables(steps[0]), *(f.result() for f in others)]
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
        others = [self._others().submit(driver.post_write_check) for driver in self.drivers[1:]]
        self.drivers[0].post_write_check()
        for future in others:
            future.result()

    def endpoint_programmed(self, iface: str) -> bool:
        return all(driver.endpoint_programmed(iface) for driver in self.drivers)


def _only_local_removals(updates: list[Update], gone: set[tuple[str, str]]) -> bool:
    """Only local endpoints going away: nothing new to isolate, so their chains can wait a batch.

    ``gone``: local endpoints removed since the last policy commit (the datastore's echo of a CNI
    DEL's own delete arrives a batch later). Remote endpoints are never deferred: their addresses
    leave selector ipsets at once.
    """
    return all(
        (isinstance(u, EndpointUpdate) and u.endpoint is None)
        or (isinstance(u, PolicyInputsUpdate) and not u.others and u.deleted_workloads <= gone)
        or isinstance(u, ChainsUpdate | IpsetsUpdate | HooksUpdate)  # what those inputs compiled to
        for u in updates
    )


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
        self._policy_urgent = False  # this batch has policy input that must be in before commit returns
        self._policy_deferred = False  # endpoint removals not yet written to iptables
        self._policy_failed = False  # the last policy commit failed: routes are not added until one succeeds
        self._gone: set[tuple[str, str]] = set()  # local endpoints removed since the last policy commit
        self.orphans = Orphans(iface_exists)  # local endpoints whose interface is gone (routes withheld)
        self.flush_clock = flush_clock or FlushClock()  # when deferred policy writes go out alone

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
                    if self.endpoints.pop(u.key, None) is not None:
                        self._gone.add(u.key)
                else:
                    self.endpoints[u.key] = u.endpoint
            elif isinstance(u, EncapUpdate | VtepUpdate | WireguardUpdate) and self.encap is not None:
                self.encap.on_update(u)
            elif isinstance(u, InSync):
                self._pending_sweep = True
        if self.policy is not None:
            policy_updates: list[Update] = [u for u in updates if isinstance(u, POLICY_UPDATES)]
            self._policy_urgent = self._policy_urgent or not _only_local_removals(policy_updates, self._gone)
            self._policy_deferred = self._policy_deferred or bool(policy_updates)
            self.policy.on_updates(policy_updates)
        if self.bgp_sink is not None:
            self.bgp_sink(updates)

    def commit(self) -> bool:
        if self._pending_sweep:
            self._pending_sweep = False
            self._sweep_links()
        ok = True
        if self.encap is not None:
            ok = bool(self.encap.apply()) and ok
            if self.encap.ipip_usable is False:
                for dst in self._ipip_routes:  # no tunl0 on this kernel: never ask for them
                    self.routes.remove_route(dst)
        self._revive_orphans()
        if self._started:  # routes that go leave before their endpoints' chains do
            ok = self._write_routes(removals_only=True) and ok
        if self.policy is not None and (self._policy_urgent or not self._policy_deferred):
            ok = self._commit_policy(additive=self._policy_urgent) and ok
        ok = self._write_routes() and ok  # new routes only once the chains they lead to exist
        self.flush_clock.busy()
        return ok

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
        """Endpoint removals (or what an additive commit left) are waiting for a plain policy commit."""
        return self._policy_deferred

    def next_deadline(self) -> float | None:
        """When what earlier batches deferred is due to be written alone (None: nothing deferred)."""
        return self.flush_clock.deadline(self._policy_deferred)

    def commit_deferred(self) -> bool:
        """Write what earlier batches deferred (the writer calls this at :meth:`next_deadline`)."""
        if self.policy is None or not self._policy_deferred:
            return True
        ok = self._commit_policy()
        self.flush_clock.flushed(ok)
        if ok and self._started:
            ok = self._write_routes()  # routes held back by an earlier failed commit
        return ok

    def _commit_policy(self, additive: bool = False) -> bool:
        assert self.policy is not None
        ok = self.policy.commit(additive)
        self._policy_failed = not ok
        self._policy_urgent = False
        # A failed commit is retried with the next batch; an additive one may have left removals.
        self._policy_deferred = not ok or self.policy.deferred
        if not self._policy_deferred:
            self._gone.clear()
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
        repair = getattr(self.links, "repair_sysctls", None)
        if repair is None:
            return
        families: dict[str, set[int]] = {}
        for ep in self.endpoints.values():
            if ep.iface:
                families.setdefault(ep.iface, set()).update(6 if ":" in ip else 4 for ip in ep.ips)
        try:
            repair(families)
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
