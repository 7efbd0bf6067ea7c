"""RouteTable diff logic against the in-memory netlink fake."""

from __future__ import annotations

import pytest

from felixpy.dataplane.iface_names import veth_name_for_container, veth_name_for_workload
from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.netlink_ops import KernelRoute
from felixpy.dataplane.routes import RouteTable, plan_routes
from tests.fixtures.netlink_fake import FakeNetlink


def test_calico_veth_name():
    assert veth_name_for_workload("default", "nginx") == "calic440f455693"
    assert veth_name_for_workload("default", "nginx", prefix="tap") == "tapc440f455693"
    assert veth_name_for_container("0123456789abcdef") == "cali0123456789a"


def test_plan_replaces_missing_and_changed_deletes_unwanted_and_duplicates():
    actual = [
        KernelRoute("10.0.0.1/32", RouteTarget.device("caliA"), 80),
        KernelRoute("10.0.0.2/32", RouteTarget.device("caliOld"), 80),
        KernelRoute("10.0.0.3/32", RouteTarget.device("caliC"), 80),
        KernelRoute("10.0.0.1/32", RouteTarget.device("caliA"), 80, metric=5),
    ]
    desired = {
        "10.0.0.1/32": RouteTarget.device("caliA"),
        "10.0.0.2/32": RouteTarget.device("caliB"),
        "10.1.0.0/26": RouteTarget.blackhole(),
    }
    plan = plan_routes(desired, actual)
    assert [(d, str(t), r) for d, t, r, _ in plan.replace] == [
        ("10.0.0.2/32", "dev caliB", "was dev caliOld"),
        ("10.1.0.0/26", "blackhole", "missing"),
    ]
    assert [(r.dst, r.metric) for r in plan.delete] == [("10.0.0.3/32", None), ("10.0.0.1/32", 5)]
    assert plan_routes(desired, [KernelRoute(d, t, 80) for d, t in desired.items()]).empty


def test_apply_writes_only_difference_and_is_noop_when_clean():
    nl = FakeNetlink(links=["caliA", "caliB"])
    table = RouteTable(nl)
    table.set_desired({"10.0.0.1": RouteTarget.device("caliA"), "fd00::1": RouteTarget.device("caliB")})
    assert table.apply().replaced == 2
    assert set(table.desired) == {"10.0.0.1/32", "fd00::1/128"}
    nl.calls.clear()
    assert table.apply().replaced == 0 and nl.calls == []
    table.set_route("10.0.0.5/32", RouteTarget.device("caliB"))
    table.apply()
    assert nl.calls == [("replace", "10.0.0.5/32")]


def test_resync_repairs_drift_and_keeps_other_protocols():
    nl = FakeNetlink(links=["caliA"])
    nl.replace_route(KernelRoute("10.9.0.0/24", RouteTarget.via("192.168.0.1", "caliA"), 81))
    table = RouteTable(nl, proto=80)
    table.set_desired({"10.0.0.1/32": RouteTarget.device("caliA")})
    table.start()
    nl.routes.clear()  # drift: everything gone by hand
    nl.replace_route(KernelRoute("10.0.0.7/32", RouteTarget.device("caliA"), 80))  # foreign write of ours
    stats = table.resync()
    assert (stats.replaced, stats.deleted) == (1, 1)
    assert {r.dst for r in nl.list_routes(proto=80)} == {"10.0.0.1/32"}


def test_missing_interface_defers_and_stays_dirty():
    nl = FakeNetlink()
    table = RouteTable(nl)
    table.set_desired({"10.0.0.1/32": RouteTarget.device("caliA")})
    assert table.apply().failed == ["10.0.0.1/32"]
    nl.add_link("caliA")
    assert table.apply().replaced == 1


def test_invalid_targets_rejected():
    table = RouteTable(FakeNetlink())
    with pytest.raises(ValueError):
        table.set_route("10.0.0.1/32", RouteTarget("dev"))
    with pytest.raises(ValueError):
        table.set_route("10.0.0.1/32", RouteTarget("via", dev="x"))
