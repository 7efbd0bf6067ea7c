"""Compiler output by exact comparison, names, and incremental behaviour."""

from __future__ import annotations

from felixpy.dataplane.kernel_objects import Chain, Rule
from policy.chain_names import ipset_name, length_limited, policy_chain
from policy.chains import (
    ChainConfig,
    TierPolicies,
    dispatch_chains,
    endpoint_chain,
    isolated_endpoint_chains,
    policy_list_chain,
)
from policy.compiler import PolicyCompiler
from policy.entities import Endpoint, EntityMatch, NamedPort, Policy, PolicyRule, PortRange
from policy.rules import render_policy
from policy.selector import parse

SEL_WEB = ipset_name(parse("app == 'web'").unique_id)


def _ep(
    name: str, ip: str, *, node: str = "n1", labels: dict[str, str] | None = None, ns: str = "x"
) -> Endpoint:
    return Endpoint(
        key=f"{ns}/{name}",
        namespace=ns,
        labels=labels or {"app": name},
        ips=(ip,),
        ports=(NamedPort("http", 6, 8080),),
        iface=f"cali{name}",
        node=node,
        profiles=(f"kns.{ns}",),
    )


def _policy(
    pid: str = "gnp/p",
    *,
    selector: str = "app == 'db'",
    rules: tuple[PolicyRule, ...] = (),
    order: float | None = None,
) -> Policy:
    return Policy(id=pid, selector=parse(selector), types=frozenset({"Ingress"}), ingress=rules, order=order)


ALLOW_WEB = PolicyRule(
    "Allow",
    protocol=6,
    source=EntityMatch(selector=parse("app == 'web'")),
    destination=EntityMatch(ports=(PortRange(80, 80), PortRange(8000, 8080))),
)


def test_names_follow_calicos_length_limit() -> None:
    assert policy_chain("gnp/allow-dns", "Ingress") == "cali-pi-gnp/allow-dns"
    assert policy_chain("knp/default/allow-web", "Ingress") == "cali-pi-_l7X9Omtz7dibbh9L3Lp"
    assert len(length_limited("cali-po-", "x" * 40)) == 28
    assert length_limited("cali-tw-", "") == "cali-tw-_"


def test_allow_rule_renders_mark_then_return() -> None:
    chain, sets = render_policy(_policy(rules=(ALLOW_WEB, ALLOW_WEB)), "Ingress")
    allow = Rule(
        f"-p tcp -m set --match-set {SEL_WEB} src -m multiport --destination-ports 80,8000:8080",
        "-j MARK --set-xmark 0x10000/0x10000",
    )
    ret = Rule("-m mark --mark 0x10000/0x10000", "-j RETURN")
    first = Rule(allow.match, allow.action, "Policy gnp/p ingress")  # the chain's comment, as Calico
    assert chain == Chain("cali-pi-gnp/p", (first, ret, allow, ret))
    assert {s.name for s in sets} == {SEL_WEB}
    trimmed, _ = render_policy(_policy(rules=(ALLOW_WEB, ALLOW_WEB)), "Ingress", trim_returns=True)
    assert trimmed.rules == (first, ret, allow)  # falling off the end returns anyway (Calico drops it)


def test_annotations_comment_every_rule_of_theirs() -> None:
    rule = PolicyRule("Deny", protocol=17, comment="team=a")
    chain, _ = render_policy(_policy(rules=(rule, rule)), "Ingress")
    assert [r.comment for r in chain.rules] == ["team=a; Policy gnp/p ingress", "team=a"]


