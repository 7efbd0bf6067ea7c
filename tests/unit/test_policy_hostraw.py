"""Untracked (raw) and pre-DNAT (mangle) host endpoint policy: rendered chains by exact comparison,
their life cycle in the compiler (chains, hooks, shared ipsets), validation, and the reference."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from felixpy.dataplane.kernel_objects import Chain
from felixpy.dataplane.policy_driver import write_changes
from felixpy.resources import ResourceError
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.parse import parse_document
from policy.chain_names import ipset_name
from policy.chains import ChainConfig, hooks
from policy.compile_hostraw import (
    mangle_static_chains,
    prefilter_dispatch_chain,
    raw_static_chains,
)
from policy.compiler import PolicyCompiler
from policy.convert import endpoint_from_hep, hep_key, policy_from_doc, protocol_number
from policy.entities import Endpoint, Policy
from policy.evaluate_hostraw import exchange_allowed, prefilter_verdict
from policy.evaluator import Evaluator, Flow
from policy.selector import parse
from tests.unit.test_policy_crosscheck import Interpreter, Packet, _in_range

GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy"}
ACCEPTED = "-m mark --mark 0x10000/0x10000"
NO_PASS = "-m mark --mark 0x0/0x20000"
CLEAR_ALL = "-j MARK --set-xmark 0x0/0xf0000"
CLEAR_ACCEPT_PASS = "-j MARK --set-xmark 0x0/0x30000"
CLEAR_PASS = "-j MARK --set-xmark 0x0/0x20000"
SET_ACCEPT = "-j MARK --set-xmark 0x10000/0x10000"
ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED"
NOTRACK = "-j CT --notrack"
FROM_WL = "-m mark --mark 0x40000/0x40000"
RPF_ONLY = [  # raw cali-PREROUTING without untracked policy: the workload anti-spoofing check
    ("", CLEAR_ALL),
    ("-i cali+", "-j MARK --set-xmark 0x40000/0x40000"),
    (FROM_WL, "-j cali-rpf-skip"),
    (f"{FROM_WL} -m rpfilter --validmark --invert", "-j DROP"),
]
RPF_CHAINS = {("raw", "cali-PREROUTING"), ("raw", "cali-rpf-skip")}  # always there


def hep(name: str = "h1", iface: str = "eth0", *, node: str = "n1", labels: dict[str, str] | None = None,
        **spec: Any) -> HostEndpoint:  # fmt: skip
    return HostEndpoint.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "HostEndpoint",
            "metadata": {"name": name, "labels": labels or {"role": "edge"}},
            "spec": {"node": node, "interfaceName": iface, **spec},
        }
    )


def gnp(name: str, selector: str = "role == 'edge'", **spec: Any) -> Policy:
    return policy_from_doc({**GNP, "metadata": {"name": name}, "spec": {"selector": selector, **spec}})


def untracked(name: str, **spec: Any) -> Policy:
    return gnp(name, doNotTrack=True, applyOnForward=True, **spec)


def prednat(name: str, **spec: Any) -> Policy:
    return gnp(name, preDNAT=True, applyOnForward=True, **spec)


def tcp_rule(port: int, action: str) -> dict[str, Any]:
    return {"action": action, "protocol": "TCP", "destination": {"ports": [port]}}


TCP_IN_9090 = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [9090]}}
TCP_OUT_9090 = {"action": "Allow", "protocol": "TCP", "source": {"ports": [9090]}}
UNTRACKED_9090 = untracked("unt", ingress=[TCP_IN_9090], egress=[TCP_OUT_9090])
PREDNAT_DENY_7070 = prednat(
    "pre", ingress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [7070]}}]
)


def rules(c: PolicyCompiler, table: str, name: str) -> list[tuple[str, str]]:
    return [(r.match, r.action) for r in c.chains()[(table, name)].rules]  # type: ignore[index]


def tables(c: PolicyCompiler, *wanted: str) -> set[tuple[str, str]]:
    return {k for k in c.chains() if k[0] in wanted}


# ------------------------------------------------------------------------------ rendered chains


def test_untracked_policy_raw_chains_exact() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    c.update_policy(UNTRACKED_9090)
    assert rules(c, "raw", "cali-pi-gnp/unt") == [
        ("-p tcp -m multiport --destination-ports 9090", SET_ACCEPT),
        (ACCEPTED, NOTRACK),  # an untracked Allow: not tracked, and accepted
        (ACCEPTED, "-j RETURN"),
    ]
    assert rules(c, "raw", "cali-po-gnp/unt") == [
        ("-p tcp -m multiport --source-ports 9090", SET_ACCEPT),
        (ACCEPTED, NOTRACK),
        (ACCEPTED, "-j RETURN"),
    ]
    tiered = [
        ("", CLEAR_ACCEPT_PASS),
        ("", CLEAR_PASS),
        (NO_PASS, "-j cali-pi-gnp/unt"),
        (ACCEPTED, "-j RETURN"),
    ]
    assert rules(c, "raw", "cali-fh-eth0") == [("", "-j cali-failsafe-in"), *tiered]  # no end-of-tier drop
    assert rules(c, "raw", "cali-th-eth0") == [("", "-j cali-failsafe-out"), *[
        (m, a.replace("cali-pi-", "cali-po-")) for m, a in tiered]]  # fmt: skip
    assert rules(c, "raw", "cali-from-host-endpoint") == [("-i eth0", "-g cali-fh-eth0")]
    assert rules(c, "raw", "cali-to-host-endpoint") == [("-o eth0", "-g cali-th-eth0")]
    assert rules(c, "raw", "cali-PREROUTING") == [
        *RPF_ONLY,
        ("-m mark --mark 0x0/0x40000", "-j cali-from-host-endpoint"),  # not from a workload
        (ACCEPTED, "-j ACCEPT"),
    ]
    assert rules(c, "raw", "cali-OUTPUT") == [
        ("", CLEAR_ALL),
        ("-o cali+", "-j RETURN"),
        ("", "-j cali-to-host-endpoint"),
        (ACCEPTED, "-j ACCEPT"),
    ]
    assert tables(c, "mangle") == set()  # no pre-DNAT policy: mangle untouched
    assert ("filter", "cali-pi-gnp/unt") not in c.chains()
    assert "-j cali-pi-gnp/unt" not in {a for _, a in rules(c, "filter", "cali-fh-eth0")}


def test_raw_failsafes_accept_requests_and_the_replies_of_the_other_direction() -> None:
    cfg = ChainConfig(failsafe_in=(("tcp", 22),), failsafe_out=(("udp", 53), ("tcp", 179)))
    chains = {c.name: c for c in raw_static_chains(cfg)}
    assert all(c.table == "raw" for c in chains.values())
    assert [(r.match, r.action) for r in chains["cali-failsafe-in"].rules] == [
        ("-p tcp -m tcp --dport 22", "-j ACCEPT"),
        ("-p udp -m udp --sport 53", "-j ACCEPT"),  # the answer to the host's own DNS query
        ("-p tcp -m tcp --sport 179", "-j ACCEPT"),
    ]
    assert [(r.match, r.action) for r in chains["cali-failsafe-out"].rules] == [
        ("-p udp -m udp --dport 53", "-j ACCEPT"),
        ("-p tcp -m tcp --dport 179", "-j ACCEPT"),
        ("-p tcp -m tcp --sport 22", "-j ACCEPT"),  # the host's sshd answering
    ]
    prerouting, failsafe_in = mangle_static_chains(cfg)
    assert (failsafe_in.table, [(r.match, r.action) for r in failsafe_in.rules]) == (
        "mangle", [("-p tcp -m tcp --dport 22", "-j ACCEPT")],  # conntrack already runs: requests only
    )  # fmt: skip
    assert prerouting.table == "mangle"


def test_prednat_policy_mangle_chains_exact() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    allow = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [30080]}}
    c.update_policy(prednat("pre", ingress=[allow, {"action": "Deny"}]))
    assert rules(c, "mangle", "cali-pi-gnp/pre") == [
        ("-p tcp -m multiport --destination-ports 30080", SET_ACCEPT),
        (ACCEPTED, "-j RETURN"),  # Allow: stop pre-DNAT processing (no NOTRACK in mangle)
        ("", "-j DROP"),
    ]
    assert rules(c, "mangle", "cali-fh-eth0") == [
        ("", "-j cali-failsafe-in"),
        ("", CLEAR_ACCEPT_PASS),
        ("", CLEAR_PASS),
        (NO_PASS, "-j cali-pi-gnp/pre"),
        (ACCEPTED, "-j RETURN"),
    ]
    assert rules(c, "mangle", "cali-from-host-endpoint") == [("-i eth0", "-g cali-fh-eth0")]
    assert rules(c, "mangle", "cali-PREROUTING") == [
        (ESTABLISHED, "-j ACCEPT"),
        (ACCEPTED, "-j ACCEPT"),  # accepted by untracked policy in raw
        ("-i cali+", "-j ACCEPT"),  # workloads: pre-DNAT policy is for host endpoints
        ("", "-j cali-from-host-endpoint"),
        (ACCEPTED, "-j ACCEPT"),
    ]
    assert tables(c, "mangle") == {
        ("mangle", n)
        for n in (
            "cali-PREROUTING",
            "cali-failsafe-in",
            "cali-from-host-endpoint",
            "cali-fh-eth0",
            "cali-pi-gnp/pre",
        )
    }  # ingress only: no cali-th-, cali-to-host-endpoint or cali-po- in mangle
    assert tables(c, "raw") == RPF_CHAINS
    assert rules(c, "raw", "cali-PREROUTING") == RPF_ONLY


def test_tiers_pass_and_order_without_end_of_tier_drop() -> None:
    c = PolicyCompiler("n1", tier_orders={"security": 10})
    c.update_endpoint(hep())
    c.update_policy(untracked("b", order=20, ingress=[{"action": "Pass"}]))
    c.update_policy(untracked("a", order=10, ingress=[{"action": "Log"}]))
    deny_udp = [{"action": "Deny", "protocol": "UDP"}]
    c.update_policy(untracked("security.sec", tier="security", ingress=deny_udp))
    assert rules(c, "raw", "cali-fh-eth0") == [
        ("", "-j cali-failsafe-in"),
        ("", CLEAR_ACCEPT_PASS),
        ("", CLEAR_PASS),
        (NO_PASS, "-j cali-pi-gnp/security.sec"),
        (ACCEPTED, "-j RETURN"),
        ("", CLEAR_PASS),
        (NO_PASS, "-j cali-pi-gnp/a"),
        (ACCEPTED, "-j RETURN"),
        (NO_PASS, "-j cali-pi-gnp/b"),
        (ACCEPTED, "-j RETURN"),
    ]
    assert ("raw", "cali-th-eth0") not in c.chains()  # no egress untracked policy
    assert rules(c, "raw", "cali-to-host-endpoint") == []


def test_wildcard_host_endpoint_does_not_police_named_ones() -> None:
    chain = prefilter_dispatch_chain("untracked", "Ingress", ["*", "eth1"], ["eth0", "eth1", "*"])
    assert chain == Chain(
        "cali-from-host-endpoint",
        chain.rules,
        "raw",
    )
    assert [(r.match, r.action) for r in chain.rules] == [
        ("-i eth1", "-g cali-fh-eth1"),
        ("-i eth0", "-j RETURN"),  # a named host endpoint without untracked policy
        ("", "-g cali-fh-any-interface-at-all"),
    ]
    c = PolicyCompiler("n1")
    c.update_endpoint(hep("all", "*"))
    c.update_endpoint(hep("named", "eth0", labels={"role": "other"}))
    c.update_policy(UNTRACKED_9090)
    assert rules(c, "raw", "cali-from-host-endpoint") == [
        ("-i eth0", "-j RETURN"),
        ("", "-g cali-fh-any-interface-at-all"),
    ]


# ------------------------------------------------------------------------------ life cycle


def test_chains_and_hooks_exist_only_while_a_local_host_endpoint_has_such_policy() -> None:
    c = PolicyCompiler("n1")
    raw_hook = ("raw", "PREROUTING", "-j cali-PREROUTING", "insert")  # the workload RPF check: always
    assert [(h.table, h.chain, h.rule.action, h.position) for h in c.hooks()[len(hooks()) :]] == [raw_hook]
    c.update_policy(UNTRACKED_9090)
    c.update_policy(PREDNAT_DENY_7070)
    first = c.dirty()
    assert first.hooks is None and tables(c, "raw", "mangle") == RPF_CHAINS  # no host endpoint yet
    assert set(first.chains) >= RPF_CHAINS
    c.update_endpoint(hep("far", node="n2"))
    assert not c.dirty().hooks and tables(c, "raw", "mangle") == RPF_CHAINS  # another node's

    c.update_endpoint(hep())
    changes = c.dirty()
    assert changes.hooks is not None
    assert [(h.table, h.chain, h.rule.action, h.position) for h in changes.hooks[len(hooks()) :]] == [
        raw_hook,
        ("raw", "OUTPUT", "-j cali-OUTPUT", "insert"),
        ("mangle", "PREROUTING", "-j cali-PREROUTING", "insert"),
    ]
    assert changes.hooks[: len(hooks())] == hooks()
    assert {k for k in changes.chains if k[0] == "mangle"} == tables(c, "mangle") != set()
    assert c.dirty().hooks is None  # unchanged

    c.remove_policy(PREDNAT_DENY_7070.id)
    changes = c.dirty()
    assert changes.hooks is not None and {h.table for h in changes.hooks} == {"filter", "nat", "raw"}
    assert {k for k in changes.removed_chains if k[0] == "mangle"} == {
        ("mangle", n)
        for n in (
            "cali-PREROUTING",
            "cali-failsafe-in",
            "cali-from-host-endpoint",
            "cali-fh-eth0",
            "cali-pi-gnp/pre",
        )
    }
    assert not tables(c, "mangle") and tables(c, "raw")

    c.update_endpoint(hep(labels={"role": "other"}))  # no longer selected
    changes = c.dirty()
    assert changes.hooks == c.hooks() and len(changes.hooks) == len(hooks()) + 1
    assert tables(c, "raw", "mangle") == RPF_CHAINS and rules(c, "raw", "cali-PREROUTING") == RPF_ONLY
    assert {k[0] for k in changes.removed_chains} == {"raw"}
    assert changes.chains[("raw", "cali-PREROUTING")] == c.chains()[("raw", "cali-PREROUTING")]
    assert ("filter", "cali-fh-eth0") in c.chains()  # still a host endpoint in filter


def test_removing_the_host_endpoint_or_switching_the_policy_kind() -> None:
    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    c.update_policy(UNTRACKED_9090)
    assert ("raw", "cali-pi-gnp/unt") in c.chains()
    plain = gnp("unt", ingress=[TCP_IN_9090])  # same name, now a normal policy
    c.update_policy(plain)
    assert tables(c, "raw") == RPF_CHAINS and ("filter", "cali-pi-gnp/unt") in c.chains()
    c.update_policy(UNTRACKED_9090)
    assert tables(c, "raw") > RPF_CHAINS and ("filter", "cali-pi-gnp/unt") not in c.chains()
    c.remove_endpoint(hep_key("h1"))
    assert tables(c, "raw") == RPF_CHAINS and not any(k[0] == "filter" and "eth0" in k[1] for k in c.chains())


def test_two_host_endpoints_on_one_interface_earliest_key_wins() -> None:
    c = PolicyCompiler("n1")
    c.update_policy(untracked("unt", selector="role == 'b'", ingress=[TCP_IN_9090]))
    c.update_endpoint(hep("b", labels={"role": "b"}))
    assert ("raw", "cali-fh-eth0") in c.chains()
    c.update_endpoint(hep("a", labels={"role": "a"}))  # takes eth0 over: no untracked policy
    assert tables(c, "raw") == RPF_CHAINS
    c.remove_endpoint(hep_key("a"))
    assert ("raw", "cali-fh-eth0") in c.chains()


def test_ipsets_are_shared_with_filter_policy_and_released() -> None:
    sel = "app == 'client'"
    rule = {"action": "Allow", "source": {"selector": sel}}
    name = ipset_name(parse(sel).unique_id)
    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    c.update_endpoint(Endpoint("x/c", "x", {"app": "client"}, ("10.1.0.5",), iface="calic", node="n1"))
    c.update_policy(untracked("unt", ingress=[rule]))
    assert c.ipsets()[name].members == frozenset({"10.1.0.5"})
    assert f"--match-set {name} src" in rules(c, "raw", "cali-pi-gnp/unt")[0][0]
    c.update_policy(gnp("plain", ingress=[rule]))
    c.dirty()
    c.remove_policy("gnp/unt")
    assert name in c.ipsets()  # the filter policy still uses it
    assert c.dirty().removed_ipsets == frozenset()
    c.remove_policy("gnp/plain")
    assert c.dirty().removed_ipsets == frozenset({name})


def test_write_changes_sets_the_hooks_before_applying() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def __getattr__(self, name: str) -> Any:
            return lambda *a: self.calls.append(name)

    c = PolicyCompiler("n1")
    c.update_endpoint(hep())
    c.update_policy(UNTRACKED_9090)
    iptables, ipsets = Recorder(), Recorder()
    write_changes(c.dirty(), iptables, ipsets)
    assert iptables.calls[0] == "set_hooks" and iptables.calls[-1] == "apply"
    iptables.calls.clear()
    write_changes(c.dirty(), iptables, ipsets)
    assert "set_hooks" not in iptables.calls
    iptables.calls.clear()
    c.remove_policy(UNTRACKED_9090.id)  # raw OUTPUT's hook goes, raw PREROUTING's stays
    write_changes(c.dirty(), iptables, ipsets)
    assert iptables.calls[0] == "set_hooks"


# ------------------------------------------------------------------------------ validation


def doc(**spec: Any) -> dict[str, Any]:
    return {**GNP, "metadata": {"name": "x"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]},
            "spec.egress",
            "egress rules",
        ),
        ({"preDNAT": True, "applyOnForward": True, "types": ["Ingress", "Egress"]}, "spec.types", "Egress"),
        (
            {"preDNAT": True, "ingress": [{"action": "Deny"}]},
            "spec.applyOnForward",
            "must be true when preDNAT",
        ),
        ({"doNotTrack": True}, "spec.applyOnForward", "must be true when doNotTrack"),
        (
            {"doNotTrack": True, "preDNAT": True, "applyOnForward": True},
            "spec.preDNAT",
            "cannot both be true",
        ),
    ],
    ids=["prednat-egress-rules", "prednat-egress-type", "prednat-no-aof", "untracked-no-aof", "both"],
)
def test_validation_names_field_and_reason(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ResourceError) as info:
        parse_document(doc(**spec))
    assert info.value.field == field, str(info.value)
    assert words in info.value.reason, str(info.value)


def test_valid_untracked_and_prednat_policies_parse() -> None:
    parse_document(doc(doNotTrack=True, applyOnForward=True, egress=[{"action": "Allow"}]))
    parse_document(doc(preDNAT=True, applyOnForward=True, ingress=[{"action": "Deny"}]))


# ------------------------------------------------------------------------------ reference


H = endpoint_from_hep(hep(expectedIPs=["10.0.0.1"]))


def test_reference_prefilter_verdicts() -> None:
    ev = Evaluator([H], [UNTRACKED_9090, PREDNAT_DENY_7070])
    assert (
        prefilter_verdict(ev, H, "untracked", "Ingress", Flow("10.0.0.2", "10.0.0.1", "TCP", 9090)) == "Allow"
    )
    assert prefilter_verdict(ev, H, "untracked", "Ingress", Flow("10.0.0.2", "10.0.0.1", "TCP", 8080)) is None
    assert prefilter_verdict(ev, H, "prednat", "Ingress", Flow("10.0.0.2", "10.0.0.1", "TCP", 7070)) == "Deny"
    assert prefilter_verdict(ev, H, "prednat", "Egress", Flow("10.0.0.1", "10.0.0.2", "TCP", 7070)) is None
    deny_all = Evaluator([H], [untracked("deny", types=["Ingress", "Egress"], ingress=[{"action": "Deny"}],
                                         egress=[{"action": "Deny"}])])  # fmt: skip
    assert (
        prefilter_verdict(deny_all, H, "untracked", "Ingress", Flow("10.0.0.2", "10.0.0.1", "TCP", 22))
        is None
    )
    reply_of_dns = Flow("10.0.0.53", "10.0.0.1", "UDP", 40000, src_port=53)
    assert prefilter_verdict(deny_all, H, "untracked", "Ingress", reply_of_dns) is None  # failsafe reply


def test_reference_exchanges() -> None:
    request = Flow("10.0.0.2", "10.0.0.1", "TCP", 9090, src_port=40000)
    both = Evaluator([H], [UNTRACKED_9090])
    assert exchange_allowed(both, H, "Ingress", request)
    one_way = Evaluator(
        [H], [untracked("in", ingress=[TCP_IN_9090]), gnp("all", egress=[{"action": "Allow"}])]
    )
    assert not exchange_allowed(one_way, H, "Ingress", request)  # half a TCP connection untracked
    pre_allow = prednat(
        "pre", ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7070]}}]
    )
    dnat = Flow("10.0.0.2", "10.0.0.1", "TCP", 7070)
    ev = Evaluator([H], [pre_allow, gnp("deny", ingress=[{"action": "Deny"}])])
    assert exchange_allowed(
        ev, H, "Ingress", dnat, after_dnat=replace_port(dnat, 8080)
    )  # skips normal policy
    assert not exchange_allowed(ev, H, "Ingress", replace_port(dnat, 8080))


def replace_port(flow: Flow, port: int) -> Flow:
    return Flow(flow.src_ip, flow.dst_ip, flow.protocol, port, flow.src_port)


# ------------------------------------------------------------------------------ crosscheck


class PrefilterInterpreter(Interpreter):
    """The crosscheck's interpreter on one raw/mangle table, plus what those tables add (source
    port matches, NOTRACK)."""

    def __init__(self, c: PolicyCompiler, table: str) -> None:
        super().__init__(
            {("filter", n): ch for (t, n), ch in c.chains().items() if t == table}, c.ipsets(), ()
        )
        self.table, self.table_hooks = table, [h for h in c.hooks() if h.table == table]
        self.untracked = False

    def _option(self, opt: str, arg: str, pkt: Packet) -> bool:
        if opt == "--sport":
            return pkt.sport is not None and _in_range(pkt.sport, arg)
        return super()._option(opt, arg, pkt)

    def _act(self, action: str, pkt: Packet) -> str | None:
        if action == NOTRACK:
            self.untracked = True
            return None
        return super()._act(action, pkt)

    def verdict(self, kernel_chain: str, pkt: Packet) -> str | None:
        """Allow (accepted on the accept mark), Deny (dropped), None (left to later tables)."""
        self.untracked, pkt.mark = False, 0
        result = self._run_rules([h.rule for h in self.table_hooks if h.chain == kernel_chain], pkt)
        if result == "DROP":
            return "Deny"
        accepted = result == "ACCEPT" and bool(pkt.mark & 0x10000)
        if self.table == "raw":
            assert accepted == self.untracked  # every untracked accept is also a NOTRACK
        return "Allow" if accepted else None


PORTS = (22, 53, 68, 80, 179, 7070, 9090)
POLICY_SETS = {
    "untracked-tiers": [
        untracked("a", order=1, ingress=[tcp_rule(80, "Deny"), {"action": "Pass", "protocol": "UDP"}],
                  egress=[{"action": "Allow", "protocol": "TCP", "source": {"ports": [80]}}]),
        untracked("b", order=2, ingress=[tcp_rule(9090, "Allow"), {"action": "Deny", "protocol": "UDP"}]),
        untracked("security.sec", tier="security", ingress=[{"action": "Allow", "protocol": "UDP",
                  "destination": {"ports": [53]}}], egress=[{"action": "Deny", "protocol": "UDP"}]),
    ],
    "untracked-deny-all": [untracked("all", types=["Ingress", "Egress"], ingress=[{"action": "Deny"}],
                                     egress=[{"action": "Deny"}])],
    "prednat": [
        prednat("p1", order=1, ingress=[tcp_rule(7070, "Allow"), {"action": "Pass", "protocol": "TCP"}]),
        prednat("p2", order=2, ingress=[{"action": "Deny"}]),
        prednat("security.p3", tier="security", ingress=[tcp_rule(9090, "Deny"), {"action": "Log"}]),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(POLICY_SETS))
def test_compiled_prefilter_chains_agree_with_the_reference(name: str) -> None:
    policies = POLICY_SETS[name]
    c = PolicyCompiler("n1", tier_orders={"security": 10})
    c.update_endpoint(hep(expectedIPs=["10.0.0.1"]))
    for p in policies:
        c.update_policy(p)
    ev = Evaluator([H], policies, tier_orders={"security": 10})
    checked = 0
    for kind, table in (("untracked", "raw"), ("prednat", "mangle")):
        if table not in {h.table for h in c.hooks()}:
            flows = [Flow("10.0.0.2", "10.0.0.1", "TCP", p) for p in PORTS]
            assert all(prefilter_verdict(ev, H, kind, "Ingress", f) is None for f in flows)
            continue
        interp = PrefilterInterpreter(c, table)
        for proto, dport, sport in itertools.product(("TCP", "UDP"), PORTS, (40000, *PORTS)):
            inbound = Flow("10.0.0.2", "10.0.0.1", proto, dport, src_port=sport)
            pkt = Packet("10.0.0.2", "10.0.0.1", protocol_number(proto) or 0, sport, dport, "eth0", "")
            assert interp.verdict("PREROUTING", pkt) == prefilter_verdict(ev, H, kind, "Ingress", inbound), (
                inbound
            )
            other = Packet("10.0.0.2", "10.0.0.1", protocol_number(proto) or 0, sport, dport, "eth1", "")
            assert interp.verdict("PREROUTING", other) is None  # not a host endpoint's interface
            if table == "raw":
                outbound = Flow("10.0.0.1", "10.0.0.2", proto, dport, src_port=sport)
                pkt = Packet("10.0.0.1", "10.0.0.2", protocol_number(proto) or 0, sport, dport, "", "eth0")
                assert interp.verdict("OUTPUT", pkt) == prefilter_verdict(ev, H, kind, "Egress", outbound), (
                    outbound
                )
            checked += 1
    assert checked >= 2 * len(PORTS) * (len(PORTS) + 1)


def test_ipv6_compiler_renders_the_same_tables_for_its_family() -> None:
    c = PolicyCompiler("n1", config=ChainConfig(version=6))
    c.update_endpoint(hep(expectedIPs=["fd00::1"]))
    v4_only = {"action": "Deny", "source": {"nets": ["10.0.0.0/8"]}}
    c.update_policy(untracked("unt", ingress=[v4_only, TCP_IN_9090]))
    assert rules(c, "raw", "cali-pi-gnp/unt") == [
        ("-p tcp -m multiport --destination-ports 9090", SET_ACCEPT),
        (ACCEPTED, NOTRACK),
        (ACCEPTED, "-j RETURN"),
    ]
    assert {h.table for h in c.hooks()} == {"filter", "nat", "raw"}
