"""CNI DEL does not wait for iptables: a local endpoint's removal is deferred to the next batch.

LinuxDataplane over an in-memory netlink and a recording policy driver; the Writer loop over a
scripted calc graph. What must hold: the DEL's own batch still removes the route at once; any
batch with something to isolate (a new endpoint, a policy) commits policy before it returns; the
deferred removal is written with the next batch, or alone once the writer has been idle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from felixpy.calc.updates import (
    EndpointUpdate,
    PolicyInputsUpdate,
    Route,
    RouteUpdate,
    Update,
)
from felixpy.dataplane.deferral import FlushClock
from felixpy.dataplane.linux import LinuxDataplane
from felixpy.dataplane.routes import RouteTable
from felixpy.runtime.writer import ResourceMsg, Writer
from policy.entities import Endpoint
from tests.fixtures.netlink_fake import FakeNetlink

KEY = ("default", "node1-k8s-a-eth0")


class RecordingPolicy:
    def __init__(self) -> None:
        self.seen: list[Update] = []
        self.commits = 0
        self.fail = False
        self.additive: list[bool] = []
        self.left_behind = False  # what an additive commit leaves (PolicyDriver.deferred)

    def on_updates(self, updates: list[Update]) -> None:
        self.seen += updates

    def commit(self, additive: bool = False) -> bool:
        self.commits += 1
        self.additive.append(additive)
        return not self.fail

    @property
    def deferred(self) -> bool:
        return self.left_behind

    def resync(self, what: str) -> None:
        pass

    def post_write_check(self) -> None:
        self.post_write_checks = getattr(self, "post_write_checks", 0) + 1

    def endpoint_programmed(self, iface: str) -> bool:
        return True


class NoLinks:
    def remove_stale(self, wanted: Any) -> list[str]:
        return []


def _dataplane() -> tuple[LinuxDataplane, RecordingPolicy, FakeNetlink]:
    """Started, with endpoint KEY (calia, 10.0.0.1) programmed."""
    nl = FakeNetlink(links=["calia", "calib"])
    policy = RecordingPolicy()
    dp = LinuxDataplane(routes=RouteTable(nl), links=NoLinks(), policy=policy)
    dp.apply([])
    dp.commit()  # the start-up commit
    dp.apply(_added(KEY, "calia", "10.0.0.1"))
    dp.commit()
    policy.commits = 0
    policy.additive = []
    return dp, policy, nl


def _added(key: tuple[str, str], iface: str, ip: str) -> list[Update]:
    ep = Endpoint(f"{key[0]}/{key[1]}", key[0], iface=iface, ips=(ip,))
    return [
        EndpointUpdate(key, ep),
        PolicyInputsUpdate(others=True),
        RouteUpdate(f"{ip}/32", Route(f"{ip}/32", "local", iface=iface)),
    ]


def _removed(key: tuple[str, str], ip: str) -> list[Update]:
    return [
        EndpointUpdate(key, None),
        PolicyInputsUpdate(frozenset({key})),
        RouteUpdate(f"{ip}/32", None),
    ]


def test_local_endpoint_removal_defers_policy_but_not_the_route() -> None:
    dp, policy, nl = _dataplane()
    assert any(r.dst == "10.0.0.1/32" for r in nl.routes.values()) and not dp.deferred
    dp.apply(_removed(KEY, "10.0.0.1"))
    assert dp.commit()
    assert policy.commits == 0 and dp.deferred, "the DEL's batch does not wait for iptables"
    assert not any(r.dst == "10.0.0.1/32" for r in nl.routes.values()), "but its route is gone"
    assert EndpointUpdate(KEY, None) in policy.seen, "the compiler already knows"


def test_the_datastore_echo_of_the_delete_stays_deferred() -> None:
    dp, policy, _ = _dataplane()
    dp.apply(_removed(KEY, "10.0.0.1"))
    dp.commit()
    dp.apply([PolicyInputsUpdate(frozenset({KEY}))])  # the watch reports our own delete
    dp.commit()
    assert policy.commits == 0 and dp.deferred


def test_next_batch_with_a_new_endpoint_writes_both() -> None:
    dp, policy, _ = _dataplane()
    dp.apply(_removed(KEY, "10.0.0.1"))
    dp.commit()
    assert policy.commits == 0 and dp.deferred
    dp.apply(_added(("default", "node1-k8s-b-eth0"), "calib", "10.0.0.2"))
    assert dp.commit()
    assert policy.commits == 1 and not dp.deferred


def test_remote_removal_and_policy_changes_commit_at_once() -> None:
    dp, policy, _ = _dataplane()
    dp.apply([PolicyInputsUpdate(frozenset({("default", "node2-k8s-x-eth0")}))])
    dp.commit()
    assert policy.commits == 1 and not dp.deferred, "a remote address leaves the ipsets at once"
    dp.apply([PolicyInputsUpdate(others=True)])
    dp.commit()
    assert policy.commits == 2 and not dp.deferred


def test_commit_deferred_flushes_and_a_failure_stays_deferred() -> None:
    dp, policy, _ = _dataplane()
    dp.apply(_removed(KEY, "10.0.0.1"))
    dp.commit()
    policy.fail = True
    assert not dp.commit_deferred() and dp.deferred, "retried later"
    policy.fail = False
    assert dp.commit_deferred() and not dp.deferred and policy.commits == 2
    assert dp.commit_deferred() and policy.commits == 2, "nothing left: no write"


class ScriptedGraph:
    """The calc graph's surface the Writer uses; ``flush`` returns what ``on_resource`` queued."""

    def __init__(self, script: dict[str, list[Update]]) -> None:
        self.script = script
        self.pending: list[Update] = []

    def on_resource(self, kind: str, key: tuple[str, str], obj: Any) -> None:
        self.pending += self.script["add" if obj is not None else "del"]

    def on_block(self, cidr: str, node: str | None) -> None:
        pass

    def flush(self) -> list[Update]:
        out, self.pending = self.pending, []
        return out