def test_deny_pass_log_and_negations() -> None:
    rules = (
        PolicyRule("Log", protocol=17),
        PolicyRule(
            "Deny", not_protocol=6, source=EntityMatch(nets=("10.0.0.0/8",), not_nets=("10.1.0.0/16",))
        ),
        PolicyRule("Pass", source=EntityMatch(not_nets=("192.0.2.0/24",), not_selector=parse("has(x)"))),
    )
    chain, sets = render_policy(_policy(rules=rules), "Ingress")
    notx = ipset_name(parse("has(x)").unique_id)
    nets = next(s for s in sets if s.name != notx)
    assert [(r.match, r.action) for r in chain.rules] == [
        ("-p udp", '-j LOG --log-prefix "calico-packet: " --log-level 5'),
        (f"! -p tcp -s 10.0.0.0/8 -m set ! --match-set {nets.name} src", "-j DROP"),
        (f"! -s 192.0.2.0/24 -m set ! --match-set {notx} src", "-j MARK --set-xmark 0x20000/0x20000"),
        ("-m mark --mark 0x20000/0x20000", "-j RETURN"),
    ]
    assert nets.static().members == frozenset({"10.1.0.0/16"})


def test_named_and_numeric_ports_are_ored_through_scratch_mark() -> None:
    rule = PolicyRule("Allow", protocol=6, destination=EntityMatch(ports=(PortRange(80, 80), "http")))
    chain, sets = render_policy(_policy(rules=(rule,)), "Ingress")
    (named,) = sets
    assert [(r.match, r.action) for r in chain.rules] == [
        ("", "-j MARK --set-xmark 0x0/0x40000"),
        ("-p tcp -m multiport --destination-ports 80", "-j MARK --set-xmark 0x40000/0x40000"),
        (f"-p tcp -m set --match-set {named.name} dst,dst", "-j MARK --set-xmark 0x40000/0x40000"),
        ("-m mark --mark 0x40000/0x40000", "-j MARK --set-xmark 0x10000/0x10000"),
        ("-m mark --mark 0x10000/0x10000", "-j RETURN"),
    ]
    assert named.name.startswith("cali40n:") and len(named.name) == 31


def test_more_than_fifteen_ports_split_into_multiport_chunks() -> None:
    ports = tuple(PortRange(p, p) for p in range(1000, 1020))
    chain, _ = render_policy(
        _policy(rules=(PolicyRule("Deny", protocol=6, destination=EntityMatch(ports=ports)),)), "Ingress"
    )
    matches = [r.match for r in chain.rules if "multiport" in r.match]
    assert len(matches) == 2
    assert matches[0].endswith(",".join(str(p) for p in range(1000, 1015)))


def test_rules_of_the_other_family_are_skipped() -> None:
    rule = PolicyRule("Allow", source=EntityMatch(nets=("2001:db8::/64",)))
    chain, _ = render_policy(_policy(rules=(rule, PolicyRule("Deny", ip_version=6))), "Ingress")
    assert chain.rules == ()


def test_endpoint_chain_layout() -> None:
    tiers = [TierPolicies("default", ("gnp/a", "gnp/b"))]
    chain = endpoint_chain("caliabc", "Egress", tiers, ["kns.x"])
    body = policy_list_chain("Egress", tiers, ["kns.x"])
    assert chain.name == "cali-fw-caliabc"
    assert [(r.match, r.action) for r in chain.rules] == [("", f"-g {body.name}")]
    assert body.name.startswith("cali-fp-") and len(body.name) == 28
    assert [(r.match, r.action) for r in body.rules] == [
        ("-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT"),
        ("-m conntrack --ctstate INVALID", "-j DROP"),
        ("", "-j MARK --set-xmark 0x0/0x30000"),
        ("-p udp -m udp --dport 4789", "-j DROP"),
        ("-p 4", "-j DROP"),
        ("", "-j MARK --set-xmark 0x0/0x20000"),
        ("-m mark --mark 0x0/0x20000", "-j cali-po-gnp/a"),
        ("-m mark --mark 0x10000/0x10000", "-j RETURN"),
        ("-m mark --mark 0x0/0x20000", "-j cali-po-gnp/b"),
        ("-m mark --mark 0x10000/0x10000", "-j RETURN"),
        ("-m mark --mark 0x0/0x20000", "-j DROP"),
        ("", "-j cali-pro-kns.x"),
        ("-m mark --mark 0x10000/0x10000", "-j RETURN"),
        ("", "-j DROP"),
    ]


