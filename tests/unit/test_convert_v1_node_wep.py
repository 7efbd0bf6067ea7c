"""felixctl convert of Calico v1 ``node`` and ``workloadEndpoint`` (libcalico-go's upgrade converters):
name normalisation with Calico's SHA-1 suffix, the orchestrator cases, and the v3 result validating."""

from __future__ import annotations

import hashlib

import pytest

from felixpy.resources.convert import ConvertError, convert, normalize_name, qualified_name
from felixpy.resources.parse import parse_document


@pytest.mark.parametrize(
    ("v1", "v3"),
    [("node1", "node1"), ("Rack1_Host1", "rack1-host1"), ("a/b", "a.b"), ("-x.-.y-", "x.y"), ("A..B", "a.b")],
)
def test_normalize_name(v1: str, v3: str) -> None:
    assert normalize_name(v1) == v3


def test_qualified_name_adds_the_sha1_suffix_only_when_changed() -> None:
    assert qualified_name("eth0") == "eth0"
    assert qualified_name("Eth_0") == "eth-0-" + hashlib.sha1(b"Eth_0").hexdigest()[:8]


def wep(orchestrator: str, workload: str, **meta: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "workloadEndpoint",
        "metadata": {
            "name": "eth0",
            "workload": workload,
            "orchestrator": orchestrator,
            "node": "n1",
            **meta,
        },
        "spec": {"interfaceName": "cali1", "ipNetworks": ["10.1.2.3/24", "fd00::5/128"]},
    }


def test_k8s_workload_gives_namespace_pod_and_container() -> None:
    out = convert(wep("k8s", "shop.cart-1", activeInstanceID="abc"))
    assert out["metadata"]["namespace"] == "shop" and out["metadata"]["name"] == "n1-k8s-cart--1-eth0"
    assert (out["spec"]["pod"], out["spec"]["containerID"]) == ("cart-1", "abc")
    assert out["spec"]["ipNetworks"] == ["10.1.2.0/24", "fd00::5/128"]  # masked, as Calico stores them
    parse_document(out)


def test_cni_and_other_orchestrators() -> None:
    cni = convert(wep("cni", "d4f5e6"))
    assert cni["metadata"] == {"name": "n1-cni-d4f5e6-eth0", "namespace": "default"}
    assert cni["spec"]["containerID"] == "d4f5e6" and "pod" not in cni["spec"]
    lib = convert(wep("libnetwork", "anything"))
    assert lib["spec"]["workload"] == "libnetwork"
    other = convert(wep("openstack", "VM_1"))
    assert other["spec"]["workload"] == qualified_name("VM_1")
    assert other["spec"]["orchestrator"] == "openstack"
    for doc in (cni, lib, other):
        parse_document(doc)


def test_node_conversion_validates() -> None:
    out = convert({"apiVersion": "v1", "kind": "node", "metadata": {"name": "Host_A"},
                   "spec": {"bgp": {"ipv6Address": "fd00::1/64"}}})  # fmt: skip
    assert out["metadata"]["name"] == "host-a" and out["spec"]["bgp"] == {"ipv6Address": "fd00::1/64"}
    parse_document(out)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"kind": "node", "metadata": {}}, "metadata.name"),
        ({"kind": "node", "metadata": {"name": "n"}, "spec": {"bgp": {"asNumber": 1}}}, "spec.bgp"),
        ({"kind": "workloadEndpoint", "metadata": {"node": "n", "orchestrator": "k8s"}}, "metadata.workload"),
        ({"kind": "workloadEndpoint", "metadata": {"node": "n", "orchestrator": "k8s", "workload": "x"}},
         "metadata.workload"),
        ({"kind": "workloadEndpoint", "metadata": {"node": "n", "orchestrator": "cni", "workload": "x"},
          "spec": {"ipNetworks": ["nope"]}}, "spec.ipNetworks[0]"),
    ],
)  # fmt: skip
def test_bad_documents_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(ConvertError) as err:
        convert({"apiVersion": "v1", **doc})
    assert err.value.field == field
