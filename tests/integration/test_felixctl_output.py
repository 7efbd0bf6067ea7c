"""felixctl's printing (pure: no datastore needed): table alignment, lists, per-kind columns."""

from __future__ import annotations

import io

import yaml

from felixpy.ctl.output import format_table, print_objects
from felixpy.resources.parse import parse_documents

NODES = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-a}
spec: {bgp: {ipv4Address: 10.0.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-bb}
spec: {bgp: {ipv4Address: 10.0.0.2/24, asNumber: 65001}}
"""


def test_table_is_tab_aligned_like_calicoctl() -> None:
    text = format_table(["name", "cidr", "selector"], [["a", "10.0.0.0/8", "all()"], ["long-name", "x", ""]])
    assert text.splitlines() == [
        "NAME        CIDR         SELECTOR",
        "a           10.0.0.0/8   all()",
        "long-name   x",
    ]


def test_short_columns_get_the_minimum_width() -> None:
    assert format_table(["a", "b"], [["x", "y"]]).splitlines() == ["A    B", "x    y"]


def test_node_wide_shows_inherited_as_number() -> None:
    out = io.StringIO()
    print_objects(parse_documents(NODES), "wide", context={"default_asn": 64600}, file=out)
    assert [line.split() for line in out.getvalue().splitlines()] == [
        ["NAME", "ASN", "IPV4", "IPV6"],
        ["node-a", "(64600)", "10.0.0.1/24"],
        ["node-bb", "65001", "10.0.0.2/24"],
    ]


def test_lists_and_single_objects() -> None:
    nodes = parse_documents(NODES)
    out = io.StringIO()
    print_objects(nodes, "yaml", revision=42, file=out)
    listed = yaml.safe_load(out.getvalue())
    assert listed["kind"] == "NodeList" and listed["metadata"] == {"resourceVersion": "42"}
    assert [i["metadata"]["name"] for i in listed["items"]] == ["node-a", "node-bb"]
    out = io.StringIO()
    print_objects(nodes[:1], "json", single=True, file=out)
    assert yaml.safe_load(out.getvalue())["kind"] == "Node"
    out = io.StringIO()
    print_objects([], "yaml", kind=type(nodes[0]), file=out)
    empty = yaml.safe_load(out.getvalue())
    assert empty == {"apiVersion": "projectcalico.org/v3", "kind": "NodeList", "items": []}


def test_mixed_kinds_print_one_table_each() -> None:
    pool = parse_documents("""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.0.0.0/16}
""")
    out = io.StringIO()
    print_objects(parse_documents(NODES)[:1] + pool, "table", file=out)
    assert out.getvalue().splitlines() == [
        "NAME", "node-a", "", "NAME   CIDR          SELECTOR", "p1     10.0.0.0/16   all()",
    ]  # fmt: skip
