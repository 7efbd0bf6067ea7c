"""Tiers: the Tier kind and the policy naming rule, its storage layout, and tier order and
defaultAction in the reference evaluator, the compiled chains and the agent's calc → compiler path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import PolicyInputsUpdate
from felixpy.ctl.columns import columns_for
from felixpy.datastore.kubernetes import api_path
from felixpy.datastore.resources import encode, parse_key, resource_key
from felixpy.datastore.tiers import default_tier
from felixpy.kube import convert, crds
from felixpy.resources import GlobalNetworkPolicy, ResourceError, Tier
from felixpy.resources.parse import parse_document
from felixpy.resources.registry import kind_by_name
from policy.chains import TierPolicies, tier_rules
from policy.compiler import PolicyCompiler
from policy.convert import policy_from_doc
from policy.evaluator import Evaluator, Flow
from policy.tiers import DEFAULT_TIER_ORDER, TierInfo, Tiers
from tests.fixtures.conformance_cases import DEFAULT_IPS, namespace_labels, topology
from tests.fixtures.tier_cases import TIER_CASES, TierCase
from tests.unit.test_policy_crosscheck import Cluster

V3 = "projectcalico.org/v3"
ROOT = "/calico/resources/v3/projectcalico.org/"


def tier_doc(name: str = "security", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "Tier", "metadata": {"name": name}, "spec": spec}


def policy_doc(kind: str, name: str, tier: str | None, **meta: Any) -> dict[str, Any]:
    spec = {"tier": tier} if tier is not None else {}
    return {"apiVersion": V3, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


def tier(name: str = "security", **spec: Any) -> Tier:
    obj = parse_document(tier_doc(name, **spec))
    assert isinstance(obj, Tier)
    return obj


# --------------------------------------------------------------------------- the model


def test_tier_fields_are_calicos_and_round_trip() -> None:
    t = tier(order=100, defaultAction="Pass")
    assert (t.spec.order, t.default_action) == (100, "Pass")
    assert t.to_dict() == tier_doc(order=100, defaultAction="Pass")
    bare = tier()
    assert (bare.spec.order, bare.default_action, bare.to_dict()["spec"]) == (None, "Deny", {})
    assert kind_by_name("tiers") is kind_by_name("Tier") is Tier


BAD_TIERS = [
    # (case, document, field, words in the reason)
    ("order-negative", tier_doc(order=-1), "spec.order", "greater than or equal to 0"),
    ("order-string", tier_doc(order="100"), "spec.order", "must be a number"),
    ("order-bool", tier_doc(order=True), "spec.order", "must be a number"),
    ("order-infinite", tier_doc(order=float("inf")), "spec.order", "finite"),
    ("action-allow", tier_doc(defaultAction="Allow"), "spec.defaultAction", "'Deny' or 'Pass'"),
    ("action-lower-case", tier_doc(defaultAction="pass"), "spec.defaultAction", "'Deny' or 'Pass'"),
    ("name-with-dot", tier_doc("sec.urity"), "metadata.name", "DNS-1123 label"),
    ("name-upper-case", tier_doc("Security"), "metadata.name", "DNS-1123 label"),
    ("unknown-field", tier_doc(priority=1), "spec.priority", "unknown field"),
    ("default-order-fixed", tier_doc("default", order=5), "spec.order", "fixed at 1000000"),
    ("default-action-fixed", tier_doc("default", defaultAction="Pass"), "spec.defaultAction", "at Deny"),
    ("kube-admin-order", tier_doc("kube-admin", order=7), "spec.order", "fixed at 1000"),
    ("namespaced", {**tier_doc(), "metadata": {"name": "t", "namespace": "x"}}, "metadata.namespace", "not"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "doc", "field", "words"), BAD_TIERS, ids=[c[0] for c in BAD_TIERS])
def test_bad_tier_is_refused(case: str, doc: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ResourceError) as err:
        parse_document(doc)
    assert err.value.field == field and words in err.value.reason, str(err.value)


def test_fixed_tiers_get_calicos_values_when_omitted() -> None:
    assert (tier("default").spec.order, tier("default").default_action) == (1_000_000, "Deny")
    assert (tier("kube-baseline").spec.order, tier("kube-baseline").default_action) == (10_000_000, "Pass")
    assert default_tier().to_dict()["spec"] == {"order": 1_000_000, "defaultAction": "Deny"}


NAMES = [
    # (kind, name, tier, namespace, refused?)
    ("GlobalNetworkPolicy", "security.block", "security", None, False),
    ("GlobalNetworkPolicy", "block", "security", None, True),
    ("GlobalNetworkPolicy", "platform.block", "security", None, True),
    ("GlobalNetworkPolicy", "securityblock", "security", None, True),
    ("NetworkPolicy", "security.allow", "security", "x", False),
    ("NetworkPolicy", "allow", "security", "x", True),
    ("NetworkPolicy", "allow", None, "x", False),  # default tier: bare name
    ("NetworkPolicy", "default.allow", "default", "x", False),  # default tier: prefixed name
    ("GlobalNetworkPolicy", "security.x", "Security", None, True),  # not a tier name
]


@pytest.mark.parametrize(("kind", "name", "tier_name", "ns", "refused"), NAMES)
def test_policy_names_follow_calicos_tier_prefix_rule(
    kind: str, name: str, tier_name: str | None, ns: str | None, refused: bool
) -> None:
    doc = policy_doc(kind, name, tier_name, **({"namespace": ns} if ns else {}))
    if not refused:
        assert parse_document(doc).name == name
        return
    with pytest.raises(ResourceError) as err:
        parse_document(doc)
    if tier_name == "Security":
        assert err.value.field == "spec.tier" and "DNS-1123 label" in err.value.reason
    else:
        assert err.value.field == "metadata.name"
        assert f"must be named '{tier_name}.<name>' (got '{name}')" in err.value.reason


# --------------------------------------------------------------------------- storage


def test_etcd_key_layout_is_calicos() -> None:
    assert resource_key(Tier, "security") == ROOT + "tiers/security"
    key, value = encode(tier(order=100, defaultAction="Pass"))
    assert key == ROOT + "tiers/security"
    assert json.loads(value) == tier_doc(order=100, defaultAction="Pass")
    assert parse_key(ROOT + "tiers/security") == (Tier, None, "security")
    assert parse_key(ROOT + "tiers/x/security") is None  # cluster-scoped: no namespace level


def test_kubernetes_crd_and_paths() -> None:
    crd = next(c for c in crds.all_crds() if c["metadata"]["name"] == "tiers.crd.projectcalico.org")
    assert crd["spec"]["scope"] == "Cluster" and crd["spec"]["names"]["kind"] == "Tier"
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["defaultAction"]["enum"] == ["Deny", "Pass"] and spec["order"]["type"] == "number"
    assert api_path(Tier, None, "security") == "/apis/crd.projectcalico.org/v1/tiers/security"
    stored = convert.resource_to_crd(tier(order=100))
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["spec"] == {"order": 100}
    assert convert.crd_to_resource(Tier, stored).to_dict() == tier_doc(order=100)


def test_get_tiers_columns() -> None:
    headers, cells = columns_for(Tier)
    assert headers == ["NAME", "ORDER", "DEFAULTACTION"]
    assert cells(tier(order=100, defaultAction="Pass"), {}) == ["security", "100", "Pass"]
    assert cells(tier(), {}) == ["security", "", "Deny"]


# --------------------------------------------------------------------------- the tier table and chains


def test_tier_table_orders_by_order_then_name_unordered_last() -> None:
    tiers = Tiers([TierInfo("b", 5), TierInfo("a", 5), TierInfo("late"), TierInfo("first", 0)])
    assert tiers.ordered(["late", "default", "b", "a", "first"]) == ["first", "a", "b", "default", "late"]
    assert tiers["default"] == TierInfo("default", DEFAULT_TIER_ORDER, "Deny")
    assert tiers.put(TierInfo("a", 5)) is False and tiers.remove("nope") is False
    assert tiers.remove("default") is False and "default" in tiers  # built in: cannot go away
    assert tiers.put(tier("b", order=1, defaultAction="Pass")) is True
    assert (tiers["b"].order, tiers.default_action("b")) == (1.0, "Pass")


def test_end_of_tier_drop_only_for_deny_tiers() -> None:
    deny, passing = TierPolicies("sec", ("gnp/sec.a",)), TierPolicies("plat", ("gnp/plat.b",), "Pass")
    drop = [r for r in tier_rules([deny], "Ingress") if r.action == "-j DROP"]
    assert [r.comment for r in drop] == ["End of tier sec. Drop if no policies passed packet"]
    assert not [r for r in tier_rules([passing], "Ingress") if r.action == "-j DROP"]


# --------------------------------------------------------------------------- evaluator and compiled chains


def verdicts(allowed: Any, case: TierCase) -> list[str]:
    """The (src → dst) pairs into namespace x where ``allowed(flow)`` differs from the truth table."""
    wrong = []
    for (src, dst), expected in case.netpol().truth_table()[("TCP", 80)].items():
        if src != dst and dst.startswith("x/"):
            flow = Flow(DEFAULT_IPS[src], DEFAULT_IPS[dst], "TCP", 80, src_port=40000)
            if allowed(flow) != expected:
                wrong.append(f"{src}->{dst}: expected {'allow' if expected else 'deny'}")
    return wrong


@pytest.mark.parametrize("case", TIER_CASES, ids=lambda c: c.name)
def test_evaluator_follows_tier_order_pass_and_default_action(case: TierCase) -> None:
    policies = [policy_from_doc(d) for d in case.policies]
    ev = Evaluator(topology(), policies, namespace_labels(), tiers=case.tiers)
    assert not verdicts(ev.allowed, case)


@pytest.mark.parametrize("case", TIER_CASES, ids=lambda c: c.name)
def test_compiled_chains_agree_with_the_evaluator(case: TierCase) -> None:
    nodes = {key: ("node1" if i % 2 == 0 else "node2") for i, key in enumerate(DEFAULT_IPS)}
    cluster = Cluster(topology(node_of=nodes), [], namespace_labels())
    for c in cluster.compilers.values():
        for t in case.tiers:
            c.update_tier(t)
        for d in case.policies:
            c.update_policy(policy_from_doc(d))
    assert not verdicts(cluster.allowed, case)


def test_the_same_policies_flip_with_the_tier_order() -> None:
    by_name = {c.name: c for c in TIER_CASES}
    first, swapped = by_name["tiers-order-security-first"], by_name["tiers-order-platform-first"]
    assert first.policies == swapped.policies
    assert [t.default_action for t in first.tiers] == [t.default_action for t in swapped.tiers]
    flow = Flow(DEFAULT_IPS["y/a"], DEFAULT_IPS["x/b"], "TCP", 80, src_port=40000)
    policies = [policy_from_doc(d) for d in first.policies]
    assert not Evaluator(topology(), policies, namespace_labels(), tiers=first.tiers).allowed(flow)
    assert Evaluator(topology(), policies, namespace_labels(), tiers=swapped.tiers).allowed(flow)


# --------------------------------------------------------------------------- calc → compiler (agent's path)


def tier_lines(compiler: PolicyCompiler, iface: str = "calixa") -> list[str]:
    """The tier markers in the policy list chain ``cali-tw-<iface>`` goes to."""
    chains = {name: chain for (_, name), chain in compiler.chains().items()}
    body = chains[chains[f"cali-tw-{iface}"].rules[0].action.removeprefix("-g ")]
    return [r.comment for r in body.rules if "tier" in r.comment]


DEFAULT_TIER_LINES = ["Start of tier default", "End of tier default. Drop if no policies passed packet"]
SECURITY_MISSING = [{"gnp/security.a": "security"}]


def gnp_on_a(name: str, tier_name: str) -> Any:
    doc = policy_doc("GlobalNetworkPolicy", name, tier_name)
    return parse_document({**doc, "spec": {"tier": tier_name, "selector": "pod == 'a'"}})


def missing_logged(logs: list[Any]) -> list[Any]:
    return [e["policies"] for e in logs if e["event"] == "policy.tier_missing"]


def feed(graph: CalcGraph, driver: None, kind: str, name: str, obj: Any) -> None:
    graph.on_resource(kind, ("", name), obj)
    updates = graph.flush()
    assert any(isinstance(u, PolicyInputsUpdate) and u.others for u in updates)


def test_tier_updates_flow_from_calc_to_the_compiler() -> None:
    compiler = PolicyCompiler("node1")
    graph, driver = CalcGraph("node1", policy=PolicyCalc([compiler])), None  # calc feeds the compiler
    for ep in topology():
        compiler.update_endpoint(ep)
    with capture_logs() as logs:
        feed(graph, driver, "GlobalNetworkPolicy", "security.a", gnp_on_a("security.a", "security"))
    assert compiler.policies_without_tier() == {"gnp/security.a": "security"}
    assert missing_logged(logs) == SECURITY_MISSING
    assert ("filter", "cali-pi-gnp/security.a") not in compiler.chains()  # not applied
    feed(graph, driver, "GlobalNetworkPolicy", "late", gnp_on_a("late", "default"))

    feed(graph, driver, "Tier", "security", tier(order=10))
    assert ("filter", "cali-pi-gnp/security.a") in compiler.chains()
    security = ["Start of tier security", "End of tier security. Drop if no policies passed packet"]
    assert tier_lines(compiler) == security + DEFAULT_TIER_LINES

    feed(graph, driver, "Tier", "security", tier(order=2_000_000, defaultAction="Pass"))  # after default
    assert tier_lines(compiler) == [*DEFAULT_TIER_LINES, "Start of tier security"]  # no end-of-tier drop

    with capture_logs() as logs:
        feed(graph, driver, "Tier", "security", None)  # deleted under its policy: not applied, logged
    assert tier_lines(compiler) == DEFAULT_TIER_LINES
    assert ("filter", "cali-pi-gnp/security.a") not in compiler.chains()
    assert missing_logged(logs) == SECURITY_MISSING


def test_untracked_policy_in_a_missing_tier_is_not_rendered() -> None:
    from tests.unit.test_policy_hostraw import hep, untracked

    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    c.update_policy(untracked("security.u", tier="security", ingress=[{"action": "Deny", "protocol": "UDP"}]))
    rpf_only = ["cali-PREROUTING", "cali-rpf-skip"]  # the workload anti-spoofing chains, always there
    assert sorted(k[1] for k in c.chains() if k[0] == "raw") == rpf_only
    c.update_tier(TierInfo("security", 1))
    assert ("raw", "cali-pi-gnp/security.u") in c.chains()
    c.remove_tier("security")
    assert sorted(k[1] for k in c.chains() if k[0] == "raw") == rpf_only


def test_gnp_round_trip_keeps_tier() -> None:
    obj = parse_document(policy_doc("GlobalNetworkPolicy", "security.x", "security"))
    assert isinstance(obj, GlobalNetworkPolicy) and policy_from_doc(obj.to_dict()).tier == "security"
