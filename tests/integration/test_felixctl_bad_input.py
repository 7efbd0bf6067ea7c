"""No traceback ever reaches a felixctl user (issue 12): binary input, invalid UTF-8, deep nesting,
YAML alias bombs and odd names each give one line naming the problem and exit code 1, with
nothing written to the (real) etcd; an exception nobody anticipated is one line too, its
traceback in the debug log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from felixpy.ctl import main as ctl_main
from felixpy.ctl import resource_cmds
from felixpy.datastore.kv import KV
from tests.integration.test_felixctl import Ctl, ctl, keys  # noqa: F401 (ctl: fixture)

pytestmark = pytest.mark.integration

NAME_RULE = "is not a valid DNS-1123 subdomain"


def failure(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line felixctl printed, checked to be its only output and free of any traceback."""
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    assert lines[0].startswith("Failed to execute command: "), lines[0]
    return lines[0].removeprefix("Failed to execute command: ")


def alias_bomb() -> str:
    head = ["apiVersion: projectcalico.org/v3", "kind: IPPool", "metadata:", "  name: bomb", "  annotations:"]
    lines = [*head, '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join([*lines, "spec: {cidr: 10.0.0.0/16}"]) + "\n"


def nested_json(depth: int) -> str:
    inner: dict[str, Any] = {}
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "x"},
           "spec": {"cidr": "10.0.0.0/16", "x": inner}}  # fmt: skip
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return json.dumps(doc)


FILE_CASES: dict[str, tuple[bytes, str]] = {
    "binary": (b"kind: IPPool\x00\x01\x02", "is binary, not YAML or JSON (a NUL byte at offset 12)"),
    "invalid-utf8": (b"kind: IPPool\n\xff\xfe", "is not UTF-8 text (byte 0xff at offset 13)"),
    "latin1": ("metadata: {name: caf\u00e9}".encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 20)"),
    "json-10000-deep-list": (("[" * 10_000 + "]" * 10_000).encode(), "nested more than 64"),
    "yaml-10000-deep-list": (("- " * 10_000 + "x").encode(), "nested more than 64"),
    "yaml-10000-deep-flow": (("[" * 10_000 + "]" * 10_000 + "\nx: y").encode(), "nested more than 64 levels"),
    "json-100-deep-in-spec": (nested_json(100).encode(), "document 1: nested more than 64 levels deep"),
    "yaml-alias-bomb": (alias_bomb().encode(), "document 1: expands to more than"),
    "yaml-self-reference": (b"&a [*a]\n", "nested more than 64 levels deep"),
    "not-a-mapping": (b"- 1\n- 2\n", "document 1: a resource must be a mapping, not int"),
    "bad-name-slash": (
        b'{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "a/b"},'
        b' "spec": {"cidr": "10.0.0.0/16"}}',
        f"field 'metadata.name': name 'a/b' {NAME_RULE}",
    ),
}  # fmt: skip


# Every case with apply; every verb with two of them (they share the reading and parsing).
VERB_CASES = [("apply", case) for case in sorted(FILE_CASES)] + [
    (verb, case) for verb in ("create", "replace", "delete", "get") for case in ("binary", "yaml-alias-bomb")
]


@pytest.mark.parametrize(("verb", "case"), VERB_CASES)
def test_bad_file_is_one_line_exit_1_and_changes_nothing(
    ctl: Ctl,  # noqa: F811
    etcd_kv: KV,
    tmp_path: Path,
    case: str,
    verb: str,
) -> None:
    data, reason = FILE_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    line = failure(ctl(verb, "-f", str(path), rc=1))
    assert reason in line, line
    assert keys(etcd_kv) == []


def test_bad_stdin_is_named_as_stdin(ctl: Ctl) -> None:  # noqa: F811
    line = failure(ctl("apply", "-f", "-", stdin="kind: IPPool\x00", rc=1))
    assert line == "stdin is binary, not YAML or JSON (a NUL byte at offset 12)"


NAME_CASES = {
    "a/b": f"invalid GlobalNetworkPolicy name 'a/b': name 'a/b' {NAME_RULE}",
    "": "invalid GlobalNetworkPolicy name '': name must not be empty",
    "a" * 300: "is longer than 253 characters",
    "Foo": f"invalid GlobalNetworkPolicy name 'Foo': name 'Foo' {NAME_RULE}",
    "../x": f"name '../x' {NAME_RULE}",
}


@pytest.mark.parametrize("name", sorted(NAME_CASES), ids=lambda n: repr(n[:12]))
@pytest.mark.parametrize("verb", ["get", "delete"])
def test_odd_names_on_the_command_line(ctl: Ctl, name: str, verb: str) -> None:  # noqa: F811
    line = failure(ctl(verb, "globalnetworkpolicy", name, rc=1))
    assert NAME_CASES[name] in line, line
    assert len(line) < 400


def test_workload_endpoint_names_and_namespaces_have_their_own_rules(ctl: Ctl) -> None:  # noqa: F811
    missing = ctl("get", "wep", "Node1-k8s-pod-eth0", rc=1).stderr  # upper case is allowed there
    assert missing == "resource does not exist: WorkloadEndpoint 'default/Node1-k8s-pod-eth0'\n"
    line = failure(ctl("get", "wep", "a/b", rc=1))
    assert "not a valid workload endpoint name" in line
    line = failure(ctl("get", "networkpolicy", "x", "-n", "Bad_NS", rc=1))
    assert line.startswith("invalid namespace given with -n: namespace 'Bad_NS' is not a valid DNS-1123")


def test_unreadable_input_is_one_line(ctl: Ctl, tmp_path: Path) -> None:  # noqa: F811
    missing = failure(ctl("apply", "-f", str(tmp_path / "missing.yaml"), rc=1))
    assert missing.endswith("No such file or directory")
    # a directory is input (its manifests, as calicoctl); one without any is one line naming it
    assert failure(ctl("apply", "-f", str(tmp_path), rc=1)).startswith("no *.yaml, *.yml or *.json files")


def test_unexpected_exception_is_one_line_with_the_traceback_in_the_debug_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(args: object) -> int:
        raise KeyError("spec\nwith a second line")

    monkeypatch.setattr(resource_cmds, "run_file_verb", broken)
    debug_log = tmp_path / "felixctl-debug.log"
    monkeypatch.setenv("FELIXCTL_DEBUG_LOG", str(debug_log))
    assert ctl_main.main(["apply", "-f", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("Failed to execute command: unexpected error: KeyError: 'spec\\nwith a second")
    assert "(details: --log-level debug)" in err
    logged = debug_log.read_text()
    assert "Traceback" in logged and "in broken" in logged
