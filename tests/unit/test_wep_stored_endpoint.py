"""A stored WorkloadEndpoint becomes the calc's `Endpoint` straight from its JSON
(``policy.convert.endpoint_from_stored_wep``, issue 15 goal 2) with the model's checks: every valid
document gives exactly the endpoint the pydantic model gives; a document the fast path does not take
(ports, ipNATs, an unknown field, ...) goes through the model; a malformed one is refused by the model
as before, the error naming the field, and the writer logs it and treats it as deleted (Departure 41
in docs/architecture.md; it used to stop the writer, ``writer.crashed``)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
import structlog
import structlog.testing
from pydantic import ValidationError

import policy.convert
from felixpy.calc.graph import CalcGraph, event_input
from felixpy.datastore.resources import LazyResourceEvent
from felixpy.resources import WorkloadEndpoint
from felixpy.runtime.writer import InSyncMsg, NullDataplane, ResourceMsg, Writer
from policy.convert import endpoint_from_stored_wep, endpoint_from_wep
from policy.entities import Endpoint, new_endpoint


def _doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "rm7", "namespace": "bench", "labels": {"app": "a7", "svc": "s1"}},
        "spec": {
            "allowSpoofedSourcePrefixes": [], "endpoint": "eth0", "interfaceName": "calirm00007",
            "ipNATs": [], "ipNetworks": ["10.243.0.8/32"], "node": "remote-7", "orchestrator": "k8s",
            "pod": "rm7", "ports": [], "profiles": ["kns.bench"], **spec,
        },
    }  # fmt: skip


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _with(path: str, value: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` with the dotted ``path`` set (``...`` as value: removed)."""
    out = copy.deepcopy(doc or _doc())
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


VALID = [
    _doc(),
    _doc(ipNetworks=["10.243.0.8/32", "fd00:1::8/128"]),
    _doc(ipNetworks=["fd00:0001:0000::8/128"]),  # normalised as the model does
    _doc(ipNetworks=[" 10.1.0.0/24 "]),
    _doc(ipNetworks=[]),
    _doc(profiles=[]),  # -> kns.<namespace>
    _doc(profiles=["kns.bench", "ksa.bench.default"], serviceAccountName="default"),
    _doc(mac="ee:ee:ee:ee:ee:ee", containerID="abc123", workload=None, ipv4Gateway="169.254.1.1"),
    _doc(allowSpoofedSourcePrefixes=["10.9.0.0/16", "fd00::/64"]),
    _with("metadata.namespace", ...),  # -> default
    _with("metadata.namespace", ""),
    _with("metadata.labels", {}),
    _with("metadata.labels", ...),
    _with("metadata.labels", {"example.com/role": "db", "empty": ""}),
    _with("metadata.annotations", {"projectcalico.org/note": "x y z"}),
    _with("metadata.uid", "1234-5678"),
    _with("metadata.creationTimestamp", "2026-01-01T00:00:00Z"),
    _with("apiVersion", ...),
]


@pytest.mark.parametrize("doc", VALID, ids=range(len(VALID)))
def test_valid_documents_give_the_models_endpoint(doc: dict[str, Any]) -> None:
    raw = _raw(doc)
    want = endpoint_from_wep(WorkloadEndpoint.model_validate_json(raw))
    got = endpoint_from_stored_wep(raw)
    assert got is not None, "the fast path should take this document"
    assert got == want
    assert dataclasses.asdict(got) == dataclasses.asdict(want)


THROUGH_THE_MODEL = [  # valid, but not the fast path's shape: the model builds them
    _doc(ports=[{"name": "http", "protocol": "TCP", "port": 8080}]),
    _doc(ipNATs=[{"internalIP": "10.243.0.8", "externalIP": "172.16.0.8"}]),
    _with("metadata.generation", 3),
    _with("metadata.namespace", "fresh-namespace-not-yet-seen-by-the-model"),
    {"metadata": {"name": "x", "namespace": "bench"}, "spec": {"node": "n", "interface_name": "cali1"}},
]


@pytest.mark.parametrize("doc", THROUGH_THE_MODEL, ids=range(len(THROUGH_THE_MODEL)))
def test_other_shapes_go_through_the_model(doc: dict[str, Any]) -> None:
    raw = _raw(doc)
    assert endpoint_from_stored_wep(raw) is None
    ev = LazyResourceEvent("put", WorkloadEndpoint, "x", "bench", raw, 5)
    assert event_input("WorkloadEndpoint", ev) is ev.obj  # the model, which CalcGraph converts
    assert endpoint_from_wep(ev.obj) is not None  # type: ignore[arg-type]


