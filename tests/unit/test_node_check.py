"""`felixctl node check`'s pure part: which of this node's WorkloadEndpoints lost their interface, how
the node is named, how the report is printed; and the ipam check report carrying them."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from felixpy.ctl import node_check
from felixpy.resources import WorkloadEndpoint
from ipam.report import CheckReport


def _wep(name: str, node: str, iface: str, ip: str) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": name,
                "containerID": f"cid-{name}",
                "endpoint": "eth0",
                "interfaceName": iface,
                "ipNetworks": [ip],
            },
        }
    )


WEPS = [
    _wep("node1-k8s-b-eth0", "node1", "calib", "10.0.0.2/32"),
    _wep("node1-k8s-a-eth0", "node1", "calia", "10.0.0.1/32"),
    _wep("node1-k8s-live-eth0", "node1", "calilive", "10.0.0.3/32"),
    _wep("node2-k8s-x-eth0", "node2", "calix", "10.0.1.1/32"),  # another node's: never looked at here
]


def test_find_orphans_only_this_nodes_missing_interfaces_sorted() -> None:
    found = node_check.find_orphans(WEPS, "node1", exists=lambda name: name == "calilive")
    assert [(o["name"], o["interface"], o["addresses"]) for o in found] == [
        ("node1-k8s-a-eth0", "calia", ["10.0.0.1/32"]),
        ("node1-k8s-b-eth0", "calib", ["10.0.0.2/32"]),
    ]
    assert found[0]["containerID"] == "cid-node1-k8s-a-eth0" and found[0]["node"] == "node1"
    assert "host interface calia is gone" in found[0]["problem"]
    assert node_check.find_orphans(WEPS, "node3", exists=lambda name: False) == []


def test_local_nodename_order(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert node_check.local_nodename("explicit", {"NODENAME": "env"}) == "explicit"
    assert node_check.local_nodename(None, {"NODENAME": "env", "FELIX_FELIXHOSTNAME": "f"}) == "env"
    assert node_check.local_nodename(None, {"FELIX_FELIXHOSTNAME": "f"}) == "f"
    nodefile = tmp_path / "nodename"
    nodefile.write_text("from-file\n")
    monkeypatch.setattr(node_check, "NODENAME_FILES", (str(nodefile),))
    assert node_check.local_nodename(None, {}) == "from-file"


@pytest.mark.parametrize("output", ["table", "wide", "json", "yaml"])
def test_check_command_output_and_exit_code(
    output: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    orphans = node_check.find_orphans(WEPS, "node1", exists=lambda name: name == "calilive")
    monkeypatch.setattr(node_check, "local_orphans", lambda args, node: orphans)
    rc = node_check.check_command(argparse.Namespace(node="node1", output=output, config=None))
    out = capsys.readouterr().out
    assert rc == 1
    if output == "json":
        doc = json.loads(out)
        assert doc["node"] == "node1" and [o["name"] for o in doc["orphanedEndpoints"]] == [
            "node1-k8s-a-eth0",
            "node1-k8s-b-eth0",
        ]
    elif output == "yaml":
        assert "orphanedEndpoints:" in out and "node1-k8s-a-eth0" in out
    else:
        header = out.splitlines()[0]
        assert header.split()[:4] == ["NAMESPACE", "NAME", "INTERFACE", "ADDRESSES"]
        assert ("PROBLEM" in header) == (output == "wide")
        assert "10.0.0.1/32" in out and "2 workload endpoint(s)" in out
    monkeypatch.setattr(node_check, "local_orphans", lambda args, node: [])
    assert node_check.check_command(argparse.Namespace(node="node1", output="table", config=None)) == 0
    assert "every workload endpoint has its interface" in capsys.readouterr().out


def test_ipam_report_counts_orphaned_endpoints() -> None:
    rep = CheckReport(orphaned_endpoints=[{"name": "x", "addresses": ["10.0.0.1/32"]}])
    assert rep.problems == 1
    assert rep.to_json()["orphanedEndpoints"] == [{"name": "x", "addresses": ["10.0.0.1/32"]}]
