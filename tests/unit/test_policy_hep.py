"""Host endpoints: compiler output by exact comparison, incremental behaviour, evaluator semantics."""

from __future__ import annotations

from typing import Any

from felixpy.calc.policy_stage import PolicyCalc
from felixpy.dataplane.kernel_objects import Chain, Rule
from felixpy.resources.endpoint import HostEndpoint
from policy.chain_names import host_endpoint_chain, ipset_name, profile_chain
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_hep, hep_key, policy_from_doc
from policy.entities import Endpoint, Policy
from policy.evaluator import Evaluator, Flow
from policy.selector import parse

GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy"}
HOST_CHAINS = (
    "cali-from-host-endpoint", "cali-to-host-endpoint", "cali-from-hep-forward", "cali-to-hep-forward",
)  # fmt: skip
DEFAULT_ALLOW = "-j " + profile_chain("projectcalico-default-allow", "Ingress")


def hep(name: str, iface: str | None = "eth0", *, node: str = "n1", **spec: Any) -> HostEndpoint:
    body: dict[str, Any] = {"node": node, **spec}
    if iface is not None:
        body["interfaceName"] = iface
    return HostEndpoint.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "HostEndpoint",
            "metadata": {"name": name, "labels": {"role": "web"}},
            "spec": body,
        }
    )


def gnp(name: str, selector: str = "role == 'web'", **spec: Any) -> Policy:
    return policy_from_doc({**GNP, "metadata": {"name": name}, "spec": {"selector": selector, **spec}})


ALLOW_8080 = {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}]}
DENY_ALL = {"types": ["Ingress", "Egress"]}


def rules(c: PolicyCompiler, name: str) -> list[tuple[str, str]]:
    return [(r.match, r.action) for r in c.chains()[("filter", name)].rules]


def test_from_host_endpoint_chain_exact() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("h1"))
    c.update_policy(gnp("web", **ALLOW_8080))
    est = ("-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT")
    inv = ("-m conntrack --ctstate INVALID", "-j DROP")
    assert rules(c, "cali-fh-eth0") == [
        est,
        inv,
        ("", "-j cali-failsafe-in"),
        ("", "-j MARK --set-xmark 0x0/0x30000"),
        ("", "-j MARK --set-xmark 0x0/0x20000"),
        ("-m mark --mark 0x0/0x20000", "-j cali-pi-gnp/web"),
        ("-m mark --mark 0x10000/0x10000", "-j RETURN"),
        ("-m mark --mark 0x0/0x20000", "-j DROP"),
        ("", "-j DROP"),
    ]
    # No egress policy: deny all but the failsafes (Calico's default for a host endpoint).
    assert rules(c, "cali-th-eth0") == [
        est, inv, ("", "-j cali-failsafe-out"), ("", "-j MARK --set-xmark 0x0/0x30000"), ("", "-j DROP"),
    ]  # fmt: skip
    # Not applyOnForward: forwarded traffic through eth0 is not policed.
    assert rules(c, "cali-fhfw-eth0")[-2:] == [
        ("", "-j MARK --set-xmark 0x10000/0x10000"),
        ("", "-j RETURN"),
    ]
    assert rules(c, "cali-from-host-endpoint") == [("-i eth0", "-g cali-fh-eth0")]
    assert rules(c, "cali-to-host-endpoint") == [("-o eth0", "-g cali-th-eth0")]
    assert rules(c, "cali-INPUT")[-3:] == [
        ("", "-j MARK --set-xmark 0x0/0xf0000"),
        ("", "-j cali-from-host-endpoint"),
        ("-m mark --mark 0x10000/0x10000", "-j ACCEPT"),
    ]
    # Workloads never reach host endpoint chains: their goto / return comes first.
    assert rules(c, "cali-INPUT")[0] == ("-i cali+", "-g cali-wl-to-host")
    out = rules(c, "cali-OUTPUT")
    assert out.index(("-o cali+", "-j RETURN")) < out.index(("", "-j cali-to-host-endpoint"))
    assert rules(c, "cali-FORWARD") == [
        ("", "-j MARK --set-xmark 0x0/0xe0000"),
        ("-m mark --mark 0x0/0x10000", "-j cali-from-hep-forward"),
        ("-i cali+", "-j cali-from-wl-dispatch"),
        ("-o cali+", "-j cali-to-wl-dispatch"),
        ("", "-j cali-to-hep-forward"),
    ]