def test_policy_list_chains_are_shared_by_content() -> None:
    tiers = [TierPolicies("default", ("gnp/a",))]
    a = endpoint_chain("calia", "Ingress", tiers, ["kns.x"])
    b = endpoint_chain("calib", "Ingress", tiers, ["kns.x"])
    assert a.rules[-1] == b.rules[-1]  # same policies and profiles: same list chain
    other_ns = endpoint_chain("calib", "Ingress", tiers, ["kns.y"])
    no_policy = endpoint_chain("calib", "Ingress", [], ["kns.x"])
    assert len({a.rules[-1].action, other_ns.rules[-1].action, no_policy.rules[-1].action}) == 3
    assert policy_list_chain("Ingress", tiers, ["kns.x"]).name.startswith("cali-tp-")


def test_compiler_shares_list_chains_and_drops_unused_ones() -> None:
    c = _compiler()
    c.update_endpoint(_ep("db2", "10.0.0.3", labels={"app": "db"}))
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    db, db2, web = (_list_chain(c, f"cali-tw-cali{n}") for n in ("db", "db2", "web"))
    assert db == db2 != web and any(r.action == "-j cali-pi-gnp/p" for r in db.rules)
    c.remove_policy("gnp/p")
    changes = c.dirty()
    assert ("filter", db.name) in changes.removed_chains  # web's list chain serves both db's now
    assert _list_chain(c, "cali-tw-calidb") == _list_chain(c, "cali-tw-calidb2") == web
    c.remove_endpoint("x/db")
    c.remove_endpoint("x/db2")
    c.remove_endpoint("x/web")
    changes = c.dirty()
    assert ("filter", web.name) in changes.removed_chains
    assert not any(n.startswith(("cali-tp-", "cali-fp-")) for _, n in c.chains())


def _list_chain(c: PolicyCompiler, endpoint_chain_name: str) -> Chain:
    """The policy list chain an endpoint chain goes to (its last rule)."""
    chains = c.chains()
    target = chains[("filter", endpoint_chain_name)].rules[-1].action.removeprefix("-g ")
    return chains[("filter", target)]


def test_dispatch_is_sorted_and_ends_in_drop() -> None:
    frm, to = dispatch_chains(["calib", "calia"])
    assert [(r.match, r.action) for r in frm.rules] == [
        ("-i calia", "-g cali-fw-calia"),
        ("-i calib", "-g cali-fw-calib"),
        ("", "-j DROP"),
    ]
    assert to.rules[0] == Rule("-o calia", "-g cali-tw-calia", "To calia")


def test_isolated_chains_drop_new_flows() -> None:
    tw, fw = isolated_endpoint_chains("calinew")
    assert (tw.name, fw.name) == ("cali-tw-calinew", "cali-fw-calinew")
    assert tw.rules[-1].action == "-j DROP" and "ESTABLISHED" in tw.rules[0].match


def _compiler() -> PolicyCompiler:
    c = PolicyCompiler("n1")
    c.update_endpoint(_ep("web", "10.0.0.1"))
    c.update_endpoint(_ep("db", "10.0.0.2"))
    c.update_endpoint(_ep("web2", "10.0.1.1", node="n2", labels={"app": "web"}))
    c.dirty()
    return c


def test_policy_update_touches_only_its_chains_and_sets() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    changes = c.dirty()
    body = _list_chain(c, "cali-tw-calidb")  # db's new policy list (web's is unchanged)
    assert set(changes.chains) == {
        ("filter", "cali-pi-gnp/p"),
        ("filter", "cali-tw-calidb"),
        ("filter", body.name),
    }
    assert changes.ipsets[SEL_WEB].members == frozenset({"10.0.0.1", "10.0.1.1"})
    assert not changes.removed_chains and not changes.removed_ipsets
    assert not c.dirty()


def test_policy_selecting_no_local_endpoint_costs_nothing() -> None:
    c = _compiler()
    c.update_policy(_policy(selector="app == 'nothing-here'", rules=(ALLOW_WEB,)))
    assert not c.dirty()


