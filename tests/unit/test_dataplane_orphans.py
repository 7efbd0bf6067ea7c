"""Orphaned endpoints (interface gone, endpoint still in the datastore) don't fail the commit that
readiness looks at, are logged once, keep their routes out of the retry loop, and are given back
when the endpoint is deleted (the runtime's DEL) or the interface returns.

LinuxDataplane over the in-memory netlink (a link missing there is a missing interface)."""

from __future__ import annotations

from structlog.testing import capture_logs

from felixpy.calc.updates import EndpointUpdate, Route, RouteUpdate, Update
from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.linux import LinuxDataplane
from felixpy.dataplane.netlink_ops import KernelRoute
from felixpy.dataplane.routes import RouteTable
from policy.entities import Endpoint
from tests.fixtures.netlink_fake import FakeNetlink

GONE = ("default", "node1-k8s-gone-eth0")
LIVE = ("default", "node1-k8s-live-eth0")


class NoLinks:
    def remove_stale(self, wanted: object) -> list[str]:
        return []

    def repair_sysctls(self, endpoints: object) -> int:
        return 0


def _added(key: tuple[str, str], iface: str, *ips: str) -> list[Update]:
    addresses = tuple(ip.split("/")[0] for ip in ips)
    ep = Endpoint(f"{key[0]}/{key[1]}", key[0], iface=iface, ips=addresses, container_id="c-" + key[1])
    updates: list[Update] = [EndpointUpdate(key, ep)]
    updates += [RouteUpdate(ip, Route(ip, "local", iface=iface)) for ip in ips]
    return updates


def _removed(key: tuple[str, str], *ips: str) -> list[Update]:
    return [EndpointUpdate(key, None), *(RouteUpdate(ip, None) for ip in ips)]


def _dataplane(nl: FakeNetlink) -> LinuxDataplane:
    return LinuxDataplane(routes=RouteTable(nl), links=NoLinks(), iface_exists=lambda name: name in nl.links)


def _events(logs: list[dict], event: str) -> list[dict]:
    return [e for e in logs if e["event"] == event]


def test_orphan_at_start_up_does_not_fail_the_commit_and_is_logged_once() -> None:
    nl = FakeNetlink(links=["calilive"])
    dp = _dataplane(nl)
    with capture_logs() as logs:
        dp.apply(
            _added(LIVE, "calilive", "10.0.0.1/32") + _added(GONE, "caligone", "10.0.0.2/32", "fd00::2/128")
        )
        assert dp.commit() is True, "an orphan's route must not make the commit (readiness) fail"
        for _ in range(5):  # later batches and periodic refreshes: no retry, no new log line
            dp.apply([])
            assert dp.commit() is True
            dp.resync("routes")
    assert GONE in dp.orphans and len(dp.orphans) == 1
    assert [r.dst for r in nl.list_routes()] == ["10.0.0.1/32"]
    assert len(_events(logs, "route.deferred")) == 2  # its two routes, tried once each
    (orphaned,) = _events(logs, "endpoint.orphaned")
    assert orphaned["endpoint"] == "default/node1-k8s-gone-eth0" and orphaned["iface"] == "caligone"
    assert orphaned["addresses"] == ["10.0.0.2/32", "fd00::2/128"] and orphaned["log_level"] == "warning"
    (report,) = dp.orphans.report()
    assert report["interface"] == "caligone" and report["containerID"] == "c-node1-k8s-gone-eth0"


def test_the_del_clears_the_orphan_and_its_routes() -> None:
    nl = FakeNetlink(links=[])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    dp.commit()
    assert GONE in dp.orphans
    with capture_logs() as logs:
        dp.apply(_removed(GONE, "10.0.0.2/32"))
        assert dp.commit() is True
    assert len(dp.orphans) == 0 and "10.0.0.2/32" not in dp.routes.desired
    (cleared,) = _events(logs, "endpoint.orphan_cleared")
    assert cleared["reason"] == "endpoint deleted"
    nl.add_link("caligone")  # even if the name comes back, nothing of the old endpoint returns
    dp.resync("routes")
    assert nl.list_routes() == []


def test_route_removal_before_the_endpoints_in_the_same_batch() -> None:
    nl = FakeNetlink(links=[])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    dp.commit()
    dp.apply([RouteUpdate("10.0.0.2/32", None), EndpointUpdate(GONE, None)])
    assert dp.commit() is True and len(dp.orphans) == 0 and dp.routes.desired == {}


def test_interface_back_restores_the_route_on_the_next_refresh() -> None:
    nl = FakeNetlink(links=[])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    dp.commit()
    nl.add_link("caligone")
    with capture_logs() as logs:
        dp.resync("routes")
    assert len(dp.orphans) == 0
    assert [(r.dst, r.target.dev) for r in nl.list_routes()] == [("10.0.0.2/32", "caligone")]
    assert _events(logs, "endpoint.orphan_cleared")[0]["reason"] == "its interface exists again"


def test_interface_vanishing_later_is_found_by_the_refresh() -> None:
    nl = FakeNetlink(links=["caligone"])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    assert dp.commit() is True and len(dp.orphans) == 0
    nl.remove_link("caligone")  # the runtime deleted the pod's namespace: the veth and route go
    dp.resync("routes")
    assert GONE in dp.orphans
    dp.apply([])
    assert dp.commit() is True


def test_an_endpoint_update_gives_the_routes_back_to_the_table() -> None:
    """The pod re-created with the same name (new container, same interface name): its routes are
    tried again at once."""
    nl = FakeNetlink(links=[])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    dp.commit()
    nl.add_link("caligone")
    dp.apply([*_added(GONE, "caligone", "10.0.0.3/32"), RouteUpdate("10.0.0.2/32", None)])
    assert dp.commit() is True and len(dp.orphans) == 0
    assert [r.dst for r in nl.list_routes()] == ["10.0.0.3/32"]


class FailingNetlink(FakeNetlink):
    def replace_route(self, route: KernelRoute) -> None:
        raise DataplaneError(f"refused {route.dst}")


def test_other_route_failures_still_fail_the_commit() -> None:
    nl = FailingNetlink(links=["calilive"])
    dp = _dataplane(nl)
    dp.apply(_added(LIVE, "calilive", "10.0.0.1/32"))
    assert dp.commit() is False, "a route that fails with its interface present is a real failure"
    assert len(dp.orphans) == 0


def test_interface_back_restores_the_route_with_the_next_commit() -> None:
    """A re-ADD that recreates the interface with an identical endpoint (calc emits nothing new) still
    gets its route with the commit the ADD waits for, not only at the next refresh."""
    nl = FakeNetlink(links=[])
    dp = _dataplane(nl)
    dp.apply(_added(GONE, "caligone", "10.0.0.2/32"))
    dp.commit()
    nl.add_link("caligone")
    dp.apply([])
    assert dp.commit() is True and len(dp.orphans) == 0
    assert [r.dst for r in nl.list_routes()] == ["10.0.0.2/32"]
