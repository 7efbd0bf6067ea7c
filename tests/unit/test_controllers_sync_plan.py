"""The etcd-mode mirror's decisions (felixpy.controllers.sync_plan)."""

from __future__ import annotations

from felixpy.controllers.sync_plan import SYNCED, endpoint_labels, mirror


def ns(name: str, labels: dict[str, str] | None = None, *, synced: bool = False) -> dict:
    meta = {"name": name, "labels": labels or {}}
    if synced:
        meta["annotations"] = {SYNCED: "kubernetes"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {}}


def test_create_update_delete_and_nothing_when_equal() -> None:
    desired = {("", "a"): ns("a", {"team": "x"}), ("", "b"): ns("b", {"team": "y"}), ("", "c"): ns("c")}
    actual = {
        ("", "b"): (ns("b", {"team": "old"}, synced=True), "7"),
        ("", "c"): (ns("c", synced=True), "8"),
        ("", "gone"): (ns("gone", synced=True), "9"),
        ("", "handmade"): (ns("handmade"), "10"),
    }
    got = [(w.op, w.key[1], w.revision) for w in mirror(desired, actual)]
    assert got == [("create", "a", None), ("update", "b", "7"), ("delete", "gone", "9")]
    created = mirror(desired, actual)[0].body
    assert created is not None and created["metadata"]["annotations"] == {SYNCED: "kubernetes"}


def test_a_repeated_pass_writes_nothing() -> None:
    desired = {("", "a"): ns("a", {"team": "x"})}
    (w,) = mirror(desired, {})
    assert w.body is not None
    assert mirror(desired, {("", "a"): (w.body, "3")}) == []


def test_same_name_stored_by_hand_is_adopted() -> None:
    (w,) = mirror({("", "a"): ns("a")}, {("", "a"): (ns("a"), "4")})
    assert (w.op, w.revision) == ("update", "4")


def test_endpoint_labels() -> None:
    got = endpoint_labels(
        {"app": "web", "projectcalico.org/namespace": "spoof"}, namespace="prod", service_account=""
    )
    assert got == {
        "app": "web",
        "projectcalico.org/namespace": "prod",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "default",
    }


def test_node_labels_copied_removed_and_own_kept() -> None:
    from felixpy.controllers.sync_plan import KUBE_LABELS, node_labels

    got = node_labels({"route-reflector": "true"}, {}, {"zone": "a"})
    assert got is not None
    labels, ann = got
    assert labels == {"route-reflector": "true", "zone": "a"} and ann == {KUBE_LABELS: '{"zone": "a"}'}
    assert node_labels(labels, ann, {"zone": "a"}) is None, "nothing to change"
    labels2, _ = node_labels(labels, ann, {"rack": "r1"}) or ({}, {})
    assert labels2 == {"route-reflector": "true", "rack": "r1"}, "zone was copied, now gone; own label stays"
    assert node_labels({"x": "1"}, {KUBE_LABELS: "not json"}, {}) == ({"x": "1"}, {KUBE_LABELS: "{}"})


def test_an_empty_namespace_list_deletes_nothing() -> None:
    actual = {("", "a"): (ns("a", synced=True), "1")}
    assert mirror({}, actual, may_be_empty=False) == []
    assert [w.op for w in mirror({}, actual)] == ["delete"], "policies may really all be gone"
