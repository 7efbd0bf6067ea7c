"""The dataplane commits in Felix's order: ipsets, then iptables, then routes; removals the other way.

The real calc graph (with the real policy compiler), the real LinuxDataplane, PolicyDriver,
IptablesWriter and RouteTable; only the kernel is in memory (iptables tables, ipsets, routes), and
every write is recorded in one shared log. What a user relies on: a new pod's route appears only
once its ``cali-tw/fw`` chains are in (the first packet never meets a pod without policy); a gone
pod's route leaves before its chains; an ipset nothing uses any more goes last; and while iptables
fails, no new route goes in at all.
"""

from __future__ import annotations

from typing import Any

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.dataplane.errors import CommandFailed
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.linux import LinuxDataplane
from felixpy.dataplane.netlink_ops import KernelRoute
from felixpy.dataplane.policy_driver import PolicyDriver
from felixpy.dataplane.routes import RouteTable
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from tests.fixtures.netlink_fake import FakeNetlink
from tests.unit.test_calc import ME, pool, wep
from tests.unit.test_calc_policy import gnp
from tests.unit.test_policy_driver_additive import Ipsets, Kernel

WEB1 = wep("web1", "10.0.0.11")
DB1 = wep("db1", "10.0.0.12")
POOL = pool("10.0.0.0/16")
DB_POLICY = gnp("db", "app == 'db1'", "app == 'web1'")


class Log:
    def __init__(self) -> None:
        self.ops: list[str] = []

    def index(self, prefix: str) -> int:
        return next(i for i, op in enumerate(self.ops) if op.startswith(prefix))


class RecordingKernel(Kernel):
    """iptables tables in memory; at each write, notes which routes the route table already had."""

    def __init__(self, log: Log, nl: FakeNetlink) -> None:
        super().__init__()
        self.log, self.nl = log, nl
        self.fail = False
        self.routes_at_write: list[set[str]] = []

    def write(self, table: str, ops: Any) -> None:
        if self.fail:
            raise CommandFailed(["fake-restore"], 1, "refused (test)")
        self.routes_at_write.append({r.dst for r in self.nl.routes.values()})
        super().write(table, ops)
        self.log.ops.append(f"iptables {table}")

    def chains(self) -> set[str]:
        return set(self.tables.get("filter", {}))


class RecordingIpsets(Ipsets):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def apply_updates(self) -> list[str]:
        out = super().apply_updates()
        self.log.ops.append("ipsets update")
        return out

    def apply_deletions(self) -> list[str]:
        gone = super().apply_deletions()
        if gone:
            self.log.ops.append("ipsets destroy " + " ".join(gone))
        return gone


class RecordingNetlink(FakeNetlink):
    """Routes in memory; each one written notes which filter chains existed at that moment."""

    def __init__(self, log: Log, links: list[str]) -> None:
        super().__init__(links)
        self.log = log
        self.kernel: RecordingKernel | None = None
        self.chains_at_add: dict[str, set[str]] = {}

    def replace_route(self, route: KernelRoute) -> None:
        super().replace_route(route)
        self.log.ops.append(f"route add {route.dst}")
        assert self.kernel is not None
        self.chains_at_add[route.dst] = self.kernel.chains()

    def del_route(self, route: KernelRoute) -> None:
        super().del_route(route)
        self.log.ops.append(f"route del {route.dst}")


class Node:
    """calc → dataplane, as the writer loop runs one batch."""

    def __init__(self) -> None:
        self.log = Log()
        self.nl = RecordingNetlink(self.log, ["caliweb1", "calidb1"])
        self.kernel = RecordingKernel(self.log, self.nl)
        self.nl.kernel = self.kernel
        self.ipsets = RecordingIpsets(self.log)
        compiler = PolicyCompiler(ME, config=ChainConfig(version=4))
        self.graph = CalcGraph(ME, policy=PolicyCalc([compiler]))
        driver = PolicyDriver(4, IptablesWriter(self.kernel), self.ipsets)  # type: ignore[arg-type]
        self.dp = LinuxDataplane(routes=RouteTable(self.nl), links=_NoLinks(), policy=driver)

    def batch(self, *changes: tuple[Any, bool]) -> bool:
        """Each change: (resource, present); one flush, one commit."""
        for obj, present in changes:
            key = (obj.metadata.namespace or "", obj.name)
            self.graph.on_resource(obj.KIND, key, obj if present else None)
        self.dp.apply(self.graph.flush())
        self.log.ops.clear()
        return self.dp.commit()


class _NoLinks:
    def remove_stale(self, wanted: object) -> list[str]:
        return []

    def repair_sysctls(self, endpoints: object) -> int:
        return 0


def _started() -> Node:
    node = Node()
    assert node.batch((POOL, True), (DB1, True), (DB_POLICY, True))
    return node


def test_a_new_pods_route_goes_in_after_its_ipsets_and_chains() -> None:
    node = _started()
    assert node.batch((WEB1, True))
    ops = node.log
    route = ops.index("route add 10.0.0.11/32")
    assert ops.index("ipsets update") < ops.index("iptables filter") < route, ops.ops
    # sampled at the moments of writing: no iptables write saw the route; the route saw both chains
    assert all("10.0.0.11/32" not in seen for seen in node.kernel.routes_at_write)
    assert {"cali-tw-caliweb1", "cali-fw-caliweb1"} <= node.nl.chains_at_add["10.0.0.11/32"]
    assert node.ipsets.kernel, "the db policy's source set exists"


def test_removals_go_routes_first_then_chains_then_ipsets() -> None:
    node = _started()
    assert node.batch((WEB1, True))
    # the pod and the only policy that uses the web set go in one batch (policy changed: no deferral)
    assert node.batch((WEB1, False), (DB_POLICY, False))
    ops = node.log
    destroy = ops.index("ipsets destroy")
    assert ops.index("route del 10.0.0.11/32") < ops.index("iptables filter") < destroy, ops.ops
    assert "cali-tw-caliweb1" not in node.kernel.chains()


def test_a_deferred_del_removes_the_route_at_once_and_the_chains_later() -> None:
    node = _started()
    assert node.batch((WEB1, True))
    assert node.batch((WEB1, False))  # only a local endpoint going: its chains may wait
    assert node.log.ops == ["route del 10.0.0.11/32"]
    assert "cali-tw-caliweb1" in node.kernel.chains()
    assert node.dp.commit_deferred()
    assert node.log.ops[-1].startswith("iptables") and "cali-tw-caliweb1" not in node.kernel.chains()


def test_no_route_is_added_while_iptables_fails_and_it_follows_the_chains() -> None:
    node = _started()
    node.kernel.fail = True
    assert not node.batch((WEB1, True))
    assert "10.0.0.11/32" not in {r.dst for r in node.nl.routes.values()}
    assert not node.dp.commit_deferred()  # still failing: still no route
    assert "10.0.0.11/32" not in {r.dst for r in node.nl.routes.values()}
    node.kernel.fail = False
    node.log.ops.clear()
    assert node.dp.commit_deferred()
    ops = node.log
    assert ops.index("iptables filter") < ops.index("route add 10.0.0.11/32"), ops.ops
    assert {"cali-tw-caliweb1", "cali-fw-caliweb1"} <= node.nl.chains_at_add["10.0.0.11/32"]

