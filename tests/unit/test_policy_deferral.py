"""The deferral is decided on the writers' side (felixpy.dataplane.deferral.PolicyDeferral): handed
every batch, it writes now what a user waits for and leaves the rest for its deadline.

The real calc graph and policy compiler, the real PolicyDriver and IptablesWriter; iptables and
ipsets in memory. A CNI DEL's batch (and the datastore's echo of it) writes nothing, neither iptables
nor ipset members; a remote endpoint leaving and a policy deleted are removals too, and go at once;
the next ADD goes in insert-only and the DEL's chains stay until the deadline's plain commit.
"""

from __future__ import annotations

from typing import Any

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import EndpointUpdate
from felixpy.dataplane.deferral import FlushClock, PolicyDeferral
from felixpy.dataplane.errors import CommandFailed
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.linux import POLICY_UPDATES
from felixpy.dataplane.policy_driver import PolicyDriver
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from tests.unit.test_calc import ME, pool, wep
from tests.unit.test_calc_policy import DB1, DB_POLICY, REMOTE_WEB, WEB1
from tests.unit.test_policy_driver_additive import Ipsets, Kernel


class Tables(Kernel):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def write(self, table: str, ops: Any) -> None:
        if self.fail:
            raise CommandFailed(["fake-restore"], 1, "refused (test)")
        super().write(table, ops)


class CountingIpsets(Ipsets):
    """Counts the ipset writes that change something (a real ``ipset restore`` with lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[str, frozenset[str]] = {}
        self.writes = 0

    def apply_updates(self) -> list[str]:
        new = {name: frozenset(s.members) for name, s in self.desired.items()}
        self.writes += new != self.members
        self.members = new
        return super().apply_updates()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    """calc → the deferral → the driver, as the dataplane runs one batch (it hands over POLICY_UPDATES)."""

    def __init__(self) -> None:
        self.kernel, self.ipsets, self.clock = Tables(), CountingIpsets(), Clock()
        self.graph = CalcGraph(ME, policy=PolicyCalc([PolicyCompiler(ME, config=ChainConfig(version=4))]))
        driver = PolicyDriver(4, IptablesWriter(self.kernel), self.ipsets)  # type: ignore[arg-type]
        self.deferral = PolicyDeferral(driver, FlushClock(idle=0.25, max_wait=1.0, clock=self.clock))
        assert self.batch((pool("10.0.0.0/16"), True), (WEB1, True), (DB1, True), (DB_POLICY, True))
        assert not self.deferral.deferred and self.ipsets.members
        self.kernel.writes.clear()
        self.ipsets.writes = 0

    def batch(self, *changes: tuple[Any, bool]) -> bool:
        for obj, present in changes:
            key = (obj.metadata.namespace or "", obj.name)
            self.graph.on_resource(obj.KIND, key, obj if present else None)
        self.deferral.on_updates([u for u in self.graph.flush() if isinstance(u, POLICY_UPDATES)])
        return self.deferral.commit()

    def chains(self) -> set[str]:
        return set(self.kernel.tables["filter"])


def test_a_local_del_writes_nothing_and_its_echo_neither() -> None:
    node = Node()
    assert node.batch((WEB1, False))  # web1 is in the db policy's source set
    assert node.kernel.writes == [] and node.ipsets.writes == 0, "no iptables-restore, no ipset restore"
    assert node.deferral.deferred and node.deferral.next_deadline() == 100.25
    node.deferral.on_updates([EndpointUpdate(("default", "web1"), None)])  # as the dataplane relays it
    assert node.deferral.commit() and node.kernel.writes == [] and node.ipsets.writes == 0
    node.clock.now = 100.3
    assert node.deferral.next_deadline() == 100.25 and node.deferral.commit_deferred()
    assert node.ipsets.writes == 1 and node.kernel.writes, "the deadline's plain commit writes it all"
    assert "cali-tw-caliweb1" not in node.chains() and not node.deferral.deferred
    assert node.deferral.next_deadline() is None


def test_a_remote_endpoint_leaving_and_a_deleted_policy_go_at_once() -> None:
    node = Node()
    assert node.batch((REMOTE_WEB, True)) and node.ipsets.writes == 1
    assert node.batch((REMOTE_WEB, False)) and node.ipsets.writes == 2, "a remote address leaves at once"
    assert not node.deferral.deferred
    assert node.batch((DB_POLICY, False))
    assert node.kernel.writes, "a deleted policy is a removal too: written before the commit returns"


def test_an_add_after_a_del_is_insert_only_and_the_del_waits_for_the_deadline() -> None:
    node = Node()
    assert node.batch((WEB1, False))
    assert node.batch((wep("web2", "10.0.0.13"), True))
    ops = [o for _, ops in node.kernel.writes for o in ops]
    assert ops and {o.kind for o in ops} <= {"chain", "insert", "append"}, "insert-only"
    assert {"cali-tw-caliweb1", "cali-tw-caliweb2"} <= node.chains() and node.deferral.deferred
    node.clock.now += 5
    assert node.deferral.commit_deferred() and not node.deferral.deferred
    assert "cali-tw-caliweb1" not in node.chains() and "cali-tw-caliweb2" in node.chains()


def test_a_failed_write_is_retried_at_the_deadline_and_reported_until_then() -> None:
    node = Node()
    node.kernel.fail = True
    assert not node.batch((wep("web3", "10.0.0.14"), True))
    assert node.deferral.failed and node.deferral.deferred
    assert not node.batch((DB1, False)), "a batch that waits still says the last write failed"
    node.kernel.fail = False
    node.clock.now += 5
    assert node.deferral.commit_deferred() and not node.deferral.failed and not node.deferral.deferred
    assert "cali-tw-caliweb3" in node.chains() and "cali-tw-calidb1" not in node.chains()
