"""Rule matches felixpy does not enforce (``http``, ``source.services``, ``destination.services``) fail
closed and never stop the agent.

Before: ``policy.convert`` raised ``ConversionError`` for them inside the writer thread, the agent
logged ``writer.crashed`` and exited, on every node, at every sync. Now an Allow/Pass rule with such a
match never matches, a Deny/Log rule is kept without it; each such part is named (log, metric,
``felixctl`` warning); a policy that cannot be converted at all keeps its previous version or stands
as a deny-all policy. Checked here on the model, the rendered chains (through the crosscheck's
iptables interpreter) and the real writer loop feeding the calc graph.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.resources.parse import parse_document
from felixpy.runtime.felix_metrics import unenforced_families
from felixpy.runtime.writer import InSyncMsg, ResourceMsg, Writer
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from policy.convert import ConversionError, policy_from_doc, unenforced
from policy.entities import PolicyRule
from policy.evaluator import Evaluator, Flow
from tests.fixtures.calc_recorder import RecordingDataplane
from tests.fixtures.conformance_cases import DEFAULT_IPS, calico, namespace_labels, topology
from tests.unit.test_calc import ME, key_of, pool, wep
from tests.unit.test_policy_crosscheck import Interpreter, Packet

HTTP = {"http": {"methods": ["GET"], "paths": [{"prefix": "/api"}]}}
L4 = {"protocol": "TCP", "destination": {"ports": [80]}}


def gnp(
    name: str, selector: str, *, ingress: list[Any] | None = None, egress: list[Any] | None = None
) -> Any:
    spec: dict[str, Any] = {"selector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return calico("GlobalNetworkPolicy", name, spec)


def with_part(rule: dict[str, Any], part: str) -> dict[str, Any]:
    """``rule`` plus one unsupported match: ``http``, ``source.services`` or ``destination.services``."""
    if part == "http":
        return {**rule, **HTTP}
    side = part.split(".")[0]
    return {**rule, side: {**rule.get(side, {}), "services": {"name": "web", "namespace": "x"}}}


PARTS = ("http", "source.services", "destination.services")


# ----------------------------------------------------------------------------- conversion, per action


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("action", ["Allow", "Pass"])
def test_allow_or_pass_with_unsupported_match_never_matches(action: str, part: str) -> None:
    rule = {"action": action, "protocol": "TCP"}
    doc = gnp("g", "pod == 'a'", ingress=[with_part(rule, part), {"action": "Deny", "protocol": "UDP"}])
    p = policy_from_doc(doc)
    assert p.ingress == (PolicyRule("Deny", protocol=17),), "the Allow/Pass rule is left out, the rest kept"
    assert p.types == {"Ingress"}


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("action", ["Deny", "Log"])
def test_deny_or_log_with_unsupported_match_matches_without_it(action: str, part: str) -> None:
    rule = {"action": action, **L4}
    got = policy_from_doc(gnp("g", "pod == 'a'", ingress=[with_part(rule, part)])).ingress
    without = policy_from_doc(gnp("g", "pod == 'a'", ingress=[rule])).ingress
    assert got == without and got[0].action == action


def test_an_allow_rule_with_only_an_unsupported_match_leaves_the_policy_denying() -> None:
    """x/a selected by a policy whose only rule is Allow + http: denied from everyone (the end-of-tier
    drop), in the evaluator and in the compiled chains; the same rule without http allows."""
    endpoints = topology()
    flow = Flow(DEFAULT_IPS["y/b"], DEFAULT_IPS["x/a"], "TCP", 80, src_port=40000)
    for rule, allowed in (({"action": "Allow", **L4, **HTTP}, False), ({"action": "Allow", **L4}, True)):
        policies = [policy_from_doc(gnp("g", "pod == 'a'", ingress=[rule]))]
        assert Evaluator(endpoints, policies, namespace_labels()).allowed(flow) is allowed
        compiler = PolicyCompiler("node1")
        for ns, labels in namespace_labels().items():
            compiler.update_namespace_labels(ns, labels)
        for ep in endpoints:
            compiler.update_endpoint(ep)
        compiler.update_policy(policies[0])
        interp = Interpreter(compiler.chains(), compiler.ipsets(), compiler.hooks())
        pkt = Packet(flow.src_ip, flow.dst_ip, 6, 40000, 80, "eth0", "calixa")
        assert interp.forward(pkt) is allowed, rule


def test_unenforced_names_field_reason_and_effect() -> None:
    doc = gnp(
        "g",
        "all()",
        ingress=[{"action": "Allow", **L4, **HTTP}, {"action": "Allow"}],
        egress=[{"action": "Pass"}, with_part({"action": "Deny"}, "destination.services")],
    )
    obj = parse_document(doc)
    notes = unenforced(obj)
    assert [(n.policy, n.direction, n.index, n.field, n.reason, n.action) for n in notes] == [
        ("gnp/g", "Ingress", 0, "spec.ingress[0].http", "http_match", "Allow"),
        ("gnp/g", "Egress", 1, "spec.egress[1].destination.services", "service_match", "Deny"),
    ]
    assert notes[0].message == (
        "spec.ingress[0].http: not enforced by felixpy (HTTP (L7) matches need application-layer policy, "
        "which felixpy does not implement); the rule never allows"
    )
    assert notes[1].message.endswith("the rule denies without that match (a superset)")
    # a direction the policy does not apply to is not enforced at all: not listed
    doc = gnp("e", "all()", ingress=[{"action": "Allow", **HTTP}])
    doc["spec"]["types"] = ["Egress"]
    assert unenforced(parse_document(doc)) == []


# ----------------------------------------------------------------------------- the calc stage


def _calc() -> tuple[CalcGraph, PolicyCalc]:
    calc = PolicyCalc([PolicyCompiler(ME, config=ChainConfig(version=v)) for v in (4, 6)])
    return CalcGraph(ME, policy=calc), calc


def _feed(graph: CalcGraph, *objs: Any) -> None:
    for obj in objs:
        kind, ns, name = key_of(obj)
        graph.on_resource(kind, (ns, name), obj)


HTTP_DB = parse_document(gnp("db", "app == 'db1'", ingress=[{"action": "Allow", **L4, **HTTP}]))
L4_DB = parse_document(gnp("db", "app == 'db1'", ingress=[{"action": "Allow", **L4}]))


def test_calc_logs_unenforced_once_per_change_and_counts_it() -> None:
    graph, calc = _calc()
    _feed(graph, pool("10.0.0.0/16"), wep("db1", "10.0.0.12"))
    with capture_logs() as logs:
        _feed(graph, HTTP_DB)
        graph.flush()
        _feed(graph, HTTP_DB)  # the same again (a resync): nothing new to say
        graph.flush()
    warnings = [e for e in logs if e["event"] == "policy.rule_unenforced"]
    assert len(warnings) == 1
    w = warnings[0]
    assert (w["log_level"], w["policy"], w["rule"], w["field"], w["reason"]) == (
        "warning", "gnp/db", 0, "spec.ingress[0].http", "http_match",
    )  # fmt: skip
    assert w["effect"] == "the rule never allows"
    assert calc.unenforced_counts() == {"http_match": 1}
    families = {m.name: m for m in unenforced_families(calc.unenforced_counts(), calc.unconvertible_count())}
    samples = {s.labels["reason"]: s.value for s in families["felixpy_policy_rules_unenforced"].samples}
    assert samples == {"http_match": 1, "service_match": 0}
    with capture_logs() as logs:
        _feed(graph, L4_DB)
        graph.flush()
    assert [e["log_level"] for e in logs if e["event"] == "policy.rule_unenforced"] == ["info"]
    assert calc.unenforced_counts() == {}
    _feed(graph, HTTP_DB)
    graph.on_resource("GlobalNetworkPolicy", ("", "db"), None)
    assert calc.unenforced_counts() == {}, "a deleted policy is no longer counted"


def _policy_chain(graph: CalcGraph, rec: RecordingDataplane, name: str) -> Any:
    rec.apply(graph.flush())
    return next(c for (table, n), c in rec.chains[4].items() if table == "filter" and n == name)


def test_unconvertible_policy_keeps_previous_version_or_denies_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """No policy converts badly once validated, so conversion is made to fail here: the first version
    stands as deny-all, a later bad version leaves the good one in place."""
    import felixpy.calc.policy_stage as stage

    real = stage.convert_policy

    def convert(res: Any) -> Any:
        if res.metadata.annotations.get("break") == "yes":
            raise ConversionError("broken on purpose")
        return real(res)

    monkeypatch.setattr(stage, "convert_policy", convert)
    broken_doc = gnp("db", "app == 'db1'", ingress=[{"action": "Allow"}])
    broken_doc["metadata"]["annotations"] = {"break": "yes"}
    broken = parse_document(broken_doc)
    graph, calc = _calc()
    rec = RecordingDataplane()
    _feed(graph, pool("10.0.0.0/16"), wep("db1", "10.0.0.12"))
    with capture_logs() as logs:
        _feed(graph, broken)
    assert [e["action"] for e in logs if e["event"] == "policy.unconvertible"] == [
        "its endpoints denied everything in its tier"
    ]
    chain = _policy_chain(graph, rec, "cali-pi-gnp/db")
    assert [r.action for r in chain.rules] == ["-j DROP"] and chain.rules[0].match == ""
    assert calc.unconvertible_count() == 1

    _feed(graph, L4_DB)
    good = _policy_chain(graph, rec, "cali-pi-gnp/db")
    assert "-j DROP" not in [r.action for r in good.rules] and calc.unconvertible_count() == 0
    with capture_logs() as logs:
        _feed(graph, broken)
    assert [e["action"] for e in logs if e["event"] == "policy.unconvertible"] == ["previous version kept"]
    assert _policy_chain(graph, rec, "cali-pi-gnp/db") == good


# ----------------------------------------------------------------------------- the writer loop


def test_writer_survives_an_http_policy_and_denies_what_only_it_allows() -> None:
    """The agent's path: syncer messages into the writer loop, calc, the dataplane. The loop keeps
    running and commits; db1 (Allow + http) is closed, web1 (the same rule without http) is open."""
    web_policy = parse_document(gnp("web", "app == 'web1'", ingress=[{"action": "Allow", **L4}]))
    objs = [pool("10.0.0.0/16"), wep("db1", "10.0.0.12"), wep("web1", "10.0.0.11"), HTTP_DB, web_policy]
    calc = PolicyCalc([PolicyCompiler(ME, config=ChainConfig(version=v)) for v in (4, 6)])
    dp = RecordingDataplane()
    writer = Writer(CalcGraph(ME, policy=calc), dp)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        msgs: list[Any] = [ResourceMsg(key_of(o)[0], key_of(o)[1:], o) for o in objs]
        assert writer.submit_and_wait([*msgs, InSyncMsg()], timeout=30), "the batch was committed"
        # a resync sends the same policy again: still alive, still committing
        assert writer.submit_and_wait([ResourceMsg("GlobalNetworkPolicy", ("", "db"), HTTP_DB)], timeout=30)
        assert thread.is_alive() and writer.ready
    finally:
        stop.set()
        thread.join(10)
    assert calc.unenforced_counts() == {"http_match": 1}
    interp = Interpreter(dp.chains[4], dp.ipsets[4], dp.hooks[4])

    def allowed(dst: str, iface: str) -> bool:
        return interp.forward(Packet("10.0.5.5", dst, 6, 40000, 80, "eth0", iface))

    assert not allowed("10.0.0.12", "calidb1"), "Allow + http never allows"
    assert allowed("10.0.0.11", "caliweb1"), "the same rule without http allows"
