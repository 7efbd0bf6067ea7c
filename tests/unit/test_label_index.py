"""policy.setindex.LabelIndex: the candidates of a selector are a superset of its matches, kept in
step with label views as they change (the compiler evaluates selectors only on them)."""

from __future__ import annotations

import itertools
import random

from policy.selector import parse, required_equalities
from policy.setindex import LabelIndex


def test_required_equalities_are_the_equality_terms_of_an_and() -> None:
    assert required_equalities(parse("app == 'a'")) == [("app", "a")]
    both = parse("app == 'a' && tier in {'x'} && has(b)")
    assert required_equalities(both) == [("app", "a"), ("tier", "x")]
    for text in ("app != 'a'", "app == 'a' || b == 'c'", "all()", "!(app == 'a')", "tier in {'x', 'y'}"):
        assert required_equalities(parse(text)) == [], text


def test_candidates_cover_every_match_as_views_change() -> None:
    rng = random.Random(15)
    index = LabelIndex()
    views: dict[str, dict[str, str]] = {}
    selectors = [
        parse(t)
        for t in (
            "app == 'a1'", "app == 'a2' && svc == 's1'", "svc == 's0' && has(app)", "app != 'a1'",
            "svc in {'s2'}", "app == 'a1' || svc == 's1'", "nope == 'x'",
        )
    ]  # fmt: skip
    for step in range(400):
        key = f"ep{rng.randrange(30)}"
        labels = (("app", f"a{rng.randrange(3)}"), ("svc", f"s{rng.randrange(3)}"))
        new = None if rng.random() < 0.2 else {k: v for k, v in labels if rng.random() < 0.8}
        index.update(key, views.get(key), new)
        if new is None:
            views.pop(key, None)
        else:
            views[key] = new
        for sel in selectors:
            matching = {k for k, v in views.items() if sel.matches(v)}
            cands = index.candidates(sel)
            assert cands is None or matching <= cands, (step, sel)
            if required_equalities(sel):
                assert cands is not None
                assert cands <= set(views), "no key that is gone"
    # emptied: nothing left behind
    for key in list(views):
        index.update(key, views.pop(key), None)
    assert all(index.candidates(s) in (None, set()) for s in selectors)
    assert list(itertools.chain(index._index)) == []


def test_compiler_selection_and_sets_match_a_full_scan_through_moves_and_relabels() -> None:
    """The compiler's label-indexed selection equals the brute-force one while endpoints change
    labels, move between this node and others, and policies come and go (start-up order first)."""
    from policy.chain_names import ipset_name
    from policy.compiler import PolicyCompiler
    from policy.entities import Endpoint, EntityMatch, Policy, PolicyRule

    rng = random.Random(7)
    c = PolicyCompiler("n1")
    eps: dict[str, Endpoint] = {}

    def endpoint(i: int) -> Endpoint:
        labels = {"app": f"a{rng.randrange(3)}", "svc": f"s{rng.randrange(2)}"}
        node = "n1" if rng.random() < 0.5 else "n2"
        return Endpoint(f"x/e{i}", "x", labels, (f"10.0.0.{i + 1}",), iface=f"cali{i}", node=node)

    def policy(j: int) -> Policy:
        rule = PolicyRule("Allow", source=EntityMatch(selector=parse(f"svc == 's{j % 2}'")))
        sel = parse(f"app == 'a{j % 3}'" if j % 4 else "has(app)")
        return Policy(id=f"gnp/p{j}", selector=sel, types=frozenset({"Ingress"}), ingress=(rule,))

    for i in range(20):  # endpoints before policies, as in a start-up snapshot
        c.update_endpoint(eps.setdefault(f"x/e{i}", endpoint(i)))
    pols = {f"gnp/p{j}": policy(j) for j in range(8)}
    for p in pols.values():
        c.update_policy(p)
    for step in range(300):
        roll = rng.random()
        if roll < 0.6:
            i = rng.randrange(25)
            ep = eps[f"x/e{i}"] = endpoint(i)
            c.update_endpoint(ep)
        elif roll < 0.75 and eps:
            key = rng.choice(sorted(eps))
            del eps[key]
            c.remove_endpoint(key)
        else:
            j = rng.randrange(10)
            if f"gnp/p{j}" in pols and rng.random() < 0.5:
                del pols[f"gnp/p{j}"]
                c.remove_policy(f"gnp/p{j}")
            else:
                c.update_policy(pols.setdefault(f"gnp/p{j}", policy(j)))
        local = {k for k, e in eps.items() if e.node == "n1"}
        for pid, p in pols.items():
            want = {k for k in local if p.selector.matches(eps[k].labels)}
            assert c._selected.get(pid, set()) == want, (step, pid)
        ipsets = c.ipsets()
        for svc in ("s0", "s1"):
            name = ipset_name(parse(f"svc == '{svc}'").unique_id)
            if name in ipsets:
                want_ips = {e.ips[0] for e in eps.values() if e.labels.get("svc") == svc}
                assert ipsets[name].members == want_ips, (step, svc)
        c.dirty()


