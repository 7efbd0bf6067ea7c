"""Resource → model conversion details not visible in the truth tables."""

from __future__ import annotations

import pytest

from felixpy.resources.endpoint import WorkloadEndpoint
from policy.convert import ConversionError, endpoint_from_wep, policy_from_doc
from policy.entities import NamedPort, PortRange, label_view
from tests.fixtures.conformance_cases import calico, knp, peer, port


def test_k8s_policy_identity_order_tier_and_selector() -> None:
    p = policy_from_doc(knp("web", "prod", {"app": "web"}, ingress=[{}]))
    assert (p.id, p.tier, p.order, p.namespace) == ("knp/prod/web", "default", 1000.0, "prod")
    assert p.selector.canonical() == '(projectcalico.org/namespace == "prod" && app == "web")'
    assert p.types == {"Ingress"}


def test_k8s_policy_types_default_includes_egress_only_when_egress_rules_exist() -> None:
    assert policy_from_doc(knp("p", "x", egress=[{}])).types == {"Ingress", "Egress"}
    assert policy_from_doc(knp("p", "x", egress=[])).types == {"Ingress"}


def test_k8s_ports_grouped_by_protocol_with_ranges_and_names() -> None:
    doc = knp(
        "p", "x", ingress=[{"ports": [port(80), port("dns", "UDP"), port(8000, end=8010), port(53, "UDP")]}]
    )
    rules = policy_from_doc(doc).ingress
    assert [(r.protocol, r.destination.ports) for r in rules] == [
        (6, (PortRange(80, 80), PortRange(8000, 8010))),
        (17, ("dns", PortRange(53, 53))),
    ]


def test_k8s_one_rule_per_protocol_and_peer() -> None:
    doc = knp(
        "p", "x", egress=[{"to": [peer({"a": "1"}), peer(ns={"b": "2"})], "ports": [port(1), port(2, "UDP")]}]
    )
    rules = policy_from_doc(doc).egress
    assert len(rules) == 4
    assert rules[0].destination.selector is not None
    assert rules[0].destination.selector.canonical() == '(projectcalico.org/namespace == "x" && a == "1")'
    assert rules[1].destination.selector is not None
    assert rules[1].destination.selector.canonical() == '(has(projectcalico.org/namespace) && pcns.b == "2")'


def test_calico_namespaced_rule_selectors_are_scoped_to_the_namespace() -> None:
    spec = {
        "ingress": [
            {"action": "Allow", "source": {"selector": "a == 'b'"}},
            {"action": "Allow", "source": {"selector": "a == 'b'", "namespaceSelector": "all()"}},
            {"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}},
        ]
    }
    p = policy_from_doc(calico("NetworkPolicy", "n", spec, ns="x"))
    sels = [r.source.selector.canonical() if r.source.selector else None for r in p.ingress]
    assert sels == [
        '(projectcalico.org/namespace == "x" && a == "b")',
        '(has(projectcalico.org/namespace) && a == "b")',
        None,
    ]
    assert p.id == "np/x/n"


@pytest.mark.parametrize(
    ("ingress", "egress", "types"),
    [
        (True, False, {"Ingress"}),
        (False, True, {"Egress"}),
        (True, True, {"Ingress", "Egress"}),
        (False, False, {"Ingress"}),
    ],
)
def test_calico_types_default(ingress: bool, egress: bool, types: set[str]) -> None:
    spec = {
        "ingress": [{"action": "Allow"}] if ingress else [],
        "egress": [{"action": "Allow"}] if egress else [],
    }
    assert policy_from_doc(calico("GlobalNetworkPolicy", "g", spec)).types == types


def test_calico_ports_icmp_and_protocols() -> None:
    spec = {
        "order": 5,
        "ingress": [
            {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
            {"action": "Allow", "protocol": 6, "destination": {"ports": ["8080:8090", "http", 22]}},
        ],
    }
    p = policy_from_doc(calico("GlobalNetworkPolicy", "g", spec))
    assert p.order == 5 and p.id == "gnp/g"
    assert p.ingress[0].protocol == 1 and p.ingress[0].icmp is not None and p.ingress[0].icmp.type == 8
    assert p.ingress[1].destination.ports == (PortRange(8080, 8090), "http", PortRange(22, 22))


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "Allow", "destination": {"ports": [80]}},
        {"action": "Allow", "protocol": "ICMP", "destination": {"ports": [80]}},
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}},
        {"action": "Allow", "protocol": "BOGUS"},
        {"action": "Allow", "source": {"nets": ["not-a-cidr"]}},
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, object]) -> None:
    with pytest.raises((ConversionError, ValueError)):
        policy_from_doc(calico("GlobalNetworkPolicy", "g", {"ingress": [rule]}))


def test_endpoint_from_wep_and_label_view() -> None:
    wep = WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": "pod-eth0", "namespace": "x", "labels": {"app": "web"}},
            "spec": {
                "node": "n1",
                "interfaceName": "cali123",
                "ipNetworks": ["10.0.0.5/32"],
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                "serviceAccountName": "sa",
            },
        }
    )
    ep = endpoint_from_wep(wep)
    assert (ep.key, ep.ips, ep.iface, ep.profiles) == ("x/pod-eth0", ("10.0.0.5",), "cali123", ("kns.x",))
    assert ep.ports == (NamedPort("http", 6, 8080),)
    view = label_view(ep, {"env": "prod"})
    assert view == {
        "app": "web",
        "projectcalico.org/namespace": "x",
        "pcns.env": "prod",
        "pcns.projectcalico.org/name": "x",
        "projectcalico.org/serviceaccount": "sa",
        "pcsa.projectcalico.org/name": "sa",
    }