INVALID = [  # (document, the field pydantic's error names)
    (_with("spec.node", "Remote_7"), "spec.node"),
    (_with("spec.node", ""), "spec.node"),
    (_with("spec.node", 7), "spec.node"),
    (_with("spec.node", ...), "spec.node"),
    (_with("spec.interfaceName", "cali/bad"), "spec.interfaceName"),
    (_with("spec.interfaceName", "a-name-much-too-long"), "spec.interfaceName"),
    (_with("spec.interfaceName", ...), "spec.interfaceName"),
    (_doc(ipNetworks=["10.243.0.8"]), "spec.ipNetworks.0"),
    (_doc(ipNetworks=["10.243.0.8/24"]), "spec.ipNetworks.0"),
    (_doc(ipNetworks=["10.243.0.300/32"]), "spec.ipNetworks.0"),
    (_doc(ipNetworks="10.243.0.8/32"), "spec.ipNetworks"),
    (_doc(ipNetworks=None), "spec.ipNetworks"),
    (_doc(ipNetworks=[8]), "spec.ipNetworks.0"),
    (_doc(allowSpoofedSourcePrefixes=["10.9.0.1/16"]), "spec.allowSpoofedSourcePrefixes.0"),
    (_doc(profiles=[7]), "spec.profiles.0"),
    (_doc(profiles="kns.bench"), "spec.profiles"),
    (_doc(mac="ee:ee"), "spec.mac"),
    (_doc(ipv4Gateway="169.254.1"), "spec.ipv4Gateway"),
    (_doc(pod=7), "spec.pod"),
    (_doc(orchestrator=None), "spec.orchestrator"),
    (_doc(surprise=1), "spec.surprise"),
    (_with("metadata.name", "bad name"), "metadata.name"),
    (_with("metadata.name", None), "metadata.name"),
    (_with("metadata.namespace", "Bad_NS"), "metadata.namespace"),
    (_with("metadata.namespace", 5), "metadata.namespace"),
    (_with("metadata.labels", {"app": "a b"}), "metadata.labels"),
    (_with("metadata.labels", {"app": 7}), "metadata.labels.app"),
    (_with("metadata.labels", {"-bad-key": "v"}), "metadata.labels"),
    (_with("metadata.labels", None), "metadata.labels"),
    (_with("metadata.labels", {"app": ["a"]}), "metadata.labels.app"),
    (_with("metadata.labels", {"app": "a7", "svc": "s1", "x": "bad value"}), "metadata.labels"),
    (_with("metadata.annotations", {"bad key": "v"}), "metadata.annotations"),
    (_with("metadata.annotations", {"ok": 1}), "metadata.annotations.ok"),
    (_with("metadata.surprise", "x"), "metadata.surprise"),
    (_with("spec", ...), "spec"),
    (_with("spec", []), "spec"),
    (_with("kind", 5), "kind"),
    (_with("status", {}), "status"),
]


@pytest.mark.parametrize(("doc", "field"), INVALID, ids=[f for _, f in INVALID])
def test_malformed_documents_are_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    raw = _raw(doc)
    assert endpoint_from_stored_wep(raw) is None
    ev = LazyResourceEvent("put", WorkloadEndpoint, "rm7", "bench", raw, 5)
    with pytest.raises(ValidationError) as info:
        event_input("WorkloadEndpoint", ev)
    assert any(w.startswith(field) for w in _where(info.value)), (_where(info.value), str(info.value))


def _where(exc: ValidationError) -> list[str]:
    """Each error's dotted location, with the sub-field a `FieldError` names (as
    ``felixpy.resources.parse`` reports it: ``metadata.name`` from a model validator)."""
    out = []
    for e in exc.errors():
        sub = getattr((e.get("ctx") or {}).get("error"), "field", "")
        out.append(".".join([*(str(p) for p in e["loc"]), *([sub] if sub else [])]))
    return out


def test_not_json_is_refused() -> None:
    for raw in (b"{", b"[]", b'"text"', b"null"):
        assert endpoint_from_stored_wep(raw) is None
        with pytest.raises(ValidationError):
            event_input("WorkloadEndpoint", LazyResourceEvent("put", WorkloadEndpoint, "x", "ns", raw, 5))


def _wep_msg(name: str, raw: bytes, rev: int) -> ResourceMsg:
    event = LazyResourceEvent("put", WorkloadEndpoint, name, "bench", raw, rev)
    return ResourceMsg("WorkloadEndpoint", ("bench", name), None, rev, event=event)


