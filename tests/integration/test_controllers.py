"""`felixpy controllers` against the stand-in Kubernetes API server (pods, nodes, the Lease) and a real
etcd (IPAM, WorkloadEndpoints, Calico Nodes, KubeControllersConfiguration) — etcd mode.

Grace period 2 s, a pass every second, Lease 3 s; every wait polls with a bound.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.controllers import cluster
from felixpy.controllers.runner import Controllers, ElectionSettings
from felixpy.ctl.ipam_cmd import _check
from felixpy.datastore.errors import NotFound
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.kube import convert
from felixpy.resources.bgp import BGPConfiguration, BGPPeer
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from felixpy.resources.node import Node
from ipam.ipam import IPAM
from ipam.tunnel import tunnel_address
from tests.fixtures import kubeapi
from tests.integration.ipam_helpers import assert_consistent, make_node, make_pool

# The stand-in serves the kinds its resource table names; the Lease is ours to add.
kubeapi.RESOURCES.setdefault("leases.coordination.k8s.io", ("coordination.k8s.io/v1", "Lease", True))

GRACE = 2.0
NET = "k8s-pod-network"


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def cluster_env(kube_api, etcd_kv, etcd_backend) -> Iterator[dict[str, Any]]:
    kube_api.store.create(
        "pods", "kube-system", {"metadata": {"name": "felixpy-controllers-0"}, "spec": {}}
    )  # ours
    etcd_backend.create(
        KubeControllersConfiguration.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {
                    "controllers": {
                        "node": {"reconcilerPeriod": "1s", "leakGracePeriod": "2s"},
                        "workloadEndpoint": {},
                    }
                },
            }
        )
    )
    make_pool(etcd_backend, "p", "10.80.0.0/24", blockSize=28, ipipMode="Always")
    env = {
        "api": kube_api,
        "kv": etcd_kv,
        "backend": etcd_backend,
        "ipam": IPAM(etcd_kv, etcd_backend, cache_seconds=0),
    }
    started: list[tuple[Controllers, threading.Thread]] = []

    def start(identity: str) -> Controllers:
        ctl = Controllers(
            kube=KubernetesBackend.for_url(kube_api.url),
            ipam=IPAM(etcd_kv, etcd_backend, cache_seconds=0),
            backend=etcd_backend,
            etcd_mode=True,
            election=ElectionSettings(identity, lease_duration=3.0, renew_deadline=2.0, retry_period=0.5),
        )
        t = threading.Thread(target=ctl.run, name=f"controllers-{identity}", daemon=True)
        t.start()
        started.append((ctl, t))
        return ctl

    env["start"] = start
    try:
        with capture_logs() as logs:
            env["logs"] = logs
            yield env
    finally:
        for ctl, t in started:
            ctl.stop(graceful=False)
            t.join(timeout=10)


def add_node(env: dict[str, Any], name: str) -> None:
    env["api"].store.create("nodes", None, {"metadata": {"name": name}})
    make_node(env["backend"], name)


def add_pod(env: dict[str, Any], name: str, node: str, *, cid: str, ns: str = "default") -> str:
    """A pod as the CNI ADD leaves it: an address under handle <network>.<cid>, a WEP, the annotations."""
    handle = f"{NET}.{cid}"
    ip = (
        env["ipam"]
        .auto_assign(handle, node=node, num_v4=1, attrs={"node": node, "namespace": ns, "pod": name})
        .v4[0]
    )
    env["api"].store.create(
        "pods",
        ns,
        {
            "metadata": {
                "name": name,
                "annotations": {convert.ANN_POD_IP: f"{ip}/32", convert.ANN_CONTAINER_ID: cid},
            },
            "spec": {"nodeName": node},
            "status": {"podIP": ip},
        },
    )
    env["backend"].create(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": convert.wep_name(node, "k8s", name, "eth0"), "namespace": ns},
                "spec": {
                    "node": node,
                    "pod": name,
                    "containerID": cid,
                    "ipNetworks": [f"{ip}/32"],
                    "interfaceName": f"cali{cid[:11]:0<11}",
                    "orchestrator": "k8s",
                },
            }
        )
    )
    return ip


def allocated(env: dict[str, Any], ip: str) -> bool:
    return env["ipam"].get_assignment(ip) is not None


def released_count(ctl: Controllers, kind: str, reason: str) -> float:
    return (
        ctl.metrics.registry.get_sample_value(
            "felixpy_controllers_ipam_released_total", {"kind": kind, "reason": reason}
        )
        or 0.0
    )


def pass_count(ctl: Controllers, outcome: str) -> float:
    return (
        ctl.metrics.registry.get_sample_value("felixpy_controllers_gc_passes_total", {"outcome": outcome})
        or 0.0
    )


def test_deleted_pod_freed_only_after_grace_never_while_it_exists(cluster_env) -> None:
    env = cluster_env
    add_node(env, "n1")
    ip1 = add_pod(env, "p1", "n1", cid="c1")
    ip2 = add_pod(env, "p2", "n1", cid="c2")
    logs = env["logs"]
    ctl = env["start"]("a")
    wait_for(ctl.elector.is_leader, 10, "the only replica to lead")

    def passes() -> float:
        return pass_count(ctl, "ok")

    start = passes()
    wait_for(lambda: passes() >= start + 4, 30, "four passes (> 2 grace periods) with both pods alive")
    assert allocated(env, ip1) and allocated(env, ip2), "a pod that exists keeps its address"

    env["api"].store.delete("pods", "default", "p1", None)  # no CNI DEL
    deleted_at = time.monotonic()
    time.sleep(GRACE / 2)
    assert allocated(env, ip1), "not freed before the grace period"
    wait_for(lambda: not allocated(env, ip1), 30, "the deleted pod's address to be freed")
    assert time.monotonic() - deleted_at >= GRACE
    wait_for(lambda: _wep_gone(env, "n1", "p1"), 30, "the orphaned WorkloadEndpoint to be removed")
    assert allocated(env, ip2), "the live pod keeps its address"
    wait_for(lambda: _check(env["ipam"], verbose=False).problems == 0, 10, "felixctl ipam check to be clean")
    assert released_count(ctl, "address", "pod-deleted") == 1
    assert released_count(ctl, "endpoint", "pod-deleted") == 1
    # Each release is logged with its reason (one line per address, one per endpoint).
    assert [(e["ip"], e["reason"]) for e in logs if e["event"] == "gc.released"] == [(ip1, "pod-deleted")]
    assert [(e["pod"], e["reason"]) for e in logs if e["event"] == "gc.endpoint_deleted"] == [
        ("p1", "pod-deleted")
    ]
    assert_consistent(env["kv"])


def _wep_gone(env: dict[str, Any], node: str, pod: str) -> bool:
    try:
        env["backend"].get(WorkloadEndpoint, convert.wep_name(node, "k8s", pod, "eth0"), "default")
    except NotFound:
        return True
    return False


def test_list_error_mid_pass_frees_nothing(cluster_env, monkeypatch) -> None:
    env = cluster_env
    add_node(env, "n1")
    ip1 = add_pod(env, "p1", "n1", cid="c1")
    add_pod(env, "p2", "n1", cid="c2")
    add_pod(env, "p3", "n1", cid="c3")
    monkeypatch.setattr(cluster, "PAGE", 1)  # one pod per page: the second page of pods fails
    real_list, calls = env["api"].store.list, {"pods": 0}

    def failing_list(resource: str, ns: str | None):
        if resource == "pods":
            calls["pods"] += 1
            if calls["pods"] % 2 == 0:  # every pass reads two pages
                raise kubeapi.ApiError(500, "InternalError", "etcdserver: request timed out")
        return real_list(resource, ns)

    env["api"].store.list = failing_list
    env["api"].store.delete("pods", "default", "p1", None)
    ctl = env["start"]("a")
    wait_for(lambda: pass_count(ctl, "aborted") >= 4, 30, "four aborted passes (> 2 grace periods)")
    assert allocated(env, ip1), "a pass with a failed list frees nothing"
    assert pass_count(ctl, "ok") == 0, "no pass saw a complete list"
    assert released_count(ctl, "address", "pod-deleted") == 0
    env["api"].store.list = real_list
    wait_for(lambda: not allocated(env, ip1), 30, "the address to be freed once lists complete")


def test_handle_or_address_reused_by_a_live_pod_is_kept(cluster_env) -> None:
    env = cluster_env
    add_node(env, "n1")
    ipam = env["ipam"]
    # An allocation recorded for pod 'old' (gone) whose handle a live pod now holds (same container).
    reused = ipam.auto_assign(
        f"{NET}.c7", node="n1", num_v4=1, attrs={"node": "n1", "namespace": "default", "pod": "old"}
    ).v4[0]
    env["api"].store.create(
        "pods",
        "default",
        {
            "metadata": {"name": "new", "annotations": {convert.ANN_CONTAINER_ID: "c7"}},
            "spec": {"nodeName": "n1"},
        },
    )
    # An allocation for pod 'gone2' whose address is now a live pod's (status.podIP).
    stale = ipam.auto_assign(
        f"{NET}.c8", node="n1", num_v4=1, attrs={"node": "n1", "namespace": "default", "pod": "gone2"}
    ).v4[0]
    env["api"].store.create(
        "pods",
        "default",
        {"metadata": {"name": "holder"}, "spec": {"nodeName": "n1"}, "status": {"podIP": stale}},
    )
    # A plain leak beside them, to know the passes run and release.
    leak = ipam.auto_assign(
        f"{NET}.c9", node="n1", num_v4=1, attrs={"node": "n1", "namespace": "default", "pod": "gone3"}
    ).v4[0]
    ctl = env["start"]("a")
    wait_for(lambda: not allocated(env, leak), 30, "the plain leak to be freed")
    time.sleep(GRACE)
    assert allocated(env, reused), "a handle re-used by a live pod is kept"
    assert allocated(env, stale), "an address a live pod has is kept"
    assert released_count(ctl, "address", "pod-deleted") == 1


def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(cluster_env) -> None:
    env = cluster_env
    add_node(env, "n1")
    a = env["start"]("a")
    wait_for(a.elector.is_leader, 10, "replica a to lead")
    b = env["start"]("b")
    ip1 = add_pod(env, "p1", "n1", cid="c1")
    env["api"].store.delete("pods", "default", "p1", None)
    wait_for(lambda: not allocated(env, ip1), 30, "the leader to free the leak")
    assert not b.elector.is_leader()
    assert (
        released_count(a, "address", "pod-deleted") == 1 and released_count(b, "address", "pod-deleted") == 0
    )
    assert (
        b.metrics.registry.get_sample_value("felixpy_controllers_gc_passes_total", {"outcome": "ok"}) or 0
    ) == 0, "the stand-by never ran a pass"
    a.stop(graceful=False)  # as if killed: the Lease is left to expire
    killed_at = time.monotonic()
    wait_for(b.elector.is_leader, 15, "replica b to take over")
    took = time.monotonic() - killed_at
    assert took <= 3.0 + 2 * 0.5 + 3.0, f"takeover took {took:.1f}s (lease 3 s)"
    lease = env["api"].store.get("leases.coordination.k8s.io", "kube-system", "felixpy-controllers")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    ip2 = add_pod(env, "p2", "n1", cid="c2")
    env["api"].store.delete("pods", "default", "p2", None)
    wait_for(lambda: not allocated(env, ip2), 30, "the new leader to free a leak")
    assert released_count(b, "address", "pod-deleted") == 1


def test_deleted_node_blocks_affinities_tunnel_and_node_released(cluster_env) -> None:
    env = cluster_env
    add_node(env, "n1")
    add_node(env, "n2")
    ipam = env["ipam"]
    tunnel = tunnel_address(ipam, "n2", "ipip")
    ip_gone = add_pod(env, "p-on-n2", "n2", cid="c2")
    ip_live = add_pod(env, "p-on-n1", "n1", cid="c1")
    n2_blocks = ipam.affine_blocks("n2")
    assert n2_blocks
    # The node's BGP state (as Calico's Node deletion removes it), beside what must stay.
    b = env["backend"]
    for name, spec in (
        ("n2-tor", {"node": "n2", "peerIP": "192.0.2.1", "asNumber": 65001}),
        ("n1-tor", {"node": "n1", "peerIP": "192.0.2.2", "asNumber": 65001}),
        ("global", {"peerIP": "192.0.2.3", "asNumber": 65002}),
        ("racks", {"nodeSelector": "all()", "peerIP": "192.0.2.4", "asNumber": 65003}),
    ):
        b.create(BGPPeer.model_validate({"metadata": {"name": name}, "spec": spec}))
    for n in ("n1", "n2"):
        b.create(BGPConfiguration.model_validate({"metadata": {"name": f"node.{n}"}, "spec": {}}))
        b.create(FelixConfiguration.model_validate({"metadata": {"name": f"node.{n}"}, "spec": {}}))
    ctl = env["start"]("a")
    wait_for(ctl.elector.is_leader, 10, "the replica to lead")
    env["api"].store.delete("pods", "default", "p-on-n2", None)
    env["api"].store.delete("nodes", None, "n2", None)
    wait_for(lambda: ipam.affine_blocks("n2") == [], 30, "n2's block affinities to be released")
    assert not allocated(env, tunnel) and not allocated(env, ip_gone) and allocated(env, ip_live)
    with pytest.raises(NotFound):
        env["backend"].get(Node, "n2")  # its BGP state and tunnel address fields went with it
    assert env["backend"].get(Node, "n1")
    for cidr in n2_blocks:  # emptied by the releases, then deleted with the affinity
        assert ipam.store.get_block(ipaddress.ip_network(cidr)) is None, f"n2's empty block {cidr} was kept"
    assert {p.name for p in b.list(BGPPeer)[0]} == {"n1-tor", "global", "racks"}, "n2's BGPPeer goes"
    assert {c.name for c in b.list(BGPConfiguration)[0]} == {"node.n1"}
    assert {c.name for c in b.list(FelixConfiguration)[0]} == {"node.n1"}
    wait_for(lambda: _check(ipam, verbose=False).problems == 0, 10, "felixctl ipam check to be clean")
    assert released_count(ctl, "address", "node-deleted") == 2
    assert released_count(ctl, "affinity", "node-deleted") == len(n2_blocks)
    for kind in ("node", "BGPPeer", "BGPConfiguration", "FelixConfiguration"):
        assert released_count(ctl, kind, "node-deleted") == 1, kind
    (line,) = [e for e in env["logs"] if e["event"] == "gc.node_released"]
    assert line["node"] == "n2" and line["reason"] == "node-deleted"
    assert sorted(line["blocks"]) == sorted(map(str, n2_blocks))
    assert sorted(line["bgp_and_config"]) == [
        "BGPConfiguration/node.n2",
        "BGPPeer/n2-tor",
        "FelixConfiguration/node.n2",
    ]
    released = sorted(e["ip"] for e in env["logs"] if e["event"] == "gc.released")
    assert released == sorted([tunnel, ip_gone]), "each released address logged"
    assert_consistent(env["kv"])