def test_changing_only_rules_does_not_touch_endpoint_chains() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    c.update_policy(_policy(rules=(PolicyRule("Deny"),)))
    changes = c.dirty()
    assert set(changes.chains) == {("filter", "cali-pi-gnp/p")}
    assert changes.removed_ipsets == {SEL_WEB}


def test_remove_policy_removes_chain_and_unused_sets() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    before = _list_chain(c, "cali-tw-calidb")
    c.remove_policy("gnp/p")
    changes = c.dirty()
    assert changes.removed_chains == {("filter", "cali-pi-gnp/p"), ("filter", before.name)}
    assert changes.removed_ipsets == {SEL_WEB}
    assert ("filter", "cali-tw-calidb") in changes.chains
    assert not any("cali-pi-" in r.action for r in _list_chain(c, "cali-tw-calidb").rules)


def test_shared_selector_set_survives_one_user() -> None:
    c = _compiler()
    c.update_policy(_policy("gnp/p", rules=(ALLOW_WEB,)))
    c.update_policy(_policy("gnp/q", rules=(ALLOW_WEB,), order=1))
    c.dirty()
    c.remove_policy("gnp/p")
    assert SEL_WEB not in c.dirty().removed_ipsets
    assert SEL_WEB in c.ipsets()


def test_remote_endpoint_label_change_updates_only_the_ipset() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    c.update_endpoint(_ep("web2", "10.0.1.1", node="n2", labels={"app": "other"}))
    changes = c.dirty()
    assert changes.chains == {}
    assert changes.ipsets[SEL_WEB].members == frozenset({"10.0.0.1"})


def test_local_endpoint_becoming_selected_gets_the_policy() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    c.update_endpoint(_ep("web", "10.0.0.1", labels={"app": "db"}))
    changes = c.dirty()
    assert ("filter", "cali-tw-caliweb") in changes.chains
    assert any(r.action == "-j cali-pi-gnp/p" for r in _list_chain(c, "cali-tw-caliweb").rules)
    assert changes.ipsets[SEL_WEB].members == frozenset({"10.0.1.1"})


def test_removing_the_last_local_endpoint_of_a_policy_deactivates_it() -> None:
    c = _compiler()
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    c.dirty()
    c.remove_endpoint("x/db")
    changes = c.dirty()
    assert {
        ("filter", "cali-pi-gnp/p"),
        ("filter", "cali-tw-calidb"),
        ("filter", "cali-fw-calidb"),
    } <= changes.removed_chains
    assert SEL_WEB in changes.removed_ipsets
    assert [r.match for r in changes.chains[("filter", "cali-from-wl-dispatch")].rules] == ["-i caliweb", ""]


def test_namespace_labels_feed_namespace_selectors() -> None:
    c = _compiler()
    sel = parse('(has(projectcalico.org/namespace) && pcns.env == "prod")')
    rule = PolicyRule("Allow", source=EntityMatch(selector=sel))
    c.update_policy(_policy(rules=(rule,)))
    name = ipset_name(sel.unique_id)
    assert c.dirty().ipsets[name].members == frozenset()
    c.update_namespace_labels("x", {"env": "prod"})
    assert c.dirty().ipsets[name].members == frozenset({"10.0.0.1", "10.0.0.2", "10.0.1.1"})


def test_pools_feed_nat_outgoing() -> None:
    from felixpy.resources.ippool import IPPool

    c = PolicyCompiler("n1")
    c.dirty()
    c.update_pool(
        IPPool.model_validate(
            {"metadata": {"name": "p"}, "spec": {"cidr": "10.8.0.0/16", "natOutgoing": True}}
        )
    )
    changes = c.dirty()
    assert changes.ipsets["cali40masq-ipam-pools"].members == frozenset({"10.8.0.0/16"})
    assert changes.ipsets["cali40all-ipam-pools"].members == frozenset({"10.8.0.0/16"})
    (rule,) = changes.chains[("nat", "cali-nat-outgoing")].rules
    assert (
        rule.match
        == "-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst"
    )
    assert rule.action == "-j MASQUERADE --random-fully"