def test_a_malformed_remote_endpoint_is_logged_with_its_field_and_treated_as_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the writer, as the agent feeds it: the good endpoint is in the calc; the bad one is
    logged (``datastore.invalid_resource`` naming ``spec.node``) and left out, and the writer goes on
    (Felix's validation filter). Before, the pydantic error ended the writer and the agent, which
    then restarted into the same stored document."""
    graph = CalcGraph("n1", bgp=True)
    writer = Writer(graph, NullDataplane())
    good, bad = _raw(_doc(node="n1")), _raw(_with("spec.node", "Remote_7"))
    with structlog.testing.capture_logs() as logs:
        writer._process([_wep_msg("rm7", good, 5), _wep_msg("rm8", bad, 6), InSyncMsg()])
    assert graph.state().endpoints[("bench", "rm7")].iface == "calirm00007"
    assert ("bench", "rm8") not in graph.state().endpoints
    refused = [e for e in logs if e["event"] == "datastore.invalid_resource"]
    assert len(refused) == 1 and refused[0]["name"] == "rm8" and refused[0]["revision"] == 6
    assert refused[0]["errors"].startswith("spec.node: ")
    assert writer.stats.invalid_resources["WorkloadEndpoint"] == 1


def test_an_endpoint_updated_to_an_invalid_document_leaves_the_calc_and_comes_back_when_fixed() -> None:
    graph = CalcGraph("n1", bgp=True)
    writer = Writer(graph, NullDataplane())
    good = _raw(_doc(node="n1"))
    writer._process([_wep_msg("rm7", good, 5), InSyncMsg()])
    assert ("bench", "rm7") in graph.state().endpoints
    for bad in (_raw(_with("spec.node", "Remote_7")), b"{not json", b'{"kind": "WorkloadEndpoint"}'):
        writer._process([_wep_msg("rm7", bad, 6)])
        assert ("bench", "rm7") not in graph.state().endpoints, bad
        writer._process([_wep_msg("rm7", good, 7)])
        assert graph.state().endpoints[("bench", "rm7")].iface == "calirm00007"
    assert writer.stats.invalid_resources["WorkloadEndpoint"] == 3


def test_calc_takes_models_and_stored_endpoints_alike() -> None:
    """The same endpoint fed as a model (a CNI write) or from the stored JSON: same calc output."""
    outs = []
    for as_event in (False, True):
        graph = CalcGraph("remote-7", bgp=True)
        raw = _raw(_doc())
        ev = LazyResourceEvent("put", WorkloadEndpoint, "rm7", "bench", raw, 5)
        obj = event_input("WorkloadEndpoint", ev) if as_event else WorkloadEndpoint.model_validate_json(raw)
        assert isinstance(obj, Endpoint) == as_event
        graph.on_resource("WorkloadEndpoint", ("bench", "rm7"), obj)
        outs.append(graph.flush())
    assert outs[0] == outs[1] and outs[0]


def test_new_endpoint_is_the_dataclass() -> None:
    fields = {"key": "ns/a", "namespace": "ns", "labels": {"a": "b"}, "ips": ("10.0.0.1",), "node": "n"}
    fast, slow = new_endpoint(**fields), Endpoint(**fields)
    assert fast == slow and dataclasses.asdict(fast) == dataclasses.asdict(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.node = "m"  # type: ignore[misc]


def test_label_maps_are_shared_and_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoints with the same labels share one interned map; the memo of checked maps is bounded and
    a bad map is refused however many good ones came before (only checked maps are remembered)."""
    a = endpoint_from_stored_wep(_raw(_doc()))
    b = endpoint_from_stored_wep(_raw(_with("metadata.name", "rm8")))
    assert a is not None and b is not None and a.labels is b.labels and a.labels == {"app": "a7", "svc": "s1"}
    monkeypatch.setattr(policy.convert, "STORED_WEP_MEMO_MAX", 2)
    for i in range(5):
        assert endpoint_from_stored_wep(_raw(_with("metadata.labels", {"app": f"v{i}"}))) is not None
        assert endpoint_from_stored_wep(_raw(_with("spec.node", f"node-{i}"))) is not None
        assert len(policy.convert._SHARED_LABELS) <= 2 and len(policy.convert._VALID_NODES) <= 2
    for bad in ({"app": "v1", "x": "no good"}, {"app": "v4", "-x": "y"}):
        assert endpoint_from_stored_wep(_raw(_with("metadata.labels", bad))) is None
    assert endpoint_from_stored_wep(_raw(_with("spec.node", "node_4"))) is None


def test_an_invalid_policy_document_is_refused_the_same_way_and_the_writer_goes_on() -> None:
    from felixpy.resources import GlobalNetworkPolicy

    graph = CalcGraph("n1", bgp=True)
    writer = Writer(graph, NullDataplane())
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "p1"},
        "spec": {"order": "first", "selector": "all()"},
    }
    event = LazyResourceEvent("put", GlobalNetworkPolicy, "p1", None, json.dumps(doc).encode(), 9)
    with structlog.testing.capture_logs() as logs:
        writer._process(
            [
                ResourceMsg("GlobalNetworkPolicy", ("", "p1"), None, 9, event=event),
                _wep_msg("rm7", _raw(_doc(node="n1")), 10),
            ]
        )
    refused = [e for e in logs if e["event"] == "datastore.invalid_resource"]
    assert [(e["kind"], e["name"]) for e in refused] == [("GlobalNetworkPolicy", "p1")]
    assert "spec.order" in refused[0]["errors"]
    assert ("bench", "rm7") in graph.state().endpoints
