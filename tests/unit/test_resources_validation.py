# ruff: noqa: E501  (one bad document per line reads better than wrapped tuples)
"""Bad documents: each is refused, and the error names the offending field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from felixpy.resources import IPPool, ResourceError
from felixpy.resources.fields import FieldError
from felixpy.resources.ippool import check_pool_against
from felixpy.resources.parse import parse_document, parse_documents

V3 = "projectcalico.org/v3"


def doc(kind: str, spec: dict[str, Any] | None = None, *, name: str = "x", api: str = V3,
        **meta: Any) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, **meta}}
    if spec is not None:
        out["spec"] = spec
    return out


def pool(**spec: Any) -> dict[str, Any]:
    return doc("IPPool", {"cidr": "10.0.0.0/16", **spec})


def peer(**spec: Any) -> dict[str, Any]:
    return doc("BGPPeer", {"peerIP": "10.0.0.1", "asNumber": 64512, **spec})


def gnp_rule(**rule: Any) -> dict[str, Any]:
    return doc("GlobalNetworkPolicy", {"ingress": [{"action": "Allow", **rule}]})


def wep(**spec: Any) -> dict[str, Any]:
    base = {"node": "n1", "interfaceName": "cali1234", "ipNetworks": ["10.0.0.1/32"]}
    return doc("WorkloadEndpoint", {**base, **spec}, name="n1-k8s-pod-eth0", namespace="default")


def node_bgp(**bgp: Any) -> dict[str, Any]:
    return doc("Node", {"bgp": {"ipv4Address": "10.0.0.5/24", **bgp}})


def knp(**spec: Any) -> dict[str, Any]:
    return doc("NetworkPolicy", spec, api="networking.k8s.io/v1", namespace="default")


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (case id, document, field named in the error, words expected in the reason)
    ("pool-cidr-garbage", pool(cidr="10.0.0/16"), "spec.cidr", "not a valid"),
    ("pool-cidr-host-bits", pool(cidr="10.0.0.1/16"), "spec.cidr", "host bits"),
    ("pool-cidr-v6-host-bits", pool(cidr="fd00::1/64"), "spec.cidr", "host bits"),
    ("pool-cidr-no-prefix", pool(cidr="10.0.0.0"), "spec.cidr", "prefix length"),
    ("pool-cidr-missing", doc("IPPool", {}), "spec.cidr", "required"),
    ("pool-block-too-big-v4", pool(blockSize=33), "spec.blockSize", "between 20 and 32"),
    ("pool-block-too-small-v4", pool(blockSize=19), "spec.blockSize", "between 20 and 32"),
    ("pool-block-v6-range", pool(cidr="fd00::/48", blockSize=64), "spec.blockSize", "between 116 and 128"),
    ("pool-block-larger-than-pool", pool(cidr="10.0.0.0/28", blockSize=26), "spec.blockSize", ">= 28"),
    ("pool-block-not-int", pool(blockSize="big"), "spec.blockSize", "integer"),
    ("pool-ipip-and-vxlan", pool(ipipMode="Always", vxlanMode="CrossSubnet"), "spec.vxlanMode", "both"),
    ("pool-ipip-v6", pool(cidr="fd00::/48", ipipMode="Always"), "spec.ipipMode", "IPv4"),
    ("pool-ipip-mode-unknown", pool(ipipMode="Sometimes"), "spec.ipipMode", "'Never'"),
    ("pool-link-local-v4", pool(cidr="169.254.0.0/24"), "spec.cidr", "link-local"),
    ("pool-link-local-v6", pool(cidr="fe80::/64"), "spec.cidr", "link-local"),
    ("pool-covers-link-local", pool(cidr="169.0.0.0/8"), "spec.cidr", "link-local"),
    ("pool-unknown-field", pool(natOutgoin=True), "spec.natOutgoin", "unknown field"),
    ("pool-empty-selector", pool(nodeSelector=" "), "spec.nodeSelector", "must not be empty"),
    ("pool-lb-with-workload", pool(allowedUses=["LoadBalancer", "Workload"]), "spec.allowedUses", "LoadBalancer"),
    ("top-level-unknown-field", {**pool(), "status2": {}}, "status2", "unknown field"),
    ("bad-name-uppercase", doc("IPPool", {"cidr": "10.0.0.0/16"}, name="Pool_A"), "metadata.name", "DNS-1123"),
    ("name-missing", doc("IPPool", {"cidr": "10.0.0.0/16"}, name=""), "metadata.name", "name"),
    ("bad-label-key", doc("IPPool", {"cidr": "10.0.0.0/16"}, labels={"-bad": "v"}), "metadata.labels.-bad",
     "name part"),
    ("bad-label-prefix", doc("IPPool", {"cidr": "10.0.0.0/16"}, labels={"Ex.com/a": "v"}),
     "metadata.labels.Ex.com/a", "prefix"),
    ("label-key-too-long", doc("IPPool", {"cidr": "10.0.0.0/16"}, labels={"k" * 64: "v"}),
     f"metadata.labels.{'k' * 64}", "longer than 63"),
    ("label-value-too-long", doc("IPPool", {"cidr": "10.0.0.0/16"}, labels={"k": "v" * 64}), "metadata.labels.k",
     "longer than 63"),
    ("label-value-chars", doc("IPPool", {"cidr": "10.0.0.0/16"}, labels={"k": "a b"}), "metadata.labels.k",
     "must be empty or"),
    ("namespace-on-cluster-kind", doc("IPPool", {"cidr": "10.0.0.0/16"}, namespace="default"),
     "metadata.namespace", "not namespaced"),
    ("bad-namespace", doc("NetworkPolicy", {}, namespace="Bad.NS"), "metadata.namespace", "DNS-1123 label"),
    ("peer-asn-zero", peer(asNumber=0), "spec.asNumber", "out of range"),
    ("peer-asn-too-big", peer(asNumber=4294967296), "spec.asNumber", "out of range"),
    ("peer-asn-garbage", peer(asNumber="sixty"), "spec.asNumber", "not an AS number"),
    ("peer-asn-float", peer(asNumber=1.1), "spec.asNumber", "quote asdot"),
    ("peer-asdot-half-too-big", peer(asNumber="1.70000"), "spec.asNumber", "0..65535"),
    ("peer-ip-garbage", peer(peerIP="10.0.0.300"), "spec.peerIP", "not a valid"),
    ("peer-ip-port-range", peer(peerIP="10.0.0.1:70000"), "spec.peerIP", "out of range"),
    ("peer-ip-v6-brackets-no-port", peer(peerIP="[fd00::1]"), "spec.peerIP", "[IPv6]:port"),
    ("peer-needs-asn", doc("BGPPeer", {"peerIP": "10.0.0.1"}), "spec.asNumber", "required"),
    ("peer-node-and-selector", peer(node="n1", nodeSelector="all()"), "spec.nodeSelector", "both"),
    ("peer-ip-and-selector", peer(peerSelector="rr == 'true'"), "spec.peerSelector", "both"),
    ("peer-nothing-to-peer-with", doc("BGPPeer", {"node": "n1"}), "spec.peerIP", "required"),
    ("peer-bad-node-name", peer(node="Node_1"), "spec.node", "DNS-1123"),
    ("bgpconfig-bad-asn", doc("BGPConfiguration", {"asNumber": -5}, name="default"), "spec.asNumber",
     "out of range"),
    ("bgpconfig-service-cidr", doc("BGPConfiguration", {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]},
                                   name="default"), "spec.serviceClusterIPs[0].cidr", "host bits"),
    ("node-ipv4-not-cidr", node_bgp(ipv4Address="10.0.0.5"), "spec.bgp.ipv4Address", "CIDR form"),
    ("node-ipv4-is-v6", node_bgp(ipv4Address="fd00::5/64"), "spec.bgp.ipv4Address", "not an IPv4"),
    ("node-rr-cluster-id", node_bgp(routeReflectorClusterID="cluster-1"), "spec.bgp.routeReflectorClusterID",
     "IPv4"),
    ("node-asn", node_bgp(asNumber="1.2.3"), "spec.bgp.asNumber", "not an AS number"),
    ("node-vxlan-mac", doc("Node", {"vxlanTunnelMACAddr": "zz:zz"}), "spec.vxlanTunnelMACAddr", "MAC"),
    ("rule-action", gnp_rule(action="Accept"), "spec.ingress[0].action", "'Allow'"),
    ("rule-action-missing", doc("GlobalNetworkPolicy", {"egress": [{}]}), "spec.egress[0].action", "required"),
    ("rule-port-range", gnp_rule(protocol="TCP", destination={"ports": [0]}), "spec.ingress[0].destination.ports[0]",
     "out of range"),
    ("rule-port-reversed", gnp_rule(protocol="TCP", destination={"ports": ["90:80"]}),
     "spec.ingress[0].destination.ports[0]", "must not exceed"),
    ("rule-port-name", gnp_rule(protocol="TCP", destination={"ports": ["Bad_Name"]}),
     "spec.ingress[0].destination.ports[0]", "port name"),
    ("rule-ports-need-protocol", gnp_rule(destination={"ports": [80]}), "spec.ingress[0].destination.ports",
     "TCP, UDP or SCTP"),
    ("rule-ports-icmp-protocol", gnp_rule(protocol="ICMP", source={"notPorts": [80]}),
     "spec.ingress[0].source.notPorts", "TCP, UDP or SCTP"),
    ("rule-protocol", gnp_rule(protocol="GRE"), "spec.ingress[0].protocol", "not a protocol"),
    ("rule-protocol-number", gnp_rule(protocol=256), "spec.ingress[0].protocol", "1..255"),
    ("rule-icmp-code-without-type", gnp_rule(protocol="ICMP", icmp={"code": 0}), "spec.ingress[0].icmp.code",
     "requires an ICMP type"),
    ("rule-icmp-type-range", gnp_rule(protocol="ICMP", icmp={"type": 255}), "spec.ingress[0].icmp.type", "254"),
    ("rule-icmp-without-protocol", gnp_rule(icmp={"type": 8}), "spec.ingress[0].icmp", "ICMP or ICMPv6"),
    ("rule-nets", gnp_rule(source={"nets": ["10.0.0.0/33"]}), "spec.ingress[0].source.nets[0]", "not a valid"),
    ("rule-nets-version", gnp_rule(ipVersion=4, source={"nets": ["fd00::/8"]}), "spec.ingress[0].source.nets[0]",
     "ipVersion 4"),
    ("rule-empty-selector", gnp_rule(source={"selector": ""}), "spec.ingress[0].source.selector",
     "must not be empty"),
    ("rule-unknown-field", gnp_rule(destinaton={}), "spec.ingress[0].destinaton", "unknown field"),
    ("policy-selector-type", doc("GlobalNetworkPolicy", {"selector": 5}), "spec.selector", "string"),
    ("policy-types", doc("NetworkPolicy", {"types": ["Inbound"]}, namespace="default"), "spec.types[0]",
     "'Ingress'"),
    ("wep-ip-networks", wep(ipNetworks=["10.0.0.1/24"]), "spec.ipNetworks[0]", "host bits"),
    ("wep-ip-networks-no-prefix", wep(ipNetworks=["10.0.0.1"]), "spec.ipNetworks[0]", "prefix length"),
    ("wep-interface-name", wep(interfaceName="cali-much-too-long-name"), "spec.interfaceName", "interface name"),
    ("wep-port", wep(ports=[{"name": "http", "port": 70000}]), "spec.ports[0].port", "65535"),
    ("wep-node-missing", doc("WorkloadEndpoint", {"interfaceName": "cali1"}, namespace="default"), "spec.node",
     "required"),
    ("wep-bad-name", doc("WorkloadEndpoint", {"node": "n1", "interfaceName": "cali1"}, name="n1/k8s",
                         namespace="default"), "metadata.name", "workload endpoint name"),
    ("hep-needs-interface-or-ips", doc("HostEndpoint", {"node": "n1"}), "spec.interfaceName", "required"),
    ("hep-expected-ips", doc("HostEndpoint", {"node": "n1", "expectedIPs": ["1.2.3"]}), "spec.expectedIPs[0]",
     "not a valid"),
    ("knp-ipblock", knp(ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]),
     "spec.ingress[0].from[0].ipBlock.cidr", "not a valid"),
    ("knp-port", knp(egress=[{"ports": [{"port": 0}]}]), "spec.egress[0].ports[0].port", "out of range"),
    ("knp-end-port", knp(egress=[{"ports": [{"port": 90, "endPort": 80}]}]), "spec.egress[0].ports[0].endPort",
     "below port"),
    ("knp-match-labels", knp(podSelector={"matchLabels": {"a b": "c"}}), "spec.podSelector.matchLabels.a b",
     "name part"),
    ("knp-peer-mixed", knp(ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]),
     "spec.ingress[0].from[0].ipBlock", "cannot be combined"),
    ("knp-expression-values", knp(podSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "spec.podSelector.matchExpressions[0].values", "at least one value"),
    ("felixconfig-enum", doc("FelixConfiguration", {"chainInsertMode": "Prepend"}, name="default"),
     "spec.chainInsertMode", "'Insert'"),
    ("unknown-kind", doc("IPPoolz", {}), "kind", "unknown kind"),
    ("unknown-api-version", doc("IPPool", {"cidr": "10.0.0.0/16"}, api="projectcalico.org/v2"), "apiVersion",
     "not supported"),
    ("missing-kind", {"apiVersion": V3, "metadata": {"name": "x"}}, "kind", "required"),
    ("missing-api-version", {"kind": "IPPool", "metadata": {"name": "x"}}, "apiVersion", "required"),
    ("spec-not-mapping", doc("IPPool", "10.0.0.0/16"), "spec", "mapping"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("document", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_document_names_the_field(document: dict[str, Any], field: str, words: str) -> None:
    original = copy.deepcopy(document)
    with pytest.raises(ResourceError) as info:
        parse_document(document, index=3)
    assert info.value.field == field, str(info.value)
    assert words in info.value.reason, str(info.value)
    assert info.value.index == 3
    assert f"document 3, {document.get('kind', '')}".rstrip(", ") in str(info.value)
    assert document == original  # parsing never changes its input


def test_table_is_large_enough() -> None:
    assert len(BAD) >= 40
    assert len({c[0] for c in BAD}) == len(BAD)


def test_message_shape_names_index_kind_name_and_field() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-b}
spec: {cidr: 10.1.0.0/16, blockSize: 33}
"""
    with pytest.raises(ResourceError) as info:
        parse_documents(text)
    assert str(info.value) == (
        "document 2, IPPool 'pool-b': field 'spec.blockSize': must be between 20 and 32 for IPv4"
    )