def test_scan_strategy_and_optimized_use_felixs_names() -> None:
    """Felix's ``strategy`` label values for the three scans felixpy's index has, and its
    ``optimized`` flag: a selector with a ``key == value`` term is scanned over that value's holders."""
    from policy.setindex import optimized, scan_strategy

    assert scan_strategy(None) == "endpoint-full-scan"
    assert scan_strategy(set()) == "endpoint-no-match"
    assert scan_strategy({"x/a"}) == "endpoint-single-value"
    for text in ("app == 'a'", "app == 'a' && has(b)", "tier in {'x'}", "has(b) && app == 'a'"):
        assert optimized(parse(text)), text
    for text in ("has(app)", "app != 'a'", "app in {'a', 'b'}", "all()", "app == 'a' || b == 'c'"):
        assert not optimized(parse(text)), text


def test_a_new_selector_set_counts_one_scan_by_strategy_and_each_evaluation_by_result() -> None:
    """What felix_label_index_strategy_evals / _selector_evals count: one scan per new rule selector
    set, by the strategy that found its candidates, and the selector's evaluation on each candidate
    (endpoints and network sets), true or false. A set already in use, a CIDR list, and endpoint
    changes scan nothing, as in Felix (which counts the scans of new IP sets only)."""
    from policy.chain_names import ipset_name
    from policy.compiler import PolicyCompiler
    from policy.entities import Endpoint, EntityMatch, Policy, PolicyRule

    c = PolicyCompiler("n1")
    for name, ip, node, app in (
        ("web", "10.0.0.1", "n1", "web"), ("db", "10.0.0.2", "n1", "db"), ("web2", "10.0.1.1", "n2", "web"),
    ):  # fmt: skip
        c.update_endpoint(Endpoint(f"x/{name}", "x", {"app": app}, (ip,), iface=f"cali{name}", node=node))
    sets = c._sets

    def rule(selector: str) -> PolicyRule:
        return PolicyRule("Allow", source=EntityMatch(selector=parse(selector)))

    def policy(pid: str, *rules: PolicyRule) -> Policy:
        return Policy(id=pid, selector=parse("app == 'db'"), types=frozenset({"Ingress"}), ingress=rules)

    c.update_policy(policy("gnp/eq", rule("app == 'web'")))
    assert sets.strategy_evals == {"endpoint-single-value": 1}
    assert sets.selector_evals == {True: 2, False: 0}  # web and web2 only: db is no candidate

    c.update_policy(policy("gnp/scan", rule("has(app) && app != 'db'")))
    assert sets.strategy_evals == {"endpoint-single-value": 1, "endpoint-full-scan": 1}
    assert sets.selector_evals == {True: 4, False: 1}  # every endpoint: web, web2 true; db false

    c.update_policy(policy("gnp/none", rule("app == 'nobody'"), PolicyRule("Allow", source=EntityMatch(
        nets=("192.0.2.0/24", "198.51.100.0/24")))))  # fmt: skip
    assert sets.strategy_evals == {
        "endpoint-single-value": 1, "endpoint-full-scan": 1, "endpoint-no-match": 1,
    }  # fmt: skip
    assert sets.selector_evals == {True: 4, False: 1}  # no candidate; the CIDR set is no scan

    c.update_policy(policy("gnp/again", rule("app == 'web'")))  # a set already in use
    c.update_endpoint(Endpoint("x/web3", "x", {"app": "web"}, ("10.0.0.3",), iface="caliweb3", node="n1"))
    assert sum(sets.strategy_evals.values()) == 3 and sets.selector_evals == {True: 4, False: 1}
    members = c.ipsets()[ipset_name(parse("has(app) && app != 'db'").unique_id)].members
    assert members == {"10.0.0.1", "10.0.1.1", "10.0.0.3"}  # the counting scan filled the set right

    for pid in ("gnp/eq", "gnp/again"):
        c.remove_policy(pid)
    c.update_policy(policy("gnp/eq", rule("app == 'web'")))  # the set is new again: scanned again
    assert sets.strategy_evals["endpoint-single-value"] == 2
    assert sets.selector_evals == {True: 7, False: 1}  # web, web2, web3
