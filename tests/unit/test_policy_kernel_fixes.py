"""Regressions found by running the compiler's output on the real kernel (tests/kernel/)."""

from __future__ import annotations

import re

from policy.chains import ChainConfig, dispatch_tree, static_chains
from policy.compiler import PolicyCompiler
from policy.convert import policy_from_doc
from policy.entities import Endpoint, PolicyRule
from policy.rules import PORTABLE_PROTOCOL_NAMES, _proto
from tests.fixtures.conformance_cases import CASES, namespace_labels, topology

PROTO = re.compile(r"(?:^|\s)-p (\S+)")


def _protocols(matches: list[str]) -> set[str]:
    return {m for text in matches for m in PROTO.findall(text)}


def test_every_protocol_is_a_number_or_a_name_libiptc_knows() -> None:
    """python-iptables rejected ``-p ipencap`` (the IPIP drops): only portable names or numbers."""
    compiler = PolicyCompiler("node1", config=ChainConfig(ipip_enabled=True, vxlan_enabled=True))
    for ns, labels in namespace_labels().items():
        compiler.update_namespace_labels(ns, labels)
    for ep in topology():
        compiler.update_endpoint(ep)
    for case in CASES:
        for doc in case.policies:
            compiler.update_policy(policy_from_doc(doc))
    chains = [*compiler.chains().values(), *static_chains(ChainConfig(ipip_enabled=True))]
    protos = _protocols([r.match for c in chains for r in c.rules])
    assert "4" in protos and "tcp" in protos
    assert all(p.isdigit() or p in PORTABLE_PROTOCOL_NAMES for p in protos), protos


def test_unportable_protocol_names_render_as_numbers() -> None:
    assert _proto(6) == "tcp"
    assert _proto(136) == "136"  # udplite
    assert _proto(47) == "47"
    assert PolicyRule("Allow", protocol=136).protocol == 136


def test_dispatch_tree_groups_by_next_character() -> None:
    """1,000 flat dispatch rules cost ~17% of pod-to-pod throughput on the kernel (bench/bench_policy.py)."""
    frm, to, *children = dispatch_tree(["calia1", "calia2", "calib1", "calic"])
    assert [(r.match, r.action) for r in frm.rules] == [
        ("-i calia+", "-g cali-from-wl-dispatch-a"),
        ("-i calib1", "-g cali-fw-calib1"),
        ("-i calic", "-g cali-fw-calic"),
        ("", "-j DROP"),
    ]
    assert to.name == "cali-to-wl-dispatch" and to.rules[0].match == "-o calia+"
    assert [c.name for c in children] == ["cali-from-wl-dispatch-a", "cali-to-wl-dispatch-a"]
    assert [(r.match, r.action) for r in children[0].rules] == [
        ("-i calia1", "-g cali-fw-calia1"),
        ("-i calia2", "-g cali-fw-calia2"),
        ("", "-j DROP"),
    ]


def test_compiler_removes_a_dispatch_child_that_is_no_longer_needed() -> None:
    c = PolicyCompiler("node1")
    for iface in ("calia1", "calia2", "calib"):
        ep = Endpoint(key=f"x/{iface}", namespace="x", ips=("10.0.0.1",), iface=iface, node="node1")
        c.update_endpoint(ep)
    assert ("filter", "cali-from-wl-dispatch-a") in c.dirty().chains
    c.remove_endpoint("x/calia2")
    changes = c.dirty()
    assert ("filter", "cali-from-wl-dispatch-a") in changes.removed_chains
    assert [r.match for r in changes.chains[("filter", "cali-from-wl-dispatch")].rules] == [
        "-i calia1", "-i calib", ""
    ]