def test_host_endpoint_lifecycle_restores_the_static_chains() -> None:
    c = PolicyCompiler("n1")
    before = c.chains()
    c.dirty()
    c.update_endpoint(hep("h1"))
    added = c.dirty()
    assert {n for _, n in added.chains} >= {*HOST_CHAINS, "cali-fh-eth0", "cali-thfw-eth0", "cali-INPUT"}
    c.remove_endpoint(hep_key("h1"))
    removed = c.dirty()
    assert {n for _, n in removed.removed_chains} == {
        *HOST_CHAINS, "cali-fh-eth0", "cali-th-eth0", "cali-fhfw-eth0", "cali-thfw-eth0",
    }  # fmt: skip
    assert c.chains() == before


def test_wildcard_and_named_host_endpoints_dispatch() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("all", "*"))
    c.update_endpoint(hep("h1", "eth1"))
    assert rules(c, "cali-from-host-endpoint") == [
        ("-i eth1", "-g cali-fh-eth1"),
        ("", "-g cali-fh-any-interface-at-all"),
    ]
    assert rules(c, "cali-to-hep-forward") == [
        ("-o eth1", "-g cali-thfw-eth1"),
        ("", "-g " + host_endpoint_chain("*", "Egress", forward=True)),  # 30 characters: hashed
    ]
    assert host_endpoint_chain("*", "Egress", forward=True).startswith("cali-thfw-_")
    assert ("filter", "cali-th-any-interface-at-all") in c.chains()


def test_two_host_endpoints_one_interface_earliest_key_wins() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("b", profiles=["projectcalico-default-allow"]))
    c.update_endpoint(hep("a"))
    assert ("", DEFAULT_ALLOW) not in rules(c, "cali-fh-eth0")
    c.remove_endpoint(hep_key("a"))
    assert ("", DEFAULT_ALLOW) in rules(c, "cali-fh-eth0")
    allow = c.chains()[("filter", DEFAULT_ALLOW[3:])]
    assert allow.rules[0].action == "-j MARK --set-xmark 0x10000/0x10000"


def test_selection_kinds_and_tables() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("h1"))
    np_doc = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy"}
    c.update_policy(policy_from_doc({**np_doc, "metadata": {"name": "p", "namespace": "x"}, "spec": {}}))
    c.update_policy(gnp("pre", preDNAT=True, applyOnForward=True, **ALLOW_8080))
    c.update_policy(gnp("untracked", doNotTrack=True, applyOnForward=True, **ALLOW_8080))
    c.update_policy(gnp("fwd", "all()", applyOnForward=True, **ALLOW_8080))
    c.update_policy(gnp("plain", **ALLOW_8080))
    jumps = [a for _, a in rules(c, "cali-fh-eth0") if "cali-pi-" in a]
    assert jumps == ["-j cali-pi-gnp/fwd", "-j cali-pi-gnp/plain"]  # order nil: by name
    fwd_jumps = [a for _, a in rules(c, "cali-fhfw-eth0") if "cali-pi-" in a]
    assert fwd_jumps == ["-j cali-pi-gnp/fwd"]
    assert ("filter", "cali-pi-gnp/pre") not in c.chains()


def test_remote_host_endpoint_only_feeds_ipsets() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("far", "eth0", node="n2", expectedIPs=["10.0.9.9"]))
    sel = "role == 'web'"
    c.update_policy(gnp("db", "app == 'db'", ingress=[{"action": "Allow", "source": {"selector": sel}}]))
    c.update_endpoint(Endpoint("x/db", "x", {"app": "db"}, ("10.1.0.1",), iface="calidb", node="n1"))
    assert ("filter", "cali-fh-eth0") not in c.chains()
    assert ("filter", "cali-from-host-endpoint") not in c.chains()
    assert c.ipsets()[ipset_name(parse(sel).unique_id)].members == frozenset({"10.0.9.9"})


def test_policy_calc_feeds_host_endpoints() -> None:
    c = PolicyCompiler("n1")
    calc = PolicyCalc([c])
    calc.on_resource("HostEndpoint", ("", "h1"), hep("h1"))
    assert ("filter", "cali-fh-eth0") in c.chains()
    calc.on_resource("HostEndpoint", ("", "h1"), None)
    assert ("filter", "cali-fh-eth0") not in c.chains()


# ------------------------------------------------------------------------------ evaluator

H = endpoint_from_hep(hep("h1", expectedIPs=["10.0.0.1"]))
CLIENT = "10.0.0.2"


def tcp_in(port: int) -> Flow:
    return Flow(CLIENT, "10.0.0.1", "TCP", port)


