"""Felix's commit order on the real kernel: a new pod's route is never there while its chains are not.

The real calc graph and policy compiler, LinuxDataplane, PolicyDriver, iptables (legacy) and ipset
writers and RouteTable, inside a throwaway namespace. The iptables writer is deliberately slowed: each
write to the filter table is held until a sampler thread, which reads the namespace's routes and
filter table over and over, has taken two samples, so the kernel is sampled while the commit is
half done. Adding: every sample that saw the pod's route saw both its chains (the route is read
first, so a later chain read can only see more chains). Removing: every sample that saw the route
also saw the chains (read the other way round, chains first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.dataplane.ipset_writer import IpsetWriter
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_backend import make_backend, tool
from felixpy.dataplane.linux import LinuxDataplane
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.policy_driver import PolicyDriver
from felixpy.dataplane.routes import RouteTable
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from tests.fixtures.netns import Netns
from tests.unit.test_calc import ME, pool, wep
from tests.unit.test_calc_policy import gnp

pytestmark = pytest.mark.kernel

WEB1 = wep("web1", "10.0.0.11")
DB1 = wep("db1", "10.0.0.12")
POOL = pool("10.0.0.0/16")
DB_POLICY = gnp("db", "app == 'db1'", "app == 'web1'")
CHAINS = (":cali-tw-caliweb1 ", ":cali-fw-caliweb1 ")
HOLD_SECONDS = 20.0  # the longest a write waits for its samples (then it goes on: the test fails)


class Sampler:
    """Reads the route of web1 and its filter chains in a loop, in the order ``route_first`` says."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.samples: list[tuple[bool, bool]] = []  # (route present, both chains present)
        self.route_first = True
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _route(self) -> bool:
        return "10.0.0.11 " in self.ns.run("ip", "route", "show", "proto", "80")

    def _chains(self) -> bool:
        saved = self.ns.run(tool("legacy", "save"), "-t", "filter")
        return all(c in saved for c in CHAINS)

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # bounded even if the test never stops it
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.route_first:
                route = self._route()
                chains = self._chains()
            else:
                chains = self._chains()
                route = self._route()
            with self._cond:
                self.samples.append((route, chains))
                self._cond.notify_all()

    def wait_for_more(self, n: int, timeout: float) -> bool:
        with self._cond:
            target = len(self.samples) + n
            return self._cond.wait_for(lambda: len(self.samples) >= target, timeout)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class SlowBackend:
    """The real iptables backend, each filter-table write held until the sampler saw the kernel twice."""

    def __init__(self, backend: Any, sampler: Sampler) -> None:
        self.backend, self.sampler = backend, sampler
        self.slow = False
        self.held: list[bool] = []  # per slowed write: whether the samples came in time

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def write(self, table: str, ops: Any) -> None:
        if self.slow and table == "filter":
            self.held.append(self.sampler.wait_for_more(2, HOLD_SECONDS))
        self.backend.write(table, ops)


class _NoLinks:
    def remove_stale(self, wanted: object) -> list[str]:
        return []

    def repair_sysctls(self, endpoints: object) -> int:
        return 0


@pytest.fixture
def plane(netns: Any) -> Iterator[tuple[Netns, CalcGraph, LinuxDataplane, SlowBackend, Sampler]]:
    ns = netns("order")
    for iface in ("caliweb1", "calidb1"):  # the pods' host sides (the peers stay in the namespace)
        ns.run("ip", "link", "add", iface, "type", "veth", "peer", "name", "p" + iface)
        ns.run("ip", "link", "set", iface, "up")
    sampler = Sampler(ns)
    backend = SlowBackend(make_backend("legacy", netns=ns.name), sampler)
    graph = CalcGraph(ME, policy=PolicyCalc([PolicyCompiler(ME, config=ChainConfig(version=4))]))
    with IPRouteNetlink(ns.name) as nl:
        driver = PolicyDriver(4, IptablesWriter(backend), IpsetWriter(netns=ns.name))  # type: ignore[arg-type]
        dp = LinuxDataplane(routes=RouteTable(nl), links=_NoLinks(), policy=driver)
        yield ns, graph, dp, backend, sampler
        close = getattr(backend.backend, "close", None)
        if close is not None:
            close()


def _batch(graph: CalcGraph, dp: LinuxDataplane, *changes: tuple[Any, bool]) -> bool:
    for obj, present in changes:
        graph.on_resource(obj.KIND, (obj.metadata.namespace or "", obj.name), obj if present else None)
    dp.apply(graph.flush())
    return dp.commit()


def test_a_new_pods_route_never_precedes_its_chains_and_leaves_before_them(plane: Any) -> None:
    ns, graph, dp, backend, sampler = plane
    assert _batch(graph, dp, (POOL, True), (DB1, True), (DB_POLICY, True))
    with sampler:
        assert sampler.wait_for_more(1, HOLD_SECONDS), "the sampler reads the namespace"
        backend.slow = True
        # adding web1: route read first, then chains
        start = len(sampler.samples)
        assert _batch(graph, dp, (WEB1, True))
        assert backend.held and all(backend.held), "the slowed write was sampled while it was held"
        assert sampler.wait_for_more(2, HOLD_SECONDS)  # the last one wholly after the commit
        adding = sampler.samples[start:]
        assert [s for s in adding if s[0] and not s[1]] == [], "route of web1 seen without its chains"
        assert adding[-1] == (True, True), "after the commit: route and chains"
        assert any(s == (False, False) for s in adding), "sampled before the chains were in"
        # removing web1 and the policy: chains read first, then the route
        sampler.route_first = False
        assert sampler.wait_for_more(2, HOLD_SECONDS)  # the sample under way may still read route first
        start, held = len(sampler.samples), len(backend.held)
        assert _batch(graph, dp, (WEB1, False), (DB_POLICY, False))
        if dp.deferred:  # what the additive commit left goes with a plain one
            assert dp.commit_deferred()
        assert len(backend.held) > held and all(backend.held)
        assert sampler.wait_for_more(2, HOLD_SECONDS)
        removing = sampler.samples[start:]
        assert [s for s in removing if s[0] and not s[1]] == [], "route of web1 seen after its chains left"
        assert removing[-1] == (False, False), "after the commit: neither"
    assert "10.0.0.12 " in ns.run("ip", "route", "show", "proto", "80"), "db1's route stays"
