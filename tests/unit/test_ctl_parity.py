"""calicoctl parity, the pure parts: input shapes, output formats, patches, the stored kinds,
and the table of FelixConfiguration/BGPConfiguration fields felixpy acts on."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from felixpy.ctl.edit_cmds import json_patch, merge_patch
from felixpy.ctl.formats import FormatError, check_format, custom_columns, go_template
from felixpy.ctl.honoured import field_table, unhonoured
from felixpy.ctl.limits import LimitError, Limits
from felixpy.ctl.main import build_parser, parse
from felixpy.ctl.resource_cmds import CommandError
from felixpy.ctl.sources import input_files, read_sources
from felixpy.resources.base import ResourceError
from felixpy.resources.parse import parse_documents
from felixpy.resources.registry import kind_by_name

DOCS = Path(__file__).parents[2] / "docs" / "operations.md"


def doc(kind: str, name: str, spec: str, ns: str = "") -> str:
    meta = f"{{name: {name}{', namespace: ' + ns if ns else ''}}}"
    return f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {meta}\nspec: {spec}\n"


LIST_DOC = """\
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: a}
  spec: {cidr: 10.0.0.0/16}
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: b}
  spec: {cidr: 10.1.0.0/16}
"""


def test_yaml_list_document_is_its_items() -> None:
    objs = parse_documents(LIST_DOC)
    assert [o.name for o in objs] == ["a", "b"]
    with pytest.raises(ResourceError, match="document 3: a resource must be a mapping, not int"):
        parse_documents(LIST_DOC + "- 3\n")


def test_directory_input_recursive_and_not(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.yaml").write_text(doc("IPPool", "b", "{cidr: 10.1.0.0/16}"))
    (tmp_path / "a.json").write_text(
        '{"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}}'
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub" / "c.yml").write_text(doc("IPPool", "c", "{cidr: 10.2.0.0/16}"))
    assert [Path(p).name for p in input_files(str(tmp_path))] == ["a.json", "b.yaml"]
    assert [Path(p).name for p in input_files(str(tmp_path), recursive=True)] == ["a.json", "b.yaml", "c.yml"]
    with pytest.raises(LimitError, match="larger than"):  # the byte limit holds for all files together
        read_sources(str(tmp_path), Limits(max_input_bytes=120), recursive=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LimitError, match="add -R"):
        input_files(str(tmp_path / "empty"))
    assert input_files(str(tmp_path / "empty"), skip_empty=True) == []  # --skip-empty


def test_flags_in_any_position() -> None:
    parser = build_parser()
    args = parse(parser, ["get", "ippool", "-o", "yaml", "p1", "p2"])
    assert (args.kind, args.names, args.output) == ("ippool", ["p1", "p2"], "yaml")
    args = parse(parser, ["delete", "ippool", "-s", "p1"])
    assert (args.kind, args.names, args.skip_not_found) == ("ippool", ["p1"], True)
    args = parse(parser, ["delete", "--skip-not-found", "ippool", "p1"])
    assert args.skip_not_found
    with pytest.raises(SystemExit) as exc:
        parse(parser, ["get", "ippool", "p1", "--no-such-flag"])
    assert exc.value.code == 2


POOLS = [
    {"metadata": {"name": "a"}, "spec": {"cidr": "10.0.0.0/16", "ingress": [{"action": "Allow"}]}},
    {"metadata": {"name": "b"}, "spec": {"cidr": "10.1.0.0/16"}},
]


def test_custom_columns() -> None:
    text = custom_columns("NAME:.metadata.name,CIDR:.spec.cidr,FIRST:.spec.ingress[0].action", POOLS)
    assert text.splitlines() == [
        "NAME   CIDR          FIRST",
        "a      10.0.0.0/16   Allow",
        "b      10.1.0.0/16   <none>",
    ]
    with pytest.raises(FormatError, match=r"HEADER:\.field\.path"):
        custom_columns("NAME", POOLS)


def test_go_template_subset() -> None:
    data = {"kind": "IPPoolList", "items": POOLS}
    assert go_template('{{range .items}}{{.metadata.name}} {{.spec.cidr}}{{"\\n"}}{{end}}', data) == (
        "a 10.0.0.0/16\nb 10.1.0.0/16\n"
    )
    assert go_template("{{- range .items -}}\n  {{.metadata.name}},\n{{- end}}", data) == "a,b,"
    assert go_template("{{.metadata.missing}}", POOLS[0]) == "<no value>"
    for bad, word in (
        ("{{if .x}}y{{end}}", "if"),
        ("{{.a | printf}}", "pipelines"),
        ("{{range .items}}", "end"),
    ):
        with pytest.raises(FormatError, match=word):
            go_template(bad, data)
    assert check_format("name") == "name"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown output format"):
        check_format("jsonpath={.x}")


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # not modified in place


def test_json_patch_rfc6902() -> None:
    base = {"foo": ["bar", "baz"], "x": {"y": 1}}
    out = json_patch(base, [
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "remove", "path": "/foo/0"},
        {"op": "copy", "from": "/x/y", "path": "/z"},
        {"op": "move", "from": "/x", "path": "/w"},
        {"op": "test", "path": "/z", "value": 1},
        {"op": "add", "path": "/a~1b", "value": 2},
    ])  # fmt: skip
    assert out == {"foo": ["qux", "baz"], "z": 1, "w": {"y": 1}, "a/b": 2}
    assert base == {"foo": ["bar", "baz"], "x": {"y": 1}}
    with pytest.raises(CommandError, match="test of '/z' failed"):
        json_patch(out, [{"op": "test", "path": "/z", "value": 2}])
    with pytest.raises(CommandError, match="does not exist"):
        json_patch(out, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(CommandError, match="unknown op 'frob'"):
        json_patch(out, [{"op": "frob", "path": "/z"}])


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (doc("GlobalNetworkSet", "g", "{nets: [10.0.0.1/8]}"), "spec.nets[0]", "host bits set"),
        (doc("NetworkSet", "n", "{nets: [not-an-ip]}", ns="x"), "spec.nets[0]", "not a valid"),
        (doc("IPReservation", "r", "{reservedCIDRs: [300.0.0.0/8]}"), "spec.reservedCIDRs[0]", "not a valid"),
        (doc("IPAMConfiguration", "other", "{}"), "metadata.name", "must be 'default'"),
        (
            doc("IPAMConfiguration", "default", "{maxBlocksPerHost: -1}"),
            "spec.maxBlocksPerHost",
            ">= 0|greater",
        ),
        (doc("IPAMConfiguration", "default", "{strictAfinity: true}"), "spec.strictAfinity", "unknown field"),
        (doc("Profile", "kns.x", "{ingress: [{action: Allo}]}"), "spec.ingress[0].action", "must be"),
        (doc("CalicoNodeStatus", "s", "{classes: [Bird]}"), "spec.classes[0]", "must be"),
        (doc("ClusterInformation", "x", "{}"), "metadata.name", "must be 'default'"),
    ],
)
def test_stored_kinds_refuse_naming_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(ResourceError) as exc:
        parse_documents(text)
    assert exc.value.field == field and re.search(reason, exc.value.reason), str(exc.value)


def test_stored_kinds_defaults_and_names() -> None:
    ipam = parse_documents(doc("IPAMConfiguration", "default", "{}"))[0]
    assert ipam.to_dict()["spec"] == {
        "strictAffinity": False,
        "maxBlocksPerHost": 0,
        "autoAllocateBlocks": True,
    }
    gns = parse_documents(doc("GlobalNetworkSet", "g", "{nets: [10.0.0.0/8, 192.0.2.1, 2001:db8::/32]}"))[0]
    # a bare address is kept as written, as Calico keeps it (it matches as a /32)
    assert gns.to_dict()["spec"]["nets"] == ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
    ns = parse_documents(doc("NetworkSet", "n", "{nets: []}", ns="prod"))[0]
    assert ns.namespace == "prod"
    shorts = {
        "gns": "GlobalNetworkSet",
        "networksets": "NetworkSet",
        "ipreservation": "IPReservation",
        "profile": "Profile",
        "caliconodestatus": "CalicoNodeStatus",
        "clusterinformation": "ClusterInformation",
        "ipamconfiguration": "IPAMConfiguration",
    }
    for short, kind in shorts.items():
        found = kind_by_name(short)
        assert found is not None and kind == found.KIND


def test_unhonoured_fields_are_named() -> None:
    felix = parse_documents(
        doc("FelixConfiguration", "default", "{bpfEnabled: true, vethMTU: 1400, chainInsertMode: Append}")
    )[0]
    assert sorted(unhonoured(felix)) == ["spec.bpfEnabled", "spec.chainInsertMode"]
    bgp = parse_documents(doc("BGPConfiguration", "default", "{asNumber: 64512, bindMode: NodeIP}"))[0]
    assert unhonoured(bgp) == ["spec.bindMode"]
    peer = parse_documents(doc("BGPPeer", "tor", (
        "{peerIP: 192.0.2.1, asNumber: 64600, keepaliveTime: 10s, reachableBy: 10.0.0.1,"
        " sourceAddress: None, ttlSecurity: 1, maxRestartTime: 120s}"
    )))[0]  # fmt: skip
    assert sorted(unhonoured(peer)) == ["spec.keepaliveTime", "spec.reachableBy", "spec.sourceAddress"]
    spec = "{peerIP: 192.0.2.1, asNumber: 1, sourceAddress: UseNodeIP}"
    default_source = parse_documents(doc("BGPPeer", "p", spec))[0]
    assert unhonoured(default_source) == []  # the node's address: what felixpy does
    pool = parse_documents(doc("IPPool", "p", (
        "{cidr: 10.9.0.0/16, natOutgoing: true, assignmentMode: Manual, namespaceSelector: \"team == 'a'\"}"
    )))[0]  # fmt: skip
    assert sorted(unhonoured(pool)) == ["spec.assignmentMode", "spec.namespaceSelector"]
    automatic = parse_documents(doc("IPPool", "q", "{cidr: 10.8.0.0/16, assignmentMode: Automatic}"))[0]
    assert unhonoured(automatic) == []  # Calico's default: what felixpy does


def test_a_profiles_rules_and_labels_to_apply_are_honoured() -> None:
    """The agent enforces a stored Profile's rules and applies its labelsToApply: apply does not warn
    and the table says so."""
    profile = parse_documents(doc(
        "Profile", "dev-apps", "{ingress: [{action: Deny}], egress: [{action: Allow}], labelsToApply: {a: b}}"
    ))[0]  # fmt: skip
    assert unhonoured(profile) == []
    for name in ("egress", "ingress", "labelsToApply"):
        assert f"| Profile | `{name}` | honoured |" in field_table()


def test_operations_table_is_current() -> None:
    text = DOCS.read_text()
    table = text.split("<!-- honoured-fields:start -->\n", 1)[1].split("\n<!-- honoured-fields:end -->", 1)[0]
    assert table == field_table(), (
        "regenerate the table in docs/operations.md from felixpy.ctl.honoured.field_table()"
    )


def test_ipam_configuration_fields_are_all_honoured_and_in_the_table() -> None:
    """strictAffinity, maxBlocksPerHost, autoAllocateBlocks: IPAM acts on each (ipam.allocator.IPAMConfig)."""
    from felixpy.ctl.honoured import IPAM_HONOURED, known_fields

    assert {"strictAffinity", "maxBlocksPerHost", "autoAllocateBlocks"} == IPAM_HONOURED
    assert set(known_fields("IPAMConfiguration")) == IPAM_HONOURED  # no spec field left out
    ipam = parse_documents(
        doc("IPAMConfiguration", "default", "{strictAffinity: true, maxBlocksPerHost: 4}")
    )[0]
    assert unhonoured(ipam) == []
    for name in sorted(IPAM_HONOURED):
        assert f"| IPAMConfiguration | `{name}` | honoured |" in field_table()
