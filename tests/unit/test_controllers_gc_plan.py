"""The GC decisions as a table: every safety rule of felixpy.controllers.gc_plan, one row each."""

from __future__ import annotations

import pytest

from felixpy.controllers.gc_plan import Allocation, ClusterView, Endpoint, LivePod, invalid_reason, plan

GRACE = 10.0
N1 = "n1"


def pod(
    name: str,
    *,
    ns: str = "default",
    uid: str = "u1",
    node: str = N1,
    ips: tuple[str, ...] = (),
    cid: str = "",
    phase: str = "",
    reason: str = "",
) -> LivePod:
    return LivePod(ns, name, uid, node, frozenset(ips), cid, phase=phase, reason=reason)


def alloc(ip: str, handle: str = "k8s-pod-network.c1", **attrs: str) -> Allocation:
    base = {"node": N1, "namespace": "default", "pod": "p1"}
    base.update(attrs)
    return Allocation(ip, handle, {k: v for k, v in base.items() if v})


SELF = LivePod("kube-system", "felixpy-controllers-0", "u0", "n0")  # a cluster always has a pod: ours


def view(*pods: LivePod, nodes: tuple[str, ...] = (N1,)) -> ClusterView:
    every = (SELF, *pods)
    return ClusterView(pods={(p.namespace, p.name): p for p in every}, nodes=frozenset({*nodes, "n0"}))


ROWS = [
    # (case, allocation, view, expected reason)
    ("pod exists", alloc("10.0.0.1"), view(pod("p1", ips=("10.0.0.1",))), None),
    ("pod exists, no IP yet", alloc("10.0.0.1"), view(pod("p1")), None),
    ("pod gone", alloc("10.0.0.1"), view(), "pod-deleted"),
    ("pod and node gone", alloc("10.0.0.1"), view(nodes=()), "node-deleted"),
    ("address is a live pod's", alloc("10.0.0.1"), view(pod("other", ips=("10.0.0.1",))), None),
    ("handle re-used by a live pod", alloc("10.0.0.1", "net.c9"), view(pod("other", cid="c9")), None),
    ("no owner recorded", alloc("10.0.0.1", namespace="", pod=""), view(), None),
    (
        "same name, other UID",
        alloc("10.0.0.1", uid="old"),
        view(pod("p1", uid="new", ips=("10.0.0.9",))),
        "pod-replaced",
    ),
    ("same name, same UID", alloc("10.0.0.1", uid="u1"), view(pod("p1", uid="u1", ips=("10.0.0.9",))), None),
    (
        "pod now on another node",
        alloc("10.0.0.1"),
        view(pod("p1", node="n2", ips=("10.0.0.9",)), nodes=(N1, "n2")),
        "pod-on-other-node",
    ),
    ("pod on another node, no IP yet", alloc("10.0.0.1"), view(pod("p1", node="n2"), nodes=(N1, "n2")), None),
    ("pod Running", alloc("10.0.0.1"), view(pod("p1", ips=("10.0.0.1",), phase="Running")), None),
    ("pod Pending, no IP yet", alloc("10.0.0.1"), view(pod("p1", phase="Pending")), None),
    (
        "pod Failed/Evicted, object remains",
        alloc("10.0.0.1"),
        view(pod("p1", ips=("10.0.0.1",), phase="Failed", reason="Evicted")),
        "pod-evicted",
    ),
    ("pod Failed", alloc("10.0.0.1"), view(pod("p1", ips=("10.0.0.1",), phase="Failed")), "pod-failed"),
    (
        "pod Succeeded",
        alloc("10.0.0.1"),
        view(pod("p1", ips=("10.0.0.1",), phase="Succeeded")),
        "pod-succeeded",
    ),
    (
        "a finished pod's handle is not kept by its container ID",
        alloc("10.0.0.1", "net.c9"),
        view(pod("p1", cid="c9", phase="Succeeded")),
        "pod-succeeded",
    ),
    (
        "finished pod's address now a Running pod's",
        alloc("10.0.0.1"),
        view(pod("p1", ips=("10.0.0.1",), phase="Failed"), pod("p2", ips=("10.0.0.1",), phase="Running")),
        None,
    ),
    (
        "same name re-created (other UID), new pod Pending",
        alloc("10.0.0.1", uid="old"),
        view(pod("p1", uid="new", phase="Pending")),
        "pod-replaced",
    ),
    (
        "the re-created pod's own allocation",
        alloc("10.0.0.2", uid="new"),
        view(pod("p1", uid="new", phase="Pending")),
        None,
    ),
    (
        "tunnel, node exists",
        alloc("10.0.0.1", "ipip-tunnel-addr-n1", namespace="", pod="", type="ipipTunnelAddress"),
        view(),
        None,
    ),
    (
        "tunnel, node gone",
        alloc("10.0.0.1", "vxlan-tunnel-addr-n1", namespace="", pod=""),
        view(nodes=()),
        "node-deleted",
    ),
]