def test_writer_flushes_deferred_work_once_idle() -> None:
    dp, policy, _ = _dataplane()
    policy.commits = -1  # the ADD below is a repeat: one more commit
    graph = ScriptedGraph({"add": _added(KEY, "calia", "10.0.0.1"), "del": _removed(KEY, "10.0.0.1")})
    dp.flush_clock = FlushClock(idle=0.05)
    writer = Writer(graph, dp)  # type: ignore[arg-type]
    writer.in_sync.set()
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert writer.submit_and_wait([ResourceMsg("WorkloadEndpoint", KEY, object(), 5, local=True)], 5)
        assert policy.commits == 0
        assert writer.submit_and_wait([ResourceMsg("WorkloadEndpoint", KEY, None, 6, local=True)], 5)
        assert policy.commits == 0, "DEL answered before the iptables write"
        deadline = time.monotonic() + 5
        while dp.deferred and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not dp.deferred and policy.commits == 1, "written alone once the writer was idle"
    finally:
        stop.set()
        thread.join(5)


def test_an_add_commits_additively_and_what_it_leaves_stays_deferred() -> None:
    dp, policy, _ = _dataplane()
    dp.apply(_removed(KEY, "10.0.0.1"))
    dp.commit()
    policy.left_behind = True  # the additive commit below leaves the DEL's chains in place
    dp.apply(_added(("default", "node1-k8s-b-eth0"), "calib", "10.0.0.2"))
    assert dp.commit()
    assert policy.additive == [True] and dp.deferred, "the new pod is in; the removal still waits"
    dp.apply([PolicyInputsUpdate(frozenset({KEY}))])  # the datastore's echo of the DEL
    dp.commit()
    assert policy.commits == 1, "still only local removals: no commit"
    policy.left_behind = False
    assert dp.commit_deferred() and not dp.deferred
    assert policy.additive == [True, False], "the flush is a plain (full) commit"


class BusyGraph(ScriptedGraph):
    """Every resource is a new remote endpoint's update: policy input that commits at once."""

    def on_resource(self, kind: str, key: tuple[str, str], obj: Any) -> None:
        self.pending.append(
            PolicyInputsUpdate(others=True) if obj is not None else PolicyInputsUpdate(frozenset({key}))
        )


def test_writer_flushes_deferred_work_within_the_bound_even_when_never_idle() -> None:
    dp, policy, _ = _dataplane()
    policy.left_behind = True  # every additive commit leaves something
    dp.flush_clock = FlushClock(idle=30, max_wait=0.3)
    writer = Writer(BusyGraph({}), dp)  # type: ignore[arg-type]
    writer.in_sync.set()
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        flushed_at = None
        for i in range(200):  # a batch every ~10 ms: the loop is never idle for 30 s
            key = ("default", f"node2-k8s-p{i}-eth0")
            assert writer.submit_and_wait([ResourceMsg("WorkloadEndpoint", key, object(), i + 10)], 5)
            if flushed_at is None and False in policy.additive:
                flushed_at = time.monotonic() - start
                break
            time.sleep(0.01)
        assert flushed_at is not None, "deferred work never flushed while the writer stayed busy"
        # bound 0.3 s; the upper limit leaves room for a loaded machine's scheduling (never-idle would
        # mean never flushed: the 30 s idle deferral)
        assert 0.25 <= flushed_at < 3.0, flushed_at
        assert policy.additive[0] is True
    finally:
        stop.set()
        thread.join(5)
