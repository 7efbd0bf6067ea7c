"""Calico selector grammar: parsing, canonical form, matching, errors with positions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felixpy.resources.k8s import LabelSelector, LabelSelectorRequirement
from policy.convert import from_label_selector
from policy.selector import (
    And,
    Compare,
    Has,
    In,
    Not,
    Or,
    Selector,
    SelectorError,
    and_,
    map_labels,
    parse,
)

LABELS = {"app": "web", "tier": "front-end", "env": "prod", "a/b.c": "x", "quote": 'say "hi"'}

# (selector, expected canonical form, does it match LABELS)
VALID: list[tuple[str, str, bool]] = [
    ("", "all()", True),
    ("   ", "all()", True),
    ("all()", "all()", True),
    ("all( )", "all()", True),
    ("global()", "global()", True),
    ("app == 'web'", 'app == "web"', True),
    ('app=="web"', 'app == "web"', True),
    ('app == "db"', 'app == "db"', False),
    ('missing == ""', 'missing == ""', False),
    ('app != "db"', 'app != "db"', True),
    ('app != "web"', 'app != "web"', False),
    ('missing != "x"', 'missing != "x"', True),
    ('app in {"web", "db"}', 'app in {"db", "web"}', True),
    ('app in {"db"}', 'app in {"db"}', False),
    ("app in {}", "app in {}", False),
    ('app in {"b","a","b"}', 'app in {"a", "b"}', False),
    ('missing in {"x"}', 'missing in {"x"}', False),
    ('app not in {"db"}', 'app not in {"db"}', True),
    ('app notin {"web"}', 'app not in {"web"}', False),
    ('missing not in {"x"}', 'missing not in {"x"}', True),
    ('tier contains "end"', 'tier contains "end"', True),
    ('tier contains "back"', 'tier contains "back"', False),
    ('tier starts with "front"', 'tier starts with "front"', True),
    ('tier startswith "end"', 'tier starts with "end"', False),
    ('tier ends with "end"', 'tier ends with "end"', True),
    ('tier endswith "front"', 'tier ends with "front"', False),
    ('missing contains ""', 'missing contains ""', False),
    ("has(app)", "has(app)", True),
    ("has( app )", "has(app)", True),
    ("has(missing)", "has(missing)", False),
    ("!has(missing)", "!has(missing)", True),
    ("! has(app)", "!has(app)", False),
    ("!!has(app)", "!!has(app)", True),
    ('has(a/b.c) && a/b.c == "x"', '(has(a/b.c) && a/b.c == "x")', True),
    ("quote == 'say \"hi\"'", "quote == 'say \"hi\"'", True),
    ('app == "web" && env == "prod"', '(app == "web" && env == "prod")', True),
    ('app == "web" && env == "dev"', '(app == "web" && env == "dev")', False),
    ('app == "db" || env == "prod"', '(app == "db" || env == "prod")', True),
    ('app == "db" || env == "dev"', '(app == "db" || env == "dev")', False),
    ("has(a) && has(b) && has(c)", "(has(a) && has(b) && has(c))", False),
    ("has(a) || has(b) || has(app)", "(has(a) || has(b) || has(app))", True),
    # && binds tighter than ||
    ('app == "db" && env == "dev" || has(app)', '((app == "db" && env == "dev") || has(app))', True),
    ('has(app) || app == "db" && env == "dev"', '(has(app) || (app == "db" && env == "dev"))', True),
    ('(has(app) || app == "db") && env == "dev"', '((has(app) || app == "db") && env == "dev")', False),
    ("!has(app) || has(env)", "(!has(app) || has(env))", True),
    ("!(has(app) && has(env))", "!(has(app) && has(env))", False),
    ("((has(app)))", "has(app)", True),
    ("all() && has(app)", "(all() && has(app))", True),
    ("global() || has(app)", "(global() || has(app))", True),
    # keywords are only keywords where an operator or function may stand
    ('in == "x"', 'in == "x"', False),
    ('has == "x"', 'has == "x"', False),
    ('not in {"x"}', 'not in {"x"}', False),
    ("has(has)", "has(has)", False),
    ("a-b_c.d/e == 'f'", 'a-b_c.d/e == "f"', False),
]

# (selector, position of the error, part of the message)
INVALID: list[tuple[str, int, str]] = [
    ("a == ", 5, "expected a quoted string"),
    ("a ==", 4, "expected a quoted string"),
    ("a", 1, "expected an operator"),
    ("a = 'b'", 2, "unexpected character '='"),
    ("a === 'b'", 4, "unexpected character '='"),
    ("a == b", 5, "expected a quoted string"),
    ("a == 'b", 5, "unterminated string"),
    ("a == \"b'", 5, "unterminated string"),
    ("a in 'b'", 5, "expected '{'"),
    ("a in {'b'", 9, "expected ',' or '}'"),
    ("a in {'b' 'c'}", 10, "expected ',' or '}'"),
    ("a in {'b',}", 10, "expected a quoted string"),
    ("a in {b}", 6, "expected a quoted string"),
    ("a not {'b'}", 2, "expected an operator"),
    ("a starts 'b'", 2, "expected an operator"),
    ("a ends", 2, "expected an operator"),
    ("has(a", 5, "expected ')'"),
    ("has()", 4, "expected a label"),
    ("has(a b)", 6, "expected ')'"),
    ("all(x)", 4, "expected ')'"),
    ("global(", 7, "expected ')'"),
    ("(has(a)", 7, "expected ')'"),
    ("has(a))", 6, "expected '&&', '||' or end of selector"),
    ("has(a) has(b)", 7, "expected '&&', '||' or end of selector"),
    ("&& has(a)", 0, "expected a label"),
    ("has(a) &&", 9, "expected a label"),
    ("has(a) || ", 10, "expected a label"),
    ("has(a) & has(b)", 7, "unexpected character '&'"),
    ("has(a) | has(b)", 7, "unexpected character '|'"),
    ("!", 1, "expected a label"),
    ("()", 1, "expected a label"),
    ("a == 'x' &&& b", 11, "unexpected character '&'"),
    ("a ~ 'x'", 2, "unexpected character '~'"),
    ("{", 0, "expected a label"),
    ("a == 'x' ||| has(b)", 11, "unexpected character '|'"),
]


@pytest.mark.parametrize(("text", "canonical", "match"), VALID)
def test_valid_selector_canonical_form_and_match(text: str, canonical: str, match: bool) -> None:
    sel = parse(text)
    assert sel.canonical() == canonical
    assert str(sel) == canonical
    assert sel.matches(LABELS) is match
    assert parse(canonical) == sel


@pytest.mark.parametrize(("text", "position", "message"), INVALID)
def test_invalid_selector_reports_position(text: str, position: int, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse(text)
    assert err.value.position == position
    assert message in str(err.value)
    assert str(err.value).startswith(f"selector {text!r} at position {position}: ")


def test_error_message_matches_documented_form() -> None:
    with pytest.raises(SelectorError, match=r"^selector 'a == ' at position 5: expected a quoted string$"):
        parse("a == ")


def test_label_longer_than_512_chars_is_refused() -> None:
    with pytest.raises(SelectorError) as err:
        parse("x" * 513 + " == 'a'")
    assert err.value.position == 0
    assert parse("x" * 512 + " == 'a'").matches({"x" * 512: "a"})


def test_parse_is_cached_by_text() -> None:
    assert parse("has(cached)") is parse("has(cached)")


def test_unique_id_is_calicos_ipset_id() -> None:
    # Computed value from reference 2.12: selector app == "frontend" -> cali40s:NgAztXgCjQllj3pd-bE8lGi
    assert ("cali40" + parse("app == 'frontend'").unique_id)[:31] == "cali40s:NgAztXgCjQllj3pd-bE8lGi"
    assert parse("app=='frontend'").unique_id == parse('app == "frontend"').unique_id
    assert parse("a == 'x' && b == 'y'").unique_id != parse("b == 'y' && a == 'x'").unique_id


def test_global_matches_only_non_namespaced_labels() -> None:
    assert parse("global()").matches({"role": "host"})
    assert not parse("global()").matches({"projectcalico.org/namespace": "x"})


def test_labels_lists_keys_read() -> None:
    assert parse("a == 'x' && (has(b) || c not in {'d'}) && !e contains 'f'").labels() == {"a", "b", "c", "e"}


def test_and_helper_drops_all() -> None:
    assert and_() == parse("all()")
    assert and_(parse("all()"), Has("a")) == Has("a")
    assert and_(Has("a"), Has("b")) == And((Has("a"), Has("b")))


def test_map_labels_renames_every_key() -> None:
    sel = parse("a == 'x' && (has(b) || !c in {'d'}) && e starts with 'f'")
    renamed = map_labels(sel, lambda k: "pcns." + k)
    expected = '(pcns.a == "x" && (has(pcns.b) || !pcns.c in {"d"}) && pcns.e starts with "f")'
    assert renamed.canonical() == expected


@pytest.mark.parametrize(
    ("match_labels", "exprs", "canonical"),
    [
        ({}, [], "all()"),
        ({"b": "2", "a": "1"}, [], '(a == "1" && b == "2")'),
        ({}, [("env", "In", ["prod", "dev"])], 'env in {"dev", "prod"}'),
        ({}, [("env", "NotIn", ["dev"])], 'env not in {"dev"}'),
        ({}, [("env", "Exists", [])], "has(env)"),
        ({"a": "1"}, [("env", "DoesNotExist", [])], '(a == "1" && !has(env))'),
    ],
)
def test_kubernetes_label_selector_converts(
    match_labels: dict[str, str], exprs: list[tuple[str, str, list[str]]], canonical: str
) -> None:
    ls = LabelSelector(
        match_labels=match_labels,
        match_expressions=[LabelSelectorRequirement(key=k, operator=op, values=v) for k, op, v in exprs],  # type: ignore[arg-type]
    )
    sel = from_label_selector(ls)
    assert sel.canonical() == canonical
    assert parse(canonical) == sel


def test_kubernetes_label_selector_semantics() -> None:
    ls = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
        }
    )
    sel = from_label_selector(ls)
    assert sel.matches({"app": "web"})
    assert sel.matches({"app": "web", "env": "prod"})
    assert not sel.matches({"app": "web", "env": "dev"})
    assert not sel.matches({"env": "prod"})
    assert from_label_selector(None).matches({})


# ------------------------------------------------------------------------------ property tests

_keys = st.sampled_from(["a", "b", "app", "k8s.io/name", "x-y_z", "in", "has", "not"])
_values = st.text(alphabet=st.sampled_from("abc xyz-_.'/"), max_size=6) | st.text(
    alphabet=st.sampled_from('abc"'), max_size=4
)


_OPS = ["==", "!=", "contains", "starts with", "ends with"]


def _leaves() -> st.SearchStrategy[Selector]:
    return st.one_of(
        st.builds(Has, _keys),
        st.builds(Compare, _keys, st.sampled_from(_OPS), _values),
        st.builds(In, _keys, st.frozensets(_values, max_size=3), st.booleans()),
        st.just(parse("all()")),
        st.just(parse("global()")),
    )


def _extend(children: st.SearchStrategy[Selector]) -> st.SearchStrategy[Selector]:
    ops = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, ops), st.builds(Or, ops))


selectors = st.recursive(_leaves(), _extend, max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(selectors)
def test_canonical_form_reparses_to_equal_ast(sel: Selector) -> None:
    text = sel.canonical()
    again = parse(text)
    assert again == sel
    assert again.canonical() == text
    assert again.unique_id == sel.unique_id


@settings(max_examples=200, deadline=None)
@given(selectors, st.dictionaries(_keys, _values, max_size=4))
def test_reparsed_selector_matches_the_same_labels(sel: Selector, labels: dict[str, str]) -> None:
    assert parse(sel.canonical()).matches(labels) == sel.matches(labels)
