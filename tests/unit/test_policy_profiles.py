"""Stored Profiles in the compiler and the evaluator: rules in cali-pri-/cali-pro- chains reached only
when no policy decided, their ipsets held while referenced, labelsToApply in the selector view."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from felixpy.kube.convert import namespace_profile, service_account_profile
from felixpy.resources.k8s import Namespace, ServiceAccount
from policy.compiler import PolicyCompiler
from policy.convert import policy_from_doc, profile_from_doc, profile_from_resource
from policy.entities import Endpoint, Profile, label_view
from policy.evaluator import Evaluator, Flow
from tests.fixtures.conformance_cases import DEFAULT_IPS, namespace_labels, topology


def profile(name: str, **spec: Any) -> Profile:
    return profile_from_doc(
        {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": name}, "spec": spec}
    )


ALLOW = [{"action": "Allow"}]
PORT80 = [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]
FROM_BLUE = [{"action": "Allow", "source": {"selector": "team == 'blue'"}}]


def with_profiles(eps: list[Endpoint], key: str, *names: str) -> list[Endpoint]:
    return [replace(ep, profiles=names) if ep.key == key else ep for ep in eps]


def test_profile_rules_decide_when_no_policy_applies() -> None:
    eps = with_profiles(topology(), "x/a", "web")
    web = profile("web", ingress=PORT80, egress=ALLOW)
    ev = Evaluator(eps, [], namespace_labels(), profiles=[web])
    assert ev.allowed(Flow(DEFAULT_IPS["y/a"], DEFAULT_IPS["x/a"], "TCP", 80))
    assert not ev.allowed(Flow(DEFAULT_IPS["y/a"], DEFAULT_IPS["x/a"], "TCP", 81))
    deny = profile("web", ingress=[{"action": "Deny"}], egress=ALLOW)
    ev = Evaluator(eps, [], namespace_labels(), profiles=[deny])
    assert not ev.allowed(Flow(DEFAULT_IPS["y/a"], DEFAULT_IPS["x/a"], "TCP", 80))
    # a policy that applies decides alone: the profile is not consulted
    allow_all = policy_from_doc(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "all"},
            "spec": {"selector": "pod == 'a'", "ingress": ALLOW},
        }
    )
    ev = Evaluator(eps, [allow_all], namespace_labels(), profiles=[deny])
    assert ev.allowed(Flow(DEFAULT_IPS["y/a"], DEFAULT_IPS["x/a"], "TCP", 80))


def test_chains_and_ipsets_exist_while_a_local_endpoint_lists_the_profile() -> None:
    c = PolicyCompiler("node1")
    c.update_profile(profile("web", ingress=FROM_BLUE))
    for ep in topology():
        c.update_endpoint(ep)
    chains = c.chains()
    assert ("filter", "cali-pri-web") not in chains
    assert not any(n.startswith("cali40s:") for n in c.ipsets())
    ep = next(e for e in topology() if e.key == "x/a")
    c.update_endpoint(replace(ep, profiles=("web",)))
    chains = c.chains()
    pri = chains[("filter", "cali-pri-web")]
    assert any("--match-set" in r.match for r in pri.rules), pri
    assert ("filter", "cali-pro-web") in chains and chains[("filter", "cali-pro-web")].rules == ()
    used = {n for n in c.ipsets() if n.startswith("cali40s:")}
    assert len(used) == 1
    c.update_profile(profile("web", ingress=PORT80))  # the selector set goes with the rule using it
    assert not any(n.startswith("cali40s:") for n in c.ipsets())
    c.update_endpoint(ep)
    assert ("filter", "cali-pri-web") not in c.chains()


def test_removing_a_stored_kns_profile_falls_back_to_allow_all() -> None:
    c = PolicyCompiler("node1")
    for ep in topology():
        c.update_endpoint(ep)
    builtin = c.chains()[("filter", "cali-pri-kns.x")]
    c.update_profile(profile("kns.x", ingress=[{"action": "Deny"}]))
    assert c.chains()[("filter", "cali-pri-kns.x")].rules[0].action == "-j DROP"
    c.remove_profile("kns.x")
    assert c.chains()[("filter", "cali-pri-kns.x")] == builtin


def test_labels_to_apply_join_the_view_and_own_labels_win() -> None:
    ep = replace(topology()[0], labels={"pod": "a", "team": "red"}, profiles=("p1", "p2"))
    p1 = profile("p1", labelsToApply={"team": "blue", "tier": "web"})
    p2 = profile("p2", labelsToApply={"tier": "db", "zone": "1"})
    view = label_view(ep, None, None, [p1.labels, p2.labels])
    assert view["team"] == "red" and view["tier"] == "web" and view["zone"] == "1"


def test_labels_to_apply_change_policy_selection_in_the_compiler() -> None:
    gnp = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "blue"},
        "spec": {"selector": "team == 'blue'", "ingress": ALLOW},
    }
    c = PolicyCompiler("node1")
    eps = with_profiles(topology(), "x/a", "kns.x", "teams")
    for ep in eps:
        c.update_endpoint(ep)
    c.update_policy(policy_from_doc(gnp))
    assert not any(k[1] == "cali-pi-gnp/blue" for k in c.chains())
    c.update_profile(profile("teams", labelsToApply={"team": "blue"}))
    assert ("filter", "cali-pi-gnp/blue") in c.chains()
    c.remove_profile("teams")
    assert ("filter", "cali-pi-gnp/blue") not in c.chains()


def test_generated_kns_and_ksa_profiles_give_the_labels_the_label_view_gives() -> None:
    """Kubernetes mode's generated profiles (felixctl get profiles) carry exactly the pcns./pcsa. labels
    an endpoint's label view gets from its Namespace and ServiceAccount."""
    ns = Namespace.model_validate({"metadata": {"name": "shop", "labels": {"env": "prod"}}})
    sa = ServiceAccount.model_validate(
        {"metadata": {"name": "cart", "namespace": "shop", "labels": {"t": "1"}}}
    )
    kns, ksa = namespace_profile(ns), service_account_profile(sa)
    assert (kns.name, ksa.name) == ("kns.shop", "ksa.shop.cart")
    ep = Endpoint("shop/p", "shop", labels={"app": "p"}, service_account="cart")
    view = label_view(ep, ns.metadata.labels, sa.metadata.labels)
    generated = {**kns.spec.labels_to_apply, **ksa.spec.labels_to_apply}
    assert generated == {k: v for k, v in view.items() if k.startswith(("pcns.", "pcsa."))}
    allow = Evaluator([], [], profiles=[profile_from_resource(kns)])
    assert allow.profiles_allow(["kns.shop"], "Ingress", Flow("10.0.0.1", "10.0.0.2", "TCP", 1))
