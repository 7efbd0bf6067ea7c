"""felixctl ipam / ippool verbs on a real etcd (parsers built from ipam_cmd.register)."""

from __future__ import annotations

import argparse
import json

import pytest

from felixpy.ctl import ipam_cmd
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node
from ipam.ipam import IPAM
from tests.integration.ipam_helpers import assert_consistent, make_node, make_pool

pytestmark = pytest.mark.integration


@pytest.fixture
def ctl(etcd_endpoints, monkeypatch, capsys):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoints)
    monkeypatch.delenv("DATASTORE_TYPE", raising=False)
    parser = argparse.ArgumentParser(prog="felixctl")
    parser.add_argument("--config")
    ipam_cmd.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(list(argv))
        rc = args.func(args)
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def test_show_totals_blocks_and_ip(ctl, etcd_kv, etcd_backend) -> None:
    make_pool(etcd_backend, "p", "10.0.0.0/24")
    ipam = IPAM(etcd_kv, etcd_backend)
    r = ipam.auto_assign("h1", node="n1", num_v4=5, attrs={"pod": "web", "namespace": "default"})
    rc, out, _ = ctl("ipam", "show", "--show-blocks")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["GROUPING", "CIDR", "IPS", "TOTAL", "IPS", "IN", "USE", "IPS", "FREE"]
    assert lines[1].split() == ["IP", "Pool", "10.0.0.0/24", "256", "5", "(2%)", "251", "(98%)"]
    block = r.blocks[r.v4[0]]
    assert lines[2].split() == ["Block", block, "64", "5", "(8%)", "59", "(92%)"]
    rc, out, _ = ctl("ipam", "show", "--ip", r.v4[0])
    assert rc == 0 and f"IP {r.v4[0]} is in use" in out and "Handle ID: h1" in out and "  pod: web" in out
    rc, out, _ = ctl("ipam", "show", "--ip", "10.0.0.250")
    assert rc == 1 and "10.0.0.250 is not assigned" in out


def test_check_report_and_release_from_report(ctl, etcd_kv, etcd_backend, tmp_path) -> None:
    make_pool(etcd_backend, "p", "10.0.0.0/24")
    make_node(etcd_backend, "n1")
    ipam = IPAM(etcd_kv, etcd_backend)
    used = ipam.auto_assign("k8s-pod-network.used", node="n1").v4[0]
    leak = ipam.auto_assign("k8s-pod-network.leak", node="n1").v4[0]
    ipam.auto_assign("k8s-pod-network.ghost", node="ghost-node")
    etcd_backend.create(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": "n1-k8s-a-eth0", "namespace": "default"},
                "spec": {
                    "node": "n1",
                    "interfaceName": "cali1",
                    "ipNetworks": [f"{used}/32", "10.0.0.200/32"],
                },
            }
        )
    )
    report = tmp_path / "r.json"
    rc, out, _ = ctl("ipam", "check", "-o", str(report))
    assert rc == 0 and "Found 2 IPAM blocks." in out
    doc = json.loads(report.read_text())
    leaked = {a["ip"]: a["handle"] for a in doc["leakedIPs"]}
    assert leak in leaked and used not in leaked and len(leaked) == 2
    assert doc["inUseButNotAllocated"] == [{"ip": "10.0.0.200", "usedBy": "default/n1-k8s-a-eth0"}]
    assert [b["node"] for b in doc["blocksWithoutNode"]] == ["ghost-node"]
    assert out.rstrip().endswith(f"Check complete; found {doc['problems']} problems.")
    # The leak was re-assigned (different handle) after the report: it must not be released.
    ipam.release_ips([leak])
    ipam.assign_ip(leak, "k8s-pod-network.new", node="n1")
    rc, out, _ = ctl("ipam", "release", "--from-report", str(report))
    assert rc == 0 and "Released 1 IPs successfully" in out
    assert ipam.get_assignment(leak).handle_id == "k8s-pod-network.new"
    assert ipam.get_assignment(used) is not None
    assert_consistent(etcd_kv)


def test_release_ip_and_gc(ctl, etcd_kv, etcd_backend) -> None:
    make_pool(etcd_backend, "p", "10.0.0.0/24")
    ipam = IPAM(etcd_kv, etcd_backend)
    a = ipam.auto_assign("h", node="dead", attrs={"node": "dead"}).v4[0]
    rc, out, err = ctl("ipam", "release", "--ip", "10.0.0.251")
    assert rc == 1 and "IP address 10.0.0.251 is not assigned" in err
    make_node(etcd_backend, "alive")
    ipam.auto_assign("h2", node="alive", attrs={"node": "alive"})
    rc, out, _ = ctl("ipam", "gc")
    assert rc == 0 and "Node dead: released 1 IPs and 1 block affinities" in out
    assert ipam.get_assignment(a) is None and ipam.affine_blocks("dead") == []
    assert len(ipam.affine_blocks("alive")) == 1, "a live node keeps its blocks"
    b = ipam.auto_assign("h3", node="alive").v4[0]
    rc, out, _ = ctl("ipam", "release", "--ip", b)
    assert rc == 0 and out.strip() == f"Successfully released IP address {b}"


def test_ippool_verbs_enforce_checks(ctl, etcd_kv, etcd_backend) -> None:
    rc, out, _ = ctl(
        "ippool", "create", "p1", "--cidr", "10.0.0.0/24", "--ipip-mode", "Always", "--nat-outgoing"
    )
    assert rc == 0
    rc, _, err = ctl("ippool", "create", "p2", "--cidr", "10.0.0.128/25")
    assert rc == 1 and "overlaps IPPool 'p1'" in err
    rc, out, _ = ctl("ippool", "list")
    assert out.splitlines()[1].split() == [
        "p1",
        "10.0.0.0/24",
        "26",
        "Always",
        "Never",
        "true",
        "false",
        "all()",
    ]
    IPAM(etcd_kv, etcd_backend).auto_assign("h", node="n1", num_v4=3)
    rc, _, err = ctl("ippool", "delete", "p1")
    assert rc == 1 and "has 3 address(es) in use; disable it first" in err
    assert ctl("ippool", "disable", "p1")[0] == 0
    assert etcd_backend.get(IPPool, "p1").spec.disabled
    assert ctl("ippool", "delete", "p1")[0] == 0
    assert etcd_backend.list(IPPool)[0] == []
    assert etcd_backend.list(Node)[0] == []


def test_through_the_felixctl_entry_point(etcd_endpoints, etcd_backend) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "felixctl"
    if not exe.exists():
        pytest.skip(f"felixctl console script not installed at {exe}")
    make_pool(etcd_backend, "p", "10.0.0.0/24")
    env = {**os.environ, "ETCD_ENDPOINTS": etcd_endpoints}
    env.pop("DATASTORE_TYPE", None)
    out = subprocess.run([str(exe), "ipam", "show"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:4] == ["IP", "Pool", "10.0.0.0/24", "256"]
    out = subprocess.run([str(exe), "ippool", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "10.0.0.0/24" in out.stdout
