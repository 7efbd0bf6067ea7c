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