@pytest.mark.parametrize(("case", "a", "v", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_invalid_reason(case: str, a: Allocation, v: ClusterView, expected: str | None) -> None:
    assert invalid_reason(a, v, v.pod_ips(), v.container_ids()) == expected, case


def run(allocs, v, cands, now, *, eps=(), nodes=(), grace=GRACE):
    return plan(allocs, eps, v, candidates=cands, affine_nodes=nodes, now=now, grace=grace)


def test_released_only_after_the_grace_period_measured_from_first_sight() -> None:
    a = alloc("10.0.0.1")
    p = run([a], view(), {}, 100.0)
    assert p.addresses == [] and p.candidates == {a.key: 100.0}
    p = run([a], view(), p.candidates, 109.9)
    assert p.addresses == [], "not before the grace period"
    p = run([a], view(), p.candidates, 110.0)
    assert [(r.what, r.reason) for r in p.addresses] == [("10.0.0.1", "pod-deleted")]


def test_pod_back_resets_the_clock() -> None:
    a = alloc("10.0.0.1")
    p = run([a], view(), {}, 100.0)
    p = run([a], view(pod("p1")), p.candidates, 105.0)
    assert p.candidates == {}, "valid again: clock cleared"
    p = run([a], view(), p.candidates, 111.0)
    assert p.addresses == [] and p.candidates == {a.key: 111.0}


def test_failed_list_frees_nothing_and_keeps_clocks() -> None:
    a = alloc("10.0.0.1")
    p = run([a], None, {a.key: 0.0}, 1000.0)
    assert p.addresses == [] and p.endpoints == [] and p.nodes == [] and p.candidates == {a.key: 0.0}


def test_grace_zero_disables_collection() -> None:
    p = run([alloc("10.0.0.1")], view(), {alloc("10.0.0.1").key: 0.0}, 1000.0, grace=0)
    assert p.addresses == []


def test_handle_released_only_when_all_its_addresses_are_confirmed() -> None:
    a1, a2 = alloc("10.0.0.1", "net.c1"), alloc("10.0.0.2", "net.c1")
    # a2's address now belongs to a live pod: the handle stays whole.
    p = run([a1, a2], view(pod("x", ips=("10.0.0.2",))), {a1.key: 0.0, a2.key: 0.0}, 100.0)
    assert p.addresses == []
    p = run([a1, a2], view(), {a1.key: 0.0, a2.key: 0.0}, 100.0)
    assert sorted(r.what for r in p.addresses) == ["10.0.0.1", "10.0.0.2"]


def test_orphaned_endpoint_after_grace_only() -> None:
    ep = Endpoint("default", "n1-k8s-p1-eth0", "p1", N1, "7")
    p = run([], view(pod("p1")), {ep.key: 0.0}, 100.0, eps=[ep])
    assert p.endpoints == [] and p.candidates == {}
    p = run([], view(), {}, 100.0, eps=[ep])
    assert p.endpoints == []
    p = run([], view(), p.candidates, 111.0, eps=[ep])
    assert p.endpoints == [(ep, "pod-deleted")]


def test_a_finished_pods_endpoint_goes_after_grace_a_live_ones_never() -> None:
    ep = Endpoint("default", "n1-k8s-p1-eth0", "p1", N1, "7")
    for phase in ("Running", "Pending", ""):
        p = run([], view(pod("p1", phase=phase)), {ep.key: 0.0}, 100.0, eps=[ep])
        assert p.endpoints == [] and p.candidates == {}, phase
    finished = view(pod("p1", phase="Failed", reason="Evicted"))
    p = run([], finished, {}, 100.0, eps=[ep])
    assert p.endpoints == []
    p = run([], finished, p.candidates, 111.0, eps=[ep])
    assert p.endpoints == [(ep, "pod-evicted")]


def test_deleted_node_released_after_grace_unless_it_still_holds_live_addresses() -> None:
    tunnel = alloc("10.0.0.9", "ipip-tunnel-addr-gone", node="gone", namespace="", pod="")
    live = alloc("10.0.0.5", "net.c5", node="gone", pod="still")
    v = view(pod("still", node="gone", ips=("10.0.0.5",)))
    p = run([tunnel, live], v, {}, 0.0, nodes=["gone", N1])
    p = run([tunnel, live], v, p.candidates, 20.0, nodes=["gone", N1])
    assert [r.what for r in p.addresses] == ["10.0.0.9"], "the tunnel address goes"
    assert p.nodes == [], "a live pod still holds an address recorded on the node: the node is kept"
    p = run([tunnel], view(), {"node/gone": 0.0, tunnel.key: 0.0}, 20.0, nodes=["gone", N1])
    assert [r.what for r in p.nodes] == ["gone"] and "node/n1" not in p.candidates


def test_unknown_owner_blocks_node_cleanup() -> None:
    odd = alloc("10.0.0.7", "manual", node="gone", namespace="", pod="")
    p = run([odd], view(), {"node/gone": 0.0}, 100.0, nodes=["gone"])
    assert p.addresses == [] and p.nodes == []


def test_an_empty_pod_or_node_list_is_not_trusted() -> None:
    a = alloc("10.0.0.1")
    assert run([a], ClusterView(pods={}, nodes=frozenset({N1})), {a.key: 0.0}, 100.0).addresses == []
    only_pods = ClusterView(pods={("default", "x"): pod("x")}, nodes=frozenset())
    assert run([a], only_pods, {a.key: 0.0, "node/n1": 0.0}, 100.0, nodes=[N1]).nodes == []
