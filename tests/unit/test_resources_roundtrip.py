"""Calico-style manifests survive YAML → model → YAML with nothing the user wrote lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.resources import IPPool, ResourceError
from felixpy.resources.bgp import BGPPeer
from felixpy.resources.fields import split_peer_ip
from felixpy.resources.parse import flatten, load_yaml, parse_document, parse_documents

MANIFESTS = Path(__file__).parents[1] / "data" / "manifests"
FILES = sorted(p.name for p in MANIFESTS.iterdir() if p.suffix in (".yaml", ".json"))


def assert_contains(written: Any, produced: Any, path: str = "") -> None:
    """Every leaf the user wrote is in ``produced`` with an equal value (None = not written)."""
    if isinstance(written, dict):
        assert isinstance(produced, dict), f"{path}: expected a mapping, got {produced!r}"
        for key, value in written.items():
            if value is None:
                continue
            assert key in produced, f"{path}.{key} was lost"
            assert_contains(value, produced[key], f"{path}.{key}")
    elif isinstance(written, list):
        assert isinstance(produced, list) and len(produced) == len(written), f"{path}: {produced!r}"
        for i, (w, p) in enumerate(zip(written, produced, strict=True)):
            assert_contains(w, p, f"{path}[{i}]")
    else:
        assert produced == written, f"{path}: wrote {written!r}, got {produced!r}"


def test_every_kind_has_a_manifest() -> None:
    kinds = {obj.KIND for name in FILES for obj in parse_documents((MANIFESTS / name).read_text())}
    assert kinds >= {
        "IPPool", "BGPPeer", "BGPConfiguration", "Node", "WorkloadEndpoint", "HostEndpoint",
        "NetworkPolicy", "GlobalNetworkPolicy", "FelixConfiguration",
    }  # fmt: skip


@pytest.mark.parametrize("name", FILES)
def test_roundtrip_keeps_what_the_user_wrote(name: str) -> None:
    text = (MANIFESTS / name).read_text()
    written = flatten(load_yaml(text))
    objs = parse_documents(text)
    assert len(objs) == len(written)
    for doc, obj in zip(written, objs, strict=True):
        out = obj.to_dict()
        assert_contains(doc, out)
        again = parse_documents(yaml.safe_dump(out, sort_keys=False))[0]
        assert again.to_dict() == out  # stable: a second trip changes nothing
        assert parse_documents(json.dumps(out))[0].to_dict() == out


def test_defaults_are_filled() -> None:
    pool = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                           "metadata": {"name": "p"}, "spec": {"cidr": "fd00:1::/64"}})  # fmt: skip
    assert isinstance(pool, IPPool)
    assert pool.spec.block_size == 122
    assert pool.spec.allowed_uses == ["Workload", "Tunnel"]
    assert pool.spec.node_selector == "all()"
    v4pool = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                             "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8"}})  # fmt: skip
    assert isinstance(v4pool, IPPool) and v4pool.spec.block_size == 26
    assert v4pool.spec.ipip_mode == "Never" and v4pool.spec.vxlan_mode == "Never"


def test_asdot_as_numbers_normalise_to_int() -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "p"},
           "spec": {"peerIP": "10.0.0.1", "asNumber": "1.10", "localASNumber": "4200000000"}}  # fmt: skip
    peer = parse_document(doc)
    assert isinstance(peer, BGPPeer)
    assert peer.spec.as_number == 65546
    assert peer.spec.local_as_number == 4200000000


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10.0.0.1", ("10.0.0.1", None)), ("10.0.0.1:1179", ("10.0.0.1", 1179)),
     ("fd00::1", ("fd00::1", None)), ("[fd00::1]:179", ("fd00::1", 179))],
)  # fmt: skip
def test_split_peer_ip(value: str, expected: tuple[str, int | None]) -> None:
    assert split_peer_ip(value) == expected


def test_yaml_port_ranges_stay_strings() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ranges}
spec:
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [22:25, 80]}
"""
    (gnp,) = parse_documents(text)
    assert gnp.to_dict()["spec"]["ingress"][0]["destination"]["ports"] == ["22:25", 80]


def test_multi_document_json_array_and_empty_documents() -> None:
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": f"p{i}"},
             "spec": {"cidr": f"10.{i}.0.0/16"}} for i in range(3)]  # fmt: skip
    assert [o.name for o in parse_documents(json.dumps(docs))] == ["p0", "p1", "p2"]
    text = "---\n" + "\n---\n".join(yaml.safe_dump(d) for d in docs) + "\n---\n"
    assert [o.name for o in parse_documents(text)] == ["p0", "p1", "p2"]


def test_list_items_are_indexed_in_order() -> None:
    text = (MANIFESTS / "list.yaml").read_text().replace("asNumber: 65000", "asNumber: 0")
    with pytest.raises(ResourceError) as info:
        parse_documents(text)
    assert info.value.index == 2
    assert info.value.kind == "BGPPeer" and info.value.name == "list-peer-1"
    assert str(info.value).startswith("document 2, BGPPeer 'list-peer-1': field 'spec.asNumber': ")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ResourceError, match="invalid YAML at line 2"):
        parse_documents("kind: IPPool\n  bad: [indent\n")