def test_not_a_mapping() -> None:
    with pytest.raises(ResourceError, match="document 1: a resource must be a mapping"):
        parse_documents("- just\n- a list\n")


@pytest.mark.parametrize(
    "name", ["node1-k8s-nginx--7d9f-eth0", "Node_1-k8s-pod-eth0", "n.example.com-k8s-p-eth0"]
)
def test_wep_names_in_calico_form_are_accepted(name: str) -> None:
    obj = parse_document({"apiVersion": V3, "kind": "WorkloadEndpoint",
                          "metadata": {"name": name, "namespace": "ns1"},
                          "spec": {"node": "n1", "interfaceName": "cali1"}})  # fmt: skip
    assert obj.name == name and obj.namespace == "ns1"


def _pool(name: str, cidr: str, block: int | None = None) -> IPPool:
    spec = {"cidr": cidr} if block is None else {"cidr": cidr, "blockSize": block}
    obj = parse_document(doc("IPPool", spec, name=name))
    assert isinstance(obj, IPPool)
    return obj


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        (("b", "10.0.128.0/17"), "spec.cidr", "overlaps IPPool 'a'"),
        (("b", "10.0.0.0/8"), "spec.cidr", "overlaps IPPool 'a'"),
        (("a", "10.1.0.0/16"), "spec.cidr", "cannot be changed"),
        (("a", "10.0.0.0/16", 28), "spec.blockSize", "cannot be changed"),
    ],
)
def test_pool_against_others(new: tuple[Any, ...], field: str, words: str) -> None:
    others = [_pool("a", "10.0.0.0/16"), _pool("v6", "fd00::/48")]
    with pytest.raises(FieldError) as info:
        check_pool_against(_pool(*new), others)
    assert info.value.field == field and words in info.value.reason


def test_pool_against_others_accepts_disjoint_and_unchanged() -> None:
    others = [_pool("a", "10.0.0.0/16"), _pool("v6", "fd00::/48")]
    check_pool_against(_pool("a", "10.0.0.0/16", 26), others)
    check_pool_against(_pool("b", "10.1.0.0/16"), others)
    check_pool_against(_pool("c", "fd01::/48"), others)
