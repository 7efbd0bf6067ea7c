"""CalicoNodeStatus filled in by the agent's reporter on real etcd, as calico-node does: only the
resources naming this node, only the classes asked for, refreshed every updatePeriodSeconds (0:
once), written again at once when the spec changes, and a concurrent edit never lost.

The BGP side is a real ``bgp.engine.Engine`` (sessions, routes, filters) driven by ExaBGP events,
as in the unit tests; the datastore side is real etcd (watch, compare-and-swap)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bgp import exabgp_api as api
from bgp.route import PathAttrs
from felixpy.datastore.resources import KVBackend
from felixpy.resources.base import ObjectMeta
from felixpy.resources.stored import CalicoNodeStatus, CalicoNodeStatusSpec
from felixpy.runtime.node_status_reporter import NodeStatusReporter
from tests.fixtures import waiting
from tests.unit.test_bgp_peer_options import TOR, make, peer

pytestmark = pytest.mark.timeout(120)


class EngineBGP:
    """What the reporter reads of ``bgp.service.BGPService``, over a real engine."""

    def __init__(self) -> None:
        self.engine, _ = make([peer("tor", peer_ip=TOR, as_number=65001)], [], ["10.65.0.0/26"])
        announce = (api.Announce("10.65.5.0/26", TOR),)
        self.engine.handle(api.Update(TOR, 65001, PathAttrs(as_path=(65001,)), announce), 0)
        self.engine.flush()
        self.running, self.router_id, self.families = True, "10.0.0.1", (4,)
        self.started_at, self.configured_at = 1_700_000_000.0, 1_700_000_100.0

    def status(self) -> list[Any]:
        return self.engine.status()

    def fresh_routes_view(self) -> dict[str, object]:
        return self.engine.routes_view()


def cns(name: str, node: str, classes: list[str], period: int) -> CalicoNodeStatus:
    spec = CalicoNodeStatusSpec.model_validate(
        {"node": node, "classes": classes, "updatePeriodSeconds": period}
    )
    return CalicoNodeStatus(metadata=ObjectMeta(name=name), spec=spec)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    waiting.wait_for(check, what, timeout, every=0.1)


@pytest.fixture
def reporter(etcd_backend: KVBackend) -> Iterator[NodeStatusReporter]:
    r = NodeStatusReporter(etcd_backend, "a", EngineBGP(), tick=0.2).start()
    try:
        yield r
    finally:
        r.stop()


def test_kubernetes_mode_too(kube_api: Any) -> None:
    """The same reporter through the Kubernetes datastore (the stand-in API server, CRD objects)."""
    from felixpy.datastore.kubernetes import KubernetesBackend

    backend = KubernetesBackend.for_url(kube_api.url)
    r = NodeStatusReporter(backend, "a", EngineBGP(), tick=0.2).start()
    try:
        backend.create(cns("mine", "a", ["BGP"], 1))
        wait_for(
            lambda: backend.get(CalicoNodeStatus, "mine").status is not None, "status in Kubernetes mode"
        )  # type: ignore[attr-defined]
        status = backend.get(CalicoNodeStatus, "mine").status  # type: ignore[attr-defined]
        assert status["bgp"]["numberEstablishedV4"] == 2
        assert r.failure() is None
    finally:
        r.stop()


def stored(backend: KVBackend, name: str) -> CalicoNodeStatus:
    obj = backend.get(CalicoNodeStatus, name)
    assert isinstance(obj, CalicoNodeStatus)
    return obj


def test_status_of_this_node_in_calicos_shape(etcd_backend: KVBackend, reporter: NodeStatusReporter) -> None:
    etcd_backend.create(cns("mine", "a", ["Agent", "BGP", "Routes"], 1))
    etcd_backend.create(cns("theirs", "b", ["BGP"], 1))
    wait_for(lambda: stored(etcd_backend, "mine").status is not None, "status of the node's resource")
    status = stored(etcd_backend, "mine").status
    assert status is not None
    assert status["agent"]["birdV4"]["state"] == "Ready"
    assert status["agent"]["birdV4"]["routerID"] == "10.0.0.1"
    assert status["agent"]["birdV4"]["lastBootTime"] == "2023-11-14T22:13:20Z"
    bgp = status["bgp"]
    assert (bgp["numberEstablishedV4"], bgp["numberNotEstablishedV4"]) == (2, 0)
    peers = {p["peerIP"]: p for p in bgp["peersV4"]}
    assert peers[TOR]["type"] == "GlobalPeer" and peers[TOR]["state"] == "Established"
    assert peers["10.0.0.2"]["type"] == "NodeMesh"
    routes = status["routes"]["routesV4"]
    assert {"type": "FIB", "destination": "10.65.5.0/26", "gateway": TOR, "interface": "",
            "learnedFrom": {"sourceType": "BGPPeer", "peerIP": TOR}} in routes  # fmt: skip
    assert any(r["type"] == "RIB" and r["destination"] == "10.65.5.0/26" for r in routes)
    assert {"type": "RIB", "destination": "10.65.0.0/26", "gateway": "", "interface": "",
            "learnedFrom": {"sourceType": "Static"}} in routes  # fmt: skip
    # another node's resource is not ours to fill
    time.sleep(0.5)  # a few reporter ticks: it must still be untouched (bounded, not a settle wait)
    assert stored(etcd_backend, "theirs").status is None


def test_refresh_period_once_and_spec_changes(etcd_backend: KVBackend, reporter: NodeStatusReporter) -> None:
    etcd_backend.create(cns("periodic", "a", ["BGP"], 1))
    etcd_backend.create(cns("once", "a", ["Agent"], 0))
    wait_for(lambda: stored(etcd_backend, "once").status is not None, "the one-off status")
    first = stored(etcd_backend, "periodic").status
    assert first is not None and set(first) == {"lastUpdated", "bgp"}  # only the class asked for
    wait_for(lambda: stored(etcd_backend, "periodic").status != first, "a refresh after updatePeriodSeconds")
    # updatePeriodSeconds 0: written once; later ticks leave it (and its revision) alone
    revision = stored(etcd_backend, "once").metadata.resource_version
    time.sleep(1.5)
    assert stored(etcd_backend, "once").metadata.resource_version == revision
    # a spec change writes at once, with the new classes
    obj = stored(etcd_backend, "once")
    obj.spec.classes = ["Routes"]
    etcd_backend.update(obj)
    wait_for(lambda: "routes" in (stored(etcd_backend, "once").status or {}), "the Routes class written")
    assert "agent" not in (stored(etcd_backend, "once").status or {})


def test_a_concurrent_edit_is_kept(etcd_backend: KVBackend, reporter: NodeStatusReporter) -> None:
    etcd_backend.create(cns("x", "a", ["BGP"], 1))
    wait_for(lambda: stored(etcd_backend, "x").status is not None, "first status")
    obj = stored(etcd_backend, "x")
    obj.metadata.labels = {"team": "net"}
    etcd_backend.update(obj)  # races the reporter's next write: compare-and-swap keeps the label
    wait_for(lambda: stored(etcd_backend, "x").status != obj.status, "a refresh after the edit")
    assert stored(etcd_backend, "x").metadata.labels == {"team": "net"}
    assert reporter.failure() is None


def test_a_cluster_without_the_kind_does_not_stop_the_agent(
    kube_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No caliconodestatuses CRD (an older install): the watch keeps retrying with its backoff and
    the reporter never counts as a failure of the agent (CalicoNodeStatus is not worth its life)."""
    from felixpy.datastore.kubernetes import KubernetesBackend
    from tests.fixtures import kubeapi

    monkeypatch.delitem(kubeapi.RESOURCES, "caliconodestatuses.crd.projectcalico.org")
    r = NodeStatusReporter(KubernetesBackend.for_url(kube_api.url), "a", EngineBGP(), tick=0.1).start()
    try:
        wait_for(lambda: r.syncer.resyncs >= 2, "the watch retried")
        assert r.failure() is None and r.syncer.alive and r.writes == 0
    finally:
        r.stop()
