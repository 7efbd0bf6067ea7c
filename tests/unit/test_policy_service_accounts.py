"""ServiceAccounts in policy, as Calico's ``ksa.<ns>.<sa>`` profiles work: an endpoint running as a
ServiceAccount carries its labels as ``pcsa.<key>`` (and ``pcsa.projectcalico.org/name``), which a rule's
``serviceAccounts.selector`` and a policy's ``serviceAccountSelector`` select on; a label change on the
ServiceAccount re-indexes the endpoints running as it."""

from __future__ import annotations

from policy.chain_names import ipset_name
from policy.compiler import PolicyCompiler
from policy.convert import policy_from_doc
from policy.entities import Endpoint, label_view

WEB = Endpoint(
    key="x/web",
    namespace="x",
    labels={"app": "web"},
    ips=("10.0.0.1",),
    iface="caliweb",
    node="n1",
    service_account="builder",
)
DB = Endpoint(
    key="x/db",
    namespace="x",
    labels={"app": "db"},
    ips=("10.0.0.2",),
    iface="calidb",
    node="n1",
    service_account="default",
)
NO_SA = Endpoint(key="hep:h", namespace=None, labels={"app": "web"}, ips=("10.0.9.9",), node="n1", host=True)


def gnp(spec: dict) -> dict:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }


def test_label_view_carries_the_service_accounts_labels_as_pcsa() -> None:
    view = label_view(WEB, {}, {"team": "blue"})
    assert view["pcsa.team"] == "blue" and view["pcsa.projectcalico.org/name"] == "builder"
    assert view["projectcalico.org/serviceaccount"] == "builder"
    assert not any(k.startswith("pcsa.") for k in label_view(NO_SA, None, {"team": "blue"}))


def test_rule_service_accounts_selector_and_names() -> None:
    p = policy_from_doc(
        gnp(
            {
                "selector": "all()",
                "ingress": [
                    {"action": "Allow", "source": {"serviceAccounts": {"selector": "team == 'blue'"}}},
                    {
                        "action": "Allow",
                        "source": {"serviceAccounts": {"names": ["default"], "selector": "all()"}},
                    },
                ],
            }
        )
    )
    blue, named = (r.source.selector for r in p.ingress)
    assert blue is not None and named is not None
    assert blue.matches(label_view(WEB, {}, {"team": "blue"}))
    assert not blue.matches(label_view(WEB, {}, {"team": "red"}))
    assert not blue.matches(label_view(NO_SA, None)), "an endpoint with no ServiceAccount never matches"
    assert named.matches(label_view(DB, {})) and not named.matches(label_view(WEB, {}, {"team": "blue"}))


def test_policy_service_account_selector_narrows_what_the_policy_applies_to() -> None:
    p = policy_from_doc(
        gnp(
            {
                "selector": "app in {'web', 'db'}",
                "serviceAccountSelector": "team == 'blue'",
                "ingress": [{"action": "Deny"}],
            }
        )
    )
    assert p.selector.matches(label_view(WEB, {}, {"team": "blue"}))
    assert not p.selector.matches(label_view(DB, {}, {})), "db runs as a ServiceAccount without the label"
    assert not p.selector.matches(label_view(NO_SA, None))


def test_service_account_labels_change_the_selected_set() -> None:
    c = PolicyCompiler("n1")
    for ep in (WEB, DB):
        c.update_endpoint(ep)
    p = policy_from_doc(
        gnp(
            {
                "selector": "all()",
                "ingress": [
                    {"action": "Allow", "source": {"serviceAccounts": {"selector": "team == 'blue'"}}}
                ],
            }
        )
    )
    c.update_policy(p)
    sel = p.ingress[0].source.selector
    assert sel is not None
    name = ipset_name(sel.unique_id)
    assert c.dirty().ipsets[name].members == frozenset()
    c.update_service_account_labels("x", "builder", {"team": "blue"})
    assert c.dirty().ipsets[name].members == frozenset({"10.0.0.1"})
    c.update_service_account_labels("x", "default", {"team": "blue"})
    assert c.dirty().ipsets[name].members == frozenset({"10.0.0.1", "10.0.0.2"})
    c.update_service_account_labels("x", "builder", None)  # the ServiceAccount deleted
    assert c.dirty().ipsets[name].members == frozenset({"10.0.0.2"})


def test_the_reference_evaluator_sees_the_same_labels() -> None:
    from policy.evaluator import Evaluator

    ev = Evaluator([WEB, DB], [], {"x": {}}, service_accounts={("x", "builder"): {"team": "blue"}})
    assert ev.view(WEB)["pcsa.team"] == "blue" and "pcsa.team" not in ev.view(DB)
