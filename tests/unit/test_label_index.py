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