def test_static_chains_and_hooks() -> None:
    c = PolicyCompiler("n1", config=ChainConfig(ipip_enabled=True))
    chains = c.chains()
    fwd = chains[("filter", "cali-FORWARD")]
    assert [(r.match, r.action) for r in fwd.rules] == [
        ("", "-j MARK --set-xmark 0x0/0xe0000"),
        ("-i cali+", "-j cali-from-wl-dispatch"),
        ("-o cali+", "-j cali-to-wl-dispatch"),
    ]
    assert (
        chains[("filter", "cali-INPUT")]
        .rules[0]
        .match.startswith("-p 4 -m set --match-set cali40all-hosts-net src")
    )
    assert {(h.table, h.chain, h.rule.action, h.position) for h in c.hooks()} >= {
        ("filter", "FORWARD", "-j cali-FORWARD", "insert"),
        ("filter", "INPUT", "-j cali-INPUT", "insert"),
        ("filter", "OUTPUT", "-j cali-OUTPUT", "insert"),
        ("nat", "POSTROUTING", "-j cali-POSTROUTING", "append"),
    }
    failsafe = chains[("filter", "cali-failsafe-in")]
    assert failsafe.rules[0].match == "-p tcp -m tcp --dport 22"
    assert len(failsafe.rules) == 9


def test_a_policy_for_a_whole_group_rewrites_its_list_chain_not_its_endpoint_chains() -> None:
    """Cost grows with the change, not with the group: every endpoint of a list chain gains the same
    policy, so that one chain is rewritten in place and none of the endpoint chains changes."""
    c = PolicyCompiler("n1")
    for n in range(20):
        c.update_endpoint(_ep(f"db{n}", f"10.0.0.{n + 1}", labels={"app": "db"}))
    c.dirty()
    before = _list_chain(c, "cali-tw-calidb0")
    c.update_policy(_policy(rules=(ALLOW_WEB,)))
    changes = c.dirty()
    assert set(changes.chains) == {("filter", "cali-pi-gnp/p"), ("filter", before.name)}
    after = _list_chain(c, "cali-tw-calidb7")
    assert after.name == before.name and any(r.action == "-j cali-pi-gnp/p" for r in after.rules)
    c.remove_policy("gnp/p")
    changes = c.dirty()
    assert set(changes.chains) == {("filter", before.name)}
    assert _list_chain(c, "cali-tw-calidb3") == before
    # an endpoint leaving the group gets a chain of its own; one joining its rules shares it
    c.update_endpoint(_ep("db0", "10.0.0.1", labels={"app": "web"}))
    c.update_policy(_policy(selector="app == 'web'", rules=(ALLOW_WEB,)))
    c.dirty()
    web = _list_chain(c, "cali-tw-calidb0")
    assert web.name != before.name and any(r.action == "-j cali-pi-gnp/p" for r in web.rules)
    c.update_endpoint(_ep("db1", "10.0.0.2", labels={"app": "web"}))
    changes = c.dirty()
    assert set(changes.chains) == {("filter", "cali-tw-calidb1")}
    assert _list_chain(c, "cali-tw-calidb1") == web


