"""GlobalNetworkSet and NetworkSet enforced: rule selectors match them as Calico does, their nets join
the rule's selector ipset, and every change to a set only changes ipset members."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import ChainsUpdate, IpsetsUpdate
from felixpy.resources.base import ResourceError
from felixpy.resources.parse import parse_documents
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet
from policy.chain_names import ipset_name
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_network_set, network_set_key, policy_from_doc
from policy.entities import Endpoint
from policy.evaluator import Evaluator, Flow
from policy.selector import NAMESPACE_LABEL, parse

DB = parse("role == 'db'")
DB_SET = ipset_name(DB.unique_id)


def gns(name: str, nets: list[str], labels: dict[str, str] | None = None) -> GlobalNetworkSet:
    return GlobalNetworkSet.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkSet",
            "metadata": {"name": name, "labels": labels if labels is not None else {"role": "db"}},
            "spec": {"nets": nets},
        }
    )


def netset(ns: str, name: str, nets: list[str], labels: dict[str, str] | None = None) -> NetworkSet:
    return NetworkSet.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"role": "db"}},
            "spec": {"nets": nets},
        }
    )


def wep(ns: str, name: str, ip: str, labels: dict[str, str]) -> Endpoint:
    return Endpoint(
        key=f"{ns}/{name}",
        namespace=ns,
        labels=labels,
        ips=(ip,),
        iface=f"cali{name}",
        node="n1",
        profiles=(f"kns.{ns}",),
    )


def policy(kind: str, selector: str, *, ns: str = "prod", namespace_selector: str | None = None) -> Any:
    source: dict[str, Any] = {"selector": selector}
    if namespace_selector is not None:
        source["namespaceSelector"] = namespace_selector
    meta: dict[str, Any] = {"name": "from-db"}
    if kind == "NetworkPolicy":
        meta["namespace"] = ns
    return policy_from_doc(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": kind,
            "metadata": meta,
            "spec": {
                "selector": "app == 'api'",
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "source": source}],
            },
        }
    )


def compiler(*policies: Any) -> PolicyCompiler:
    c = PolicyCompiler("n1")
    c.update_endpoint(wep("prod", "api", "10.65.0.1", {"app": "api"}))
    for p in policies:
        c.update_policy(p)
    c.dirty()
    return c


def selector_set(c: PolicyCompiler) -> str:
    """The one selector ipset the policy under test uses."""
    names = [n for n in c.ipsets() if n.startswith("cali40s:")]
    assert len(names) == 1, names
    return names[0]


def test_global_policy_rule_gets_the_nets_of_a_matching_global_set() -> None:
    c = compiler(policy("GlobalNetworkPolicy", "role == 'db'"))
    c.update_network_set(gns("dbs", ["192.0.2.0/24", "198.51.100.7", "2001:db8::/64"]))
    c.update_network_set(gns("other", ["203.0.113.0/24"], {"role": "web"}))
    changes = c.dirty()
    assert changes.ipsets[DB_SET].members == frozenset({"192.0.2.0/24", "198.51.100.7"})
    assert changes.ipsets[DB_SET].set_type == "hash:net"
    assert changes.chains == {}  # the policy's chain already matched the set: nothing re-rendered
    v6 = PolicyCompiler("n1", config=ChainConfig(version=6))
    v6.update_endpoint(wep("prod", "api", "fd00::1", {"app": "api"}))
    v6.update_policy(policy("GlobalNetworkPolicy", "role == 'db'"))
    v6.update_network_set(gns("dbs", ["192.0.2.0/24", "2001:db8::/64"]))
    assert v6.ipsets()[ipset_name(DB.unique_id, 6)].members == frozenset({"2001:db8::/64"})


def test_global_policy_also_sees_namespaced_sets() -> None:
    c = compiler(policy("GlobalNetworkPolicy", "role == 'db'"))
    c.update_network_set(netset("dev", "partners", ["192.0.2.0/24"]))
    assert c.dirty().ipsets[DB_SET].members == frozenset({"192.0.2.0/24"})


def test_namespaced_policy_sees_only_its_namespace_sets() -> None:
    c = compiler(policy("NetworkPolicy", "role == 'db'", ns="prod"))
    name = selector_set(c)
    c.update_network_set(netset("prod", "mine", ["192.0.2.0/24"]))
    c.update_network_set(netset("dev", "theirs", ["198.51.100.0/24"]))
    c.update_network_set(gns("global", ["203.0.113.0/24"]))
    assert c.dirty().ipsets[name].members == frozenset({"192.0.2.0/24"})


def test_namespace_selector_moves_the_scope() -> None:
    c = compiler(policy("NetworkPolicy", "role == 'db'", ns="prod", namespace_selector="env == 'dev'"))
    name = selector_set(c)
    c.update_network_set(netset("dev", "theirs", ["198.51.100.0/24"]))
    c.update_network_set(netset("prod", "mine", ["192.0.2.0/24"]))
    assert not c.dirty().ipsets.get(name, c.ipsets()[name]).members
    c.update_namespace_labels("dev", {"env": "dev"})  # the namespace's labels reach its sets
    changes = c.dirty()
    assert changes.ipsets[name].members == frozenset({"198.51.100.0/24"}) and changes.chains == {}


def test_global_namespace_selector_reaches_global_sets_only() -> None:
    c = compiler(policy("NetworkPolicy", "role == 'db'", ns="prod", namespace_selector="global()"))
    name = selector_set(c)
    c.update_network_set(netset("prod", "mine", ["192.0.2.0/24"]))
    c.update_network_set(gns("global", ["203.0.113.0/24"]))
    assert c.dirty().ipsets[name].members == frozenset({"203.0.113.0/24"})


def test_label_nets_and_delete_changes_are_incremental() -> None:
    c = compiler(policy("GlobalNetworkPolicy", "role == 'db'"))
    c.update_network_set(gns("dbs", ["192.0.2.0/24"]))
    c.dirty()
    c.update_network_set(gns("dbs", ["192.0.2.0/24", "198.51.100.0/25"]))  # nets change
    changes = c.dirty()
    assert changes.ipsets[DB_SET].members == frozenset({"192.0.2.0/24", "198.51.100.0/25"})
    assert changes.chains == {} and not changes.removed_chains and not changes.removed_ipsets
    c.update_network_set(gns("dbs", ["192.0.2.0/24"], {"role": "web"}))  # labels no longer match
    changes = c.dirty()
    assert changes.ipsets[DB_SET].members == frozenset() and changes.chains == {}
    c.update_network_set(gns("dbs", ["192.0.2.0/24"]))  # matches again
    assert c.dirty().ipsets[DB_SET].members == frozenset({"192.0.2.0/24"})
    c.remove_network_set(network_set_key(None, "dbs"))
    changes = c.dirty()
    assert changes.ipsets[DB_SET].members == frozenset() and changes.chains == {}
    assert not c.dirty()


def test_not_selector_excludes_the_nets() -> None:
    p = policy_from_doc(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "not-db"},
            "spec": {
                "selector": "app == 'api'",
                "ingress": [{"action": "Allow", "source": {"notSelector": "role == 'db'"}}],
            },
        }
    )
    c = compiler(p)
    c.update_network_set(gns("dbs", ["192.0.2.0/24"]))
    assert c.dirty().ipsets[DB_SET].members == frozenset({"192.0.2.0/24"})
    rule = next(r for r in c.chains()[("filter", "cali-pi-gnp/not-db")].rules if DB_SET in r.match)
    assert f"! --match-set {DB_SET} src" in rule.match


def test_a_set_known_before_the_policy_fills_its_ipset() -> None:
    c = PolicyCompiler("n1")
    c.update_network_set(gns("dbs", ["192.0.2.0/24"]))
    c.update_endpoint(wep("prod", "api", "10.65.0.1", {"app": "api"}))
    c.update_policy(policy("GlobalNetworkPolicy", "role == 'db'"))
    assert c.dirty().ipsets[DB_SET].members == frozenset({"192.0.2.0/24"})


def test_network_set_view_and_key() -> None:
    ep = endpoint_from_network_set(netset("prod", "partners", ["192.0.2.1"]))
    assert ep.key == "netset:prod/partners" == network_set_key("prod", "partners")
    assert ep.ips == ("192.0.2.1/32",) and ep.network_set and ep.node is None
    g = endpoint_from_network_set(gns("dbs", ["10.0.0.0/8"]))
    assert g.key == "gns:dbs" and g.namespace is None
    c = PolicyCompiler("n1")
    c.update_network_set(ep)
    assert c._views["netset:prod/partners"][NAMESPACE_LABEL] == "prod"
    assert not c.chains().get(("filter", "cali-tw-partners"))  # never enforced on


@pytest.mark.parametrize(
    ("nets", "reason"),
    [(["10.0.0.1/8"], "host bits set"), (["not-an-ip"], "not a valid"), (["10.0.0.0/33"], "")],
)
def test_nets_must_be_cidrs(nets: list[str], reason: str) -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: g}\n"
        f"spec: {{nets: {nets}}}\n"
    )
    with pytest.raises(ResourceError) as err:
        parse_documents(text)
    assert "spec.nets[0]" in str(err.value) and reason in str(err.value)


def test_evaluator_matches_addresses_in_matching_sets() -> None:
    api = wep("prod", "api", "10.65.0.1", {"app": "api"})
    sets = [endpoint_from_network_set(gns("dbs", ["192.0.2.0/24"]))]
    ev = Evaluator([api, *sets], [policy("GlobalNetworkPolicy", "role == 'db'")])
    assert ev.allowed(Flow("192.0.2.9", "10.65.0.1", "TCP", 80))
    assert not ev.allowed(Flow("198.51.100.9", "10.65.0.1", "TCP", 80))
    scoped = Evaluator([api, *sets], [policy("NetworkPolicy", "role == 'db'", ns="prod")])
    assert not scoped.allowed(Flow("192.0.2.9", "10.65.0.1", "TCP", 80))  # a global set: out of scope
    assert ev.endpoint_at("192.0.2.9") is None  # a set owns no address


def test_calc_feeds_network_sets_to_the_compilers() -> None:
    calc = PolicyCalc([PolicyCompiler("n1")])
    calc.compilers[0].update_endpoint(wep("prod", "api", "10.65.0.1", {"app": "api"}))
    calc.compilers[0].update_policy(policy("GlobalNetworkPolicy", "role == 'db'"))
    calc.flush()
    calc.on_resource("GlobalNetworkSet", ("", "dbs"), gns("dbs", ["192.0.2.0/24"]))
    calc.on_resource("NetworkSet", ("prod", "p"), netset("prod", "p", ["198.51.100.0/24"]))
    out = calc.flush()
    assert not any(isinstance(u, ChainsUpdate) for u in out)
    sets = {s.name: s for u in out if isinstance(u, IpsetsUpdate) for s in u.ipsets}
    assert sets[DB_SET].members == frozenset({"192.0.2.0/24", "198.51.100.0/24"})
    calc.on_resource("NetworkSet", ("prod", "p"), None)
    calc.on_resource("GlobalNetworkSet", ("", "dbs"), None)
    sets = {s.name: s for u in calc.flush() if isinstance(u, IpsetsUpdate) for s in u.ipsets}
    assert sets[DB_SET].members == frozenset()


def test_a_default_route_set_is_split_for_hash_net() -> None:
    """``hash:net`` refuses /0: a set holding 0.0.0.0/0 (a common "the internet" set) becomes two /1s."""
    c = compiler(policy("GlobalNetworkPolicy", "role == 'db'"))
    c.update_network_set(gns("internet", ["0.0.0.0/0"]))
    assert c.dirty().ipsets[DB_SET].members == frozenset({"0.0.0.0/1", "128.0.0.0/1"})


@pytest.mark.parametrize("written", ["192.0.2.1", "2001:db8::7", "10.0.0.0/8", " 192.0.2.2 "])
def test_nets_are_kept_as_written_and_match_as_host_routes(written: str) -> None:
    """Calico keeps a bare address in ``nets`` as written (round trip) and matches it as a /32 or /128."""
    for made in (netset("prod", "partners", [written]), gns("dbs", [written])):
        assert made.spec.nets == [written.strip()]
        assert made.to_dict()["spec"]["nets"] == [written.strip()]
        want = str(ipaddress.ip_network(written.strip()))
        assert endpoint_from_network_set(made).ips == (want,)


def test_a_bare_address_set_fills_the_ipset_as_one_host() -> None:
    c = PolicyCompiler("n1")
    c.update_network_set(gns("dbs", ["192.0.2.9", "198.51.100.0/30"]))
    c.update_endpoint(wep("prod", "api", "10.65.0.1", {"app": "api"}))
    c.update_policy(policy("GlobalNetworkPolicy", "role == 'db'"))
    assert c.dirty().ipsets[DB_SET].members == frozenset({"192.0.2.9", "198.51.100.0/30"})