def test_evaluator_host_endpoint_semantics() -> None:
    ev = Evaluator([H], [gnp("web", **ALLOW_8080)])
    assert ev.host_allows(H, "Ingress", tcp_in(8080))
    assert not ev.host_allows(H, "Ingress", tcp_in(9090))
    assert ev.host_allows(H, "Ingress", tcp_in(22))  # failsafe
    assert not ev.host_allows(H, "Egress", Flow("10.0.0.1", CLIENT, "TCP", 8080))  # no egress policy
    assert ev.host_allows(H, "Egress", Flow("10.0.0.1", CLIENT, "TCP", 2379))  # outbound failsafe
    assert ev.host_allows(H, "Ingress", Flow(CLIENT, "10.9.0.1", "TCP", 9090), forwarded=True)


def test_evaluator_no_policy_and_profiles() -> None:
    bare = Evaluator([H], [])
    assert not bare.host_allows(H, "Ingress", tcp_in(80))
    assert bare.host_allows(H, "Ingress", Flow(CLIENT, "10.0.0.1", "UDP", 68))
    assert not Evaluator([H], [], failsafe_in=()).host_allows(H, "Ingress", tcp_in(22))
    opened = endpoint_from_hep(hep("h1", profiles=["projectcalico-default-allow"]))
    assert Evaluator([opened], []).host_allows(opened, "Ingress", tcp_in(80))


def test_evaluator_forward_uses_only_apply_on_forward() -> None:
    deny_fwd = gnp("fwd", applyOnForward=True, ingress=[{"action": "Deny"}])
    ev = Evaluator([H], [deny_fwd, gnp("pre", preDNAT=True, applyOnForward=True, **ALLOW_8080)])
    assert not ev.host_allows(H, "Ingress", Flow(CLIENT, "10.9.0.1", "TCP", 8080), forwarded=True)
    assert ev.host_allows(H, "Ingress", tcp_in(22))  # failsafes beat a deny
    assert not ev.host_allows(H, "Ingress", tcp_in(8080))  # filter stage only (pre-DNAT: evaluate_hostraw)


def test_evaluator_host_endpoint_for_interface() -> None:
    star = endpoint_from_hep(hep("all", "*"))
    ev = Evaluator([H, star, endpoint_from_hep(hep("z", "eth0"))], [])
    assert ev.host_endpoint_for("eth0", "n1") == H
    assert ev.host_endpoint_for("eth7", "n1") == star
    assert ev.host_endpoint_for("cali123", "n1") is None
    assert ev.host_endpoint_for("eth0", "n2") is None


def test_workload_flows_ignore_host_endpoint_addresses() -> None:
    pod = Endpoint("x/a", "x", {"app": "a"}, ("10.1.0.1",), iface="calia", node="n1", profiles=("kns.x",))
    ev = Evaluator([H, pod], [gnp("deny", "all()", types=["Ingress"])])
    assert ev.workload_at("10.0.0.1") is None
    assert ev.allowed(Flow("10.1.0.1", "10.0.0.1", "TCP", 80))  # pod → host: not host endpoint policy
    assert not ev.allowed(Flow("10.0.0.1", "10.1.0.1", "TCP", 80))  # the GNP selects the pod too


def test_chain_type_is_plain_data() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("h1"))
    chain = c.chains()[("filter", "cali-from-host-endpoint")]
    assert chain == Chain("cali-from-host-endpoint", (Rule("-i eth0", "-g cali-fh-eth0", "From eth0"),))


def test_incremental_equals_fresh() -> None:
    """Host endpoints moving interface and node, policies changing: same chains as a fresh compile."""
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("h1"))
    c.update_endpoint(hep("h2", "eth1"))
    c.update_policy(gnp("web", **ALLOW_8080))
    c.update_policy(gnp("fwd", applyOnForward=True, egress=[{"action": "Deny"}]))
    c.update_endpoint(hep("h1", "*"))  # eth0 → all interfaces
    c.update_endpoint(hep("h2", "eth1", node="n2"))  # moves away
    c.update_policy(gnp("web", **DENY_ALL))
    c.dirty()
    fresh = PolicyCompiler("n1")
    fresh.update_policy(gnp("web", **DENY_ALL))
    fresh.update_policy(gnp("fwd", applyOnForward=True, egress=[{"action": "Deny"}]))
    fresh.update_endpoint(hep("h2", "eth1", node="n2"))
    fresh.update_endpoint(hep("h1", "*"))
    assert c.chains() == fresh.chains()
    assert ("filter", "cali-fh-eth0") not in c.chains() and ("filter", "cali-fh-eth1") not in c.chains()
    thfw = rules(c, host_endpoint_chain("*", "Egress", forward=True))
    assert ("-m mark --mark 0x0/0x20000", "-j cali-po-gnp/fwd") in thfw