def test_remote_endpoints_without_an_address_of_the_version_change_nothing_that_version_emits() -> None:
    """Each compiler leaves out other nodes' endpoints that have no address of its IP version
    (``_inert``). Over a sequence (remote endpoints v4-only, gaining and losing an IPv6 address,
    moving to this node, removed; a local v4-only endpoint; policies added), the IPv6 and IPv4
    compilers emit exactly what a compiler that indexes every endpoint emits."""
    policies = [
        Policy(id="gnp/a", selector=parse("app == 'db'"), types=frozenset({"Ingress"}), ingress=(ALLOW_WEB,)),
        Policy(id="gnp/b", selector=parse("all()"), types=frozenset({"Ingress"}), ingress=(
            PolicyRule("Allow", protocol=6, source=EntityMatch(selector=parse("has(app)")),
                       destination=EntityMatch(ports=("http",))),)),
    ]  # fmt: skip
    steps: list[tuple[str, object]] = [
        ("ep", _ep("w1", "10.0.0.1", node="n2", labels={"app": "web"})),
        ("ep", _ep("d1", "10.0.1.1", labels={"app": "db"})),  # local, IPv4 only: v6 chains still
        ("policy", policies[0]),
        ("ep", _ep("w2", "fd00::2", node="n2", labels={"app": "web"})),
        ("policy", policies[1]),
        ("ep", _ep("w1", "fd00::1", node="n2", labels={"app": "web"})),  # gains IPv6 (loses v4)
        ("ep", _ep("w3", "10.0.0.3", node="n3", labels={"app": "web"})),
        ("ep", _ep("w1", "10.0.0.1", node="n2", labels={"app": "web"})),  # loses it again
        ("ep", _ep("w3", "10.0.0.3", node="n1", labels={"app": "web"})),  # moves here: local now
        ("remove", "x/w2"),
        ("remove", "x/w3"),
    ]
    for version in (4, 6):
        fast = PolicyCompiler("n1", config=ChainConfig(version=version))
        full = PolicyCompiler("n1", config=ChainConfig(version=version))
        full._inert = lambda ep: False  # type: ignore[method-assign]  # the reference: index everything
        for what, arg in steps:
            for c in (fast, full):
                if what == "ep":
                    c.update_endpoint(arg)  # type: ignore[arg-type]
                elif what == "policy":
                    c.update_policy(arg)  # type: ignore[arg-type]
                else:
                    c.remove_endpoint(arg)  # type: ignore[arg-type]
            assert fast.dirty() == full.dirty(), (version, what, arg)
            assert fast.chains() == full.chains() and fast.ipsets() == full.ipsets(), (version, what, arg)
    assert "x/w1" not in fast._endpoints and "x/d1" in fast._endpoints  # (the v6 one, after the loop)


def test_a_burst_of_selection_changes_leaves_right_sized_sets_and_the_same_selection() -> None:
    """Endpoints first, then policies (a start-up snapshot can come in either order): each policy's
    selection is built one key at a time and kept its grown table (2x its need at 100 keys). After
    the burst dirty() copies them right-sized; what they hold, and what is emitted, is unchanged."""
    import sys

    import policy.compiler as compiler_module
    from policy.chains import ChainConfig

    def build(compact_after: int) -> PolicyCompiler:
        old = compiler_module.COMPACT_AFTER
        compiler_module.COMPACT_AFTER = compact_after
        try:
            c = PolicyCompiler("n1", config=ChainConfig(version=4))
            for i in range(400):
                ip = f"10.0.{i // 250}.{i % 250}"
                labels = {"app": f"a{i % 4}"}
                iface = f"cali{i:05d}"
                c.update_endpoint(
                    Endpoint(key=f"ns/e{i}", namespace="ns", labels=labels, ips=(ip,), iface=iface, node="n1")
                )
            for j in range(40):
                c.update_policy(Policy(id=f"gnp/p{j}", selector=parse(f"app == 'a{j % 4}'"),
                                       types=frozenset({"Ingress"})))  # fmt: skip
            c.dirty()
            return c
        finally:
            compiler_module.COMPACT_AFTER = old

    grown, compact = build(10**9), build(1000)
    assert compact._selected == grown._selected and compact._ep_policies == grown._ep_policies
    assert all(len(s) == 100 for s in compact._selected.values())
    assert compact.chains() == grown.chains() and compact.ipsets() == grown.ipsets()
    size = lambda sets: sum(sys.getsizeof(s) for s in sets.values())  # noqa: E731
    assert all(sys.getsizeof(s) == sys.getsizeof(set(s)) for s in compact._selected.values())
    small, big = size(compact._selected), size(grown._selected)
    assert small < big * 0.6, (small, big)
