"""Start-up calc cost (issue 15 goal 2) without a change of behaviour: the writer keeps the cyclic
garbage collector off while it builds the snapshot's state and back on (with that state frozen) once
it is programmed; label pairs already checked are remembered, bad ones still refused every time;
the policy compiler skips the local-endpoint bookkeeping of other nodes' endpoints."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.datastore.resources import LazyResourceEvent, encode
from felixpy.resources import WorkloadEndpoint, name_rules
from felixpy.resources.fields import FieldError
from felixpy.runtime.writer import InSyncMsg, NullDataplane, ResourceMsg, Writer
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_wep


class Seen(NullDataplane):
    """A dataplane noting whether the collector was on at each commit."""

    def __init__(self) -> None:
        self.gc_on_at_commit: list[bool] = []
        self.gc_on_at_apply: list[bool] = []

    def apply(self, updates: list[Any]) -> None:
        self.gc_on_at_apply.append(gc.isenabled())

    def commit(self) -> bool:
        self.gc_on_at_commit.append(gc.isenabled())
        return True


def _wep(i: int, node: str = "n1") -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": f"ep{i}", "namespace": "ns", "labels": {"app": f"a{i % 3}"}},
            "spec": {"node": node, "pod": f"p{i}", "endpoint": "eth0", "interfaceName": f"cali{i:05d}",
                     "ipNetworks": [f"10.0.{i // 250}.{i % 250 + 1}/32"]},
        }
    )  # fmt: skip


def _msg(i: int, node: str = "n1") -> ResourceMsg:
    _, value = encode(_wep(i, node))
    ev = LazyResourceEvent("put", WorkloadEndpoint, f"ep{i}", "ns", value, 10 + i)
    return ResourceMsg("WorkloadEndpoint", ("ns", f"ep{i}"), None, 10 + i, event=ev)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_collector_off_for_the_snapshot_and_back_on_with_the_state_frozen(collector_on: None) -> None:
    dp = Seen()
    writer = Writer(CalcGraph("n1"), dp, hold_gc=True)  # type: ignore[arg-type]
    gc.unfreeze()
    writer._process([_msg(i) for i in range(50)])
    assert not gc.isenabled(), "the snapshot is built with the collector off"
    writer._process([_msg(i) for i in range(50, 60)] + [InSyncMsg()])
    assert dp.gc_on_at_commit == [False], "the first commit (the snapshot's programming) still without it"
    assert gc.isenabled(), "on again once the snapshot is programmed"
    assert gc.get_freeze_count() > 0, "what the start-up built is frozen out of the collector's scans"
    assert writer.graph.state().endpoints.keys() == {("ns", f"ep{i}") for i in range(60)}
    writer._process([_msg(60)])
    assert gc.isenabled() and dp.gc_on_at_commit == [False, True], "never off again after in-sync"


def test_only_a_writer_asked_to_holds_the_collector(collector_on: None) -> None:
    writer = Writer(CalcGraph("n1"), Seen())  # type: ignore[arg-type]
    writer._process([_msg(1)])
    assert gc.isenabled(), "a writer never brought in sync (a test's) leaves the collector alone"


def test_a_collector_someone_else_turned_off_is_left_off(collector_on: None) -> None:
    gc.disable()
    writer = Writer(CalcGraph("n1"), Seen(), hold_gc=True)  # type: ignore[arg-type]
    writer._process([_msg(1), InSyncMsg()])
    assert not gc.isenabled()


def test_collector_back_on_when_the_loop_ends_before_in_sync(collector_on: None) -> None:
    import threading

    writer = Writer(CalcGraph("n1"), Seen(), hold_gc=True)  # type: ignore[arg-type]
    stop = threading.Event()
    writer.submit(_msg(1))
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    for _ in range(500):  # bounded: up to 5 s for the message to be taken
        if writer.stats.updates_processed["WorkloadEndpoint"]:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and gc.isenabled()


def test_remembered_label_pairs_still_refuse_bad_ones_every_time() -> None:
    good = {"app": "web", "example.com/tier": "front"}
    assert name_rules.check_labels(good) == good
    assert name_rules.check_labels(good) == good  # (from the remembered pairs)
    for _ in range(2):
        with pytest.raises(FieldError) as exc:
            name_rules.check_labels({"app": "web", "bad key!": "x"})
        assert exc.value.field == "bad key!"
        with pytest.raises(FieldError) as exc:
            name_rules.check_labels({"app": "-web-"})
        assert exc.value.field == "app"
    with pytest.raises(ValueError, match="bad key"):
        WorkloadEndpoint.model_validate(
            {"metadata": {"name": "x", "namespace": "ns", "labels": {"bad key!": "v"}},
             "spec": {"node": "n1", "pod": "p", "endpoint": "eth0", "interfaceName": "cali1"}}
        )  # fmt: skip


def test_remembered_label_pairs_are_bounded() -> None:
    for i in range(name_rules.VALID_LABELS_MAX + 10):
        name_rules.check_labels({"k": f"v{i}"})
    assert len(name_rules._VALID_LABELS) <= name_rules.VALID_LABELS_MAX


def test_remote_endpoints_moving_to_this_node_and_back_get_and_lose_their_chains() -> None:
    """The compiler's shortcut for other nodes' endpoints: one that moves here gets its chains, one
    that leaves loses them, and one that was never here changes nothing local."""
    c = PolicyCompiler("n1")
    c.dirty()
    c.update_endpoint(endpoint_from_wep(_wep(1, node="n2")))
    assert not [k for k in c.dirty().chains if "cali00001" in k[1]]
    c.update_endpoint(endpoint_from_wep(_wep(1, node="n1")))
    added = c.dirty()
    assert {("filter", "cali-tw-cali00001"), ("filter", "cali-fw-cali00001")} <= added.chains.keys()
    c.update_endpoint(endpoint_from_wep(_wep(1, node="n2")))
    removed = c.dirty()
    assert {("filter", "cali-tw-cali00001"), ("filter", "cali-fw-cali00001")} <= removed.removed_chains
    c.remove_endpoint("ns/ep1")
    assert not c.dirty()


def test_remembered_namespaces_still_refuse_bad_ones_every_time() -> None:
    spec = {"node": "n1", "pod": "p", "endpoint": "eth0", "interfaceName": "cali1"}
    for _ in range(2):
        ok = WorkloadEndpoint.model_validate({"metadata": {"name": "x", "namespace": "ns-a"}, "spec": spec})
        assert ok.namespace == "ns-a"
        with pytest.raises(ValueError, match="namespace 'Bad_NS' is not a valid DNS-1123 label"):
            WorkloadEndpoint.model_validate({"metadata": {"name": "x", "namespace": "Bad_NS"}, "spec": spec})
