"""Calc state sequences for policy and BGP inputs: datastore states in, chains, ipsets, hooks and the BGP
snapshot out, seen through the recording dataplane.

Each scenario is replayed forward, reversed, split (flush after every single update) and with the
updates inside a transition reversed. After every flush the recorder, which only applies the emitted
deltas, must hold exactly what a fresh calc fed the state in one go emits (the squashed order) and
exactly the compilers' whole state; a few facts a user relies on are checked by name as well (the
local endpoint's chains, the selector set's members, that a policy's chains exist only while it
selects a local endpoint).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import BGPInputs, BGPInputsUpdate, ChainsUpdate, IpsetsUpdate, PolicyInputsUpdate
from felixpy.dataplane.kernel_objects import Chain
from felixpy.resources import WorkloadEndpoint
from felixpy.resources.parse import parse_document
from policy.chain_names import POLICY_LIST_FROM, POLICY_LIST_TO, ipset_name
from policy.chains import ChainConfig, policy_list_chain_name
from policy.compiler import PolicyCompiler
from policy.selector import parse
from tests.fixtures.calc_recorder import RecordingDataplane
from tests.unit.test_calc import ME, feed, node, pool, state, transition, wep

WEB_SET = ipset_name(parse("app == 'web1' || app == 'web1r'").unique_id)


def gnp(name: str, selector: str, source: str) -> Any:
    return parse_document(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "selector": selector,
                "types": ["Ingress"],
                "ingress": [{"action": "Allow", "source": {"selector": source}}],
            },
        }
    )


WEB1 = wep("web1", "10.0.0.11")
DB1 = wep("db1", "10.0.0.12")
REMOTE_WEB = wep("web1r", "10.0.1.11", node="node2")
DB_POLICY = gnp("db", "app == 'db1'", "app == 'web1' || app == 'web1r'")
FAR = gnp("far", "app == 'nothing-here'", "app == 'web1'")
POOL = pool("10.0.0.0/16")
N2 = node("node2", "10.1.0.2/24")

# (datastore state, facts: chain names present, chain names absent, {set name: members})
SCENARIOS: dict[str, list[tuple[dict, tuple[set[str], set[str], dict[str, set[str]]]]]] = {
    "endpoints then policy": [
        (state(), (set(), {"cali-tw-caliweb1"}, {})),
        (state(WEB1, POOL), ({"cali-tw-caliweb1", "cali-fw-caliweb1"}, {"cali-tw-calidb1"}, {})),
        (state(WEB1, DB1, POOL), ({"cali-tw-caliweb1", "cali-tw-calidb1"}, {"cali-pi-gnp/db"}, {})),
        (
            state(WEB1, DB1, POOL, DB_POLICY, FAR),
            ({"cali-tw-calidb1", "cali-pi-gnp/db"}, {"cali-pi-gnp/far"}, {}),
        ),
        (state(WEB1, DB1, REMOTE_WEB, POOL, DB_POLICY, N2), ({"cali-pi-gnp/db"}, set(), {})),
        (state(DB1, REMOTE_WEB, POOL, DB_POLICY), ({"cali-tw-calidb1"}, {"cali-tw-caliweb1"}, {})),
        (state(WEB1, REMOTE_WEB, POOL, DB_POLICY), ({"cali-tw-caliweb1"}, {"cali-pi-gnp/db"}, {})),
        (state(), (set(), {"cali-tw-caliweb1", "cali-pi-gnp/db"}, {})),
    ],
}
# A stored Profile: its chains while a local endpoint lists it (an unstored name gets empty ones), its
# labelsToApply in the endpoint's labels (the policy selecting team == 'blue' applies only with it).
_APP1 = wep("app1", "10.0.0.13").to_dict()
APP1 = WorkloadEndpoint.model_validate(
    {**_APP1, "spec": {**_APP1["spec"], "profiles": ["kns.default", "teams"]}}
)
TEAMS = parse_document(
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "teams"},
        "spec": {
            "labelsToApply": {"team": "blue"},
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'db1'"}}],
        },
    }
)
BLUE_POLICY = gnp("blue", "team == 'blue'", "app == 'db1'")
SCENARIOS["profiles"] = [
    (
        state(APP1, POOL),
        ({"cali-tw-caliapp1", "cali-pri-teams", "cali-pro-teams"}, {"cali-pi-gnp/blue"}, {}),
    ),
    (state(APP1, POOL, BLUE_POLICY), ({"cali-pri-teams"}, {"cali-pi-gnp/blue"}, {})),
    (state(APP1, POOL, BLUE_POLICY, TEAMS), ({"cali-pri-teams", "cali-pi-gnp/blue"}, set(), {})),
    (state(APP1, POOL, TEAMS), ({"cali-pri-teams"}, {"cali-pi-gnp/blue"}, {})),
    (state(POOL, TEAMS), (set(), {"cali-pri-teams", "cali-pro-teams", "cali-tw-caliapp1"}, {})),
]

# The selector set of DB_POLICY's source holds every web endpoint's address, local or remote.
SET_MEMBERS = {3: {"10.0.0.11"}, 4: {"10.0.0.11", "10.0.1.11"}, 5: {"10.0.1.11"}}


def _graph() -> tuple[CalcGraph, PolicyCalc]:
    calc = PolicyCalc([PolicyCompiler(ME, config=ChainConfig(version=v)) for v in (4, 6)])
    return CalcGraph(ME, policy=calc), calc


def _squashed(desired: dict) -> RecordingDataplane:
    graph, _ = _graph()
    rec = RecordingDataplane()
    for k, v in transition(state(), desired):
        feed(graph, k, v)
    rec.apply(graph.flush())
    return rec


def _by_content(chains: dict[Any, Chain]) -> dict[Any, Chain]:
    """The chains with each policy list chain renamed to the name its rules give it."""
    renamed: dict[str, str] = {}
    for (_, name), chain in chains.items():
        if name.startswith((POLICY_LIST_TO, POLICY_LIST_FROM)):
            direction = "Ingress" if name.startswith(POLICY_LIST_TO) else "Egress"
            renamed[name] = policy_list_chain_name(direction, chain.rules)
    out: dict[Any, Chain] = {}
    for (table, name), chain in chains.items():
        rules = tuple(
            replace(r, action=f"-g {renamed[r.action[3:]]}") if r.action[3:] in renamed else r
            for r in chain.rules
        )
        new = renamed.get(name, name)
        out[(table, new)] = replace(chain, name=new, rules=rules)
    return out


def _check(
    step: int,
    rec: RecordingDataplane,
    calc: PolicyCalc,
    desired: dict,
    facts: tuple,
    set_members: dict[int, set[str]] = SET_MEMBERS,
    *,
    list_names: bool = True,
) -> None:
    """``list_names=False``: the policy list chains are compared by their rules, not their names (a
    list chain all of whose endpoints move to new rules is rewritten under its old name, so after a
    history its name differs from a fresh calc's)."""
    present, absent, _ = facts
    for compiler in calc.compilers:
        v = compiler.version
        assert rec.chains.get(v, {}) == compiler.chains(), f"IPv{v} chains: recorder != compiler"
        assert rec.ipsets.get(v, {}) == compiler.ipsets(), f"IPv{v} ipsets: recorder != compiler"
        assert rec.hooks[v] == compiler.hooks()
    squashed = _squashed(desired)
    rec_chains, squashed_chains = rec.chains, squashed.chains
    if not list_names:
        rec_chains = {v: _by_content(c) for v, c in rec.chains.items()}
        squashed_chains = {v: _by_content(c) for v, c in squashed.chains.items()}
    assert rec_chains == squashed_chains
    assert rec.ipsets == squashed.ipsets and rec.hooks == squashed.hooks
    names = {name for _, name in rec.chains[4]}
    assert present <= names, present - names
    assert not absent & names, absent & names
    members = {str(m) for m in rec.ipsets[4][WEB_SET].members} if WEB_SET in rec.ipsets[4] else None
    if step in set_members:
        assert members is not None and {m.split("/")[0] for m in members} == set_members[step]
    elif "cali-pi-gnp/db" not in names:
        assert WEB_SET not in rec.ipsets[4], "a set exists only while a programmed policy uses it"


@pytest.mark.parametrize("order", ["forward", "reversed", "split", "inner-reversed"])
def test_policy_state_sequence(order: str) -> None:
    steps = list(enumerate(SCENARIOS["endpoints then policy"]))
    if order == "reversed":
        steps.reverse()
    graph, calc = _graph()
    rec, current = RecordingDataplane(), state()
    for step, (desired, facts) in steps:
        ups = transition(current, desired)
        if order == "inner-reversed":
            ups.reverse()
        for k, v in ups:
            feed(graph, k, v)
            if order == "split":
                rec.apply(graph.flush())
        rec.apply(graph.flush())
        _check(step, rec, calc, desired, facts)
        current = desired


@pytest.mark.parametrize("order", ["forward", "reversed", "split", "inner-reversed"])
def test_profile_state_sequence(order: str) -> None:
    """A stored Profile through calc: its chains and its labelsToApply (policy selection) follow the
    datastore in any order of arrival; the profile's selector set exists while its chains do."""
    steps = list(enumerate(SCENARIOS["profiles"]))
    if order == "reversed":
        steps.reverse()
    graph, calc = _graph()
    rec, current = RecordingDataplane(), state()
    db_set = ipset_name(parse("app == 'db1'").unique_id)
    for step, (desired, facts) in steps:
        ups = transition(current, desired)
        if order == "inner-reversed":
            ups.reverse()
        for k, v in ups:
            feed(graph, k, v)
            if order == "split":
                rec.apply(graph.flush())
        rec.apply(graph.flush())
        _check(step, rec, calc, desired, facts, set_members={}, list_names=False)
        names = {name for _, name in rec.chains[4]}
        stored_and_used = ("Profile", "", "teams") in desired and "cali-pri-teams" in names
        assert (db_set in rec.ipsets[4]) == (stored_and_used or "cali-pi-gnp/blue" in names)
        current = desired


def test_policy_flush_is_quiet_when_nothing_changed_and_says_what_changed() -> None:
    graph, _ = _graph()
    graph.on_resource("WorkloadEndpoint", ("default", "web1"), WEB1)
    first = graph.flush()
    assert any(isinstance(u, ChainsUpdate) for u in first) and any(isinstance(u, IpsetsUpdate) for u in first)
    assert PolicyInputsUpdate(frozenset(), True) in first
    assert not [u for u in graph.flush() if isinstance(u, ChainsUpdate | IpsetsUpdate | PolicyInputsUpdate)]
    graph.on_resource("WorkloadEndpoint", ("default", "web1"), None)
    removal = graph.flush()
    assert PolicyInputsUpdate(frozenset({("default", "web1")}), False) in removal
    assert any(isinstance(u, ChainsUpdate) and ("filter", "cali-tw-caliweb1") in u.removed for u in removal)


def test_bgp_inputs_snapshot_follows_the_datastore() -> None:
    graph, rec = CalcGraph(ME), RecordingDataplane()
    graph.on_resource("Node", ("", "node2"), N2)
    graph.on_resource("IPPool", ("", "default-pool"), POOL)
    graph.on_block("10.0.0.0/26", ME)
    graph.on_block("10.0.1.0/26", "node2")
    rec.apply(graph.flush())
    blocks = (("10.0.0.0/26", ME), ("10.0.1.0/26", "node2"))
    assert rec.bgp == BGPInputs(nodes=(N2,), pools=(POOL,), local_blocks=("10.0.0.0/26",), all_blocks=blocks)
    graph.on_resource("WorkloadEndpoint", ("default", "web1r"), REMOTE_WEB)
    assert graph.flush() == [], "10.0.1.11 is in node2's own block: nothing borrowed, no new snapshot"
    graph.on_resource("WorkloadEndpoint", ("default", "web1b"), wep("web1b", "10.0.0.40", node="node2"))
    rec.apply(graph.flush())
    assert rec.bgp is not None and ("node2", "10.0.0.40") in rec.bgp.workloads, "borrowed from our block"
    graph.on_resource("IPPool", ("", "default-pool"), None)
    rec.apply(graph.flush())
    assert rec.bgp is not None and rec.bgp.pools == () and rec.bgp.nodes == (N2,)
    quiet = CalcGraph(ME, bgp=False)
    quiet.on_resource("IPPool", ("", "default-pool"), POOL)
    assert not [u for u in quiet.flush() if isinstance(u, BGPInputsUpdate)], "no BGP: no snapshot"
