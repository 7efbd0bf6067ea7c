"""felixctl's resource verbs, run as the real command line against a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.datastore.kv import KV
from felixpy.resources.parse import flatten, load_yaml, parse_documents
from tests.unit.test_resources_roundtrip import assert_contains

pytestmark = pytest.mark.integration

FELIXCTL = str(Path(sys.executable).parent / "felixctl")
MANIFESTS = Path(__file__).parents[1] / "data" / "manifests"
ROOT = "/calico/resources/v3/projectcalico.org/"


class Ctl:
    """Runs felixctl with ETCD_ENDPOINTS pointing at the test etcd."""

    def __init__(self, endpoints: str):
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATASTORE_TYPE", "ETCD_ENDPOINTS")}
        self.env["ETCD_ENDPOINTS"] = endpoints

    def __call__(self, *args: str, stdin: str | None = None, rc: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [FELIXCTL, *args], input=stdin, env=self.env, capture_output=True, text=True, timeout=60
        )
        output = f"{proc.stdout}{proc.stderr}"
        assert proc.returncode == rc, f"felixctl {' '.join(args)} -> {proc.returncode}\n{output}"
        return proc


@pytest.fixture
def ctl(etcd_kv: KV, etcd_endpoints: str) -> Ctl:
    return Ctl(etcd_endpoints)  # etcd_kv first: the keyspace starts empty


def keys(kv: KV, prefix: str = ROOT) -> list[str]:
    return [item.key.removeprefix(ROOT) for item in kv.list(prefix)[0]]


def identity(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"]


def pool_doc(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec}}  # fmt: skip


def test_apply_get_delete_in_every_format(ctl: Ctl, etcd_kv: KV) -> None:
    path = MANIFESTS / "ippools.yaml"
    assert ctl("apply", "-f", str(path)).stdout == "Successfully applied 3 'IPPool' resource(s)\n"
    names = ["default-ipv4-ippool", "default-ipv6-ippool", "rack-b-pool"]
    assert keys(etcd_kv) == [f"ippools/{n}" for n in names]

    table = ctl("get", "ippool").stdout.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert table[1] == "default-ipv4-ippool   10.244.0.0/16      all()"
    assert table[3].split(None, 2) == ["rack-b-pool", "10.245.0.0/20", "rack == 'b'"]
    assert ctl("get", "ippools", "-o", "ps").stdout.splitlines() == table
    wide = ctl("get", "pool", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:5] == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE"]
    assert wide[1].split() == ["default-ipv4-ippool", "10.244.0.0/16", "true", "CrossSubnet", "Never",
                               "false", "false", "all()", "Automatic"]  # fmt: skip

    written = flatten(load_yaml(path.read_text()))
    as_yaml = yaml.safe_load(ctl("get", "ippool", "-o", "yaml").stdout)
    as_json = json.loads(ctl("get", "IPPool", "-o", "json").stdout)
    for listed in (as_yaml, as_json):
        assert listed["kind"] == "IPPoolList"
        by_name = sorted(written, key=lambda d: d["metadata"]["name"])
        for doc, item in zip(by_name, listed["items"], strict=True):
            assert_contains(doc, item)
            assert item["metadata"]["resourceVersion"]
    one = yaml.safe_load(ctl("get", "ippool", "rack-b-pool", "-o", "yaml").stdout)
    assert one["kind"] == "IPPool" and one["spec"]["blockSize"] == 28

    assert ctl("delete", "ippool", "rack-b-pool").stdout == "Successfully deleted 1 'IPPool' resource(s)\n"
    missing = ctl("get", "ippool", "rack-b-pool", rc=1)
    assert "resource does not exist: IPPool 'rack-b-pool'" in missing.stderr
    assert ctl("delete", "-f", str(path), "--skip-not-found").stdout.startswith("Successfully deleted 2 ")
    assert keys(etcd_kv) == []


def test_every_manifest_applies_and_reads_back(ctl: Ctl) -> None:
    texts = [p.read_text() for p in sorted(MANIFESTS.iterdir())]
    written = [doc for text in texts for doc in flatten(load_yaml(text))]
    proc = ctl("apply", "-f", "-", stdin="\n---\n".join(texts))  # JSON documents are YAML documents too
    assert proc.stdout == f"Successfully applied {len(written)} resource(s)\n"
    stored: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for kind in {d["kind"] if d["apiVersion"] == "projectcalico.org/v3" else "knp" for d in written}:
        for item in json.loads(ctl("get", kind, "-A", "-o", "json").stdout)["items"]:
            stored[identity(item)] = item
    for doc in written:
        assert_contains(doc, stored[identity(doc)])


def test_multi_document_apply_is_all_or_nothing(ctl: Ctl, etcd_kv: KV) -> None:
    docs = [pool_doc("a", "10.1.0.0/16"), pool_doc("b", "10.2.0.0/16"), pool_doc("c", "10.3.0.1/16")]
    text = "---\n".join(yaml.safe_dump(d) for d in docs)
    proc = ctl("apply", "-f", "-", stdin=text, rc=1)
    assert proc.stderr.strip() == (
        "Failed to execute command: document 3, IPPool 'c': field 'spec.cidr': "
        "'10.3.0.1/16' has host bits set; the network is '10.3.0.0/16'"
    )
    assert proc.stdout == ""
    assert keys(etcd_kv) == []


def test_create_of_existing_fails_and_writes_nothing(ctl: Ctl, etcd_kv: KV) -> None:
    created = ctl("create", "-f", str(MANIFESTS / "pools.json")).stdout
    assert created == "Successfully created 1 'IPPool' resource(s)\n"
    again = ctl("create", "-f", str(MANIFESTS / "pools.json"), rc=1)
    assert "resource already exists: IPPool 'json-pool'" in again.stderr
    both = json.dumps([pool_doc("fresh", "10.9.0.0/16"), pool_doc("json-pool", "10.60.0.0/16")])
    proc = ctl("create", "-f", "-", stdin=both, rc=1)
    assert "document 2: resource already exists: IPPool 'json-pool'" in proc.stderr
    assert keys(etcd_kv) == ["ippools/json-pool"]


def test_replace_with_stale_resource_version_conflicts(ctl: Ctl, etcd_kv: KV, tmp_path: Path) -> None:
    ctl("apply", "-f", str(MANIFESTS / "pools.json"))
    snapshot = ctl("get", "ippool", "json-pool", "-o", "yaml").stdout
    changed = yaml.safe_load(snapshot)
    changed["spec"]["natOutgoing"] = False
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    assert ctl("replace", "-f", str(tmp_path / "changed.yaml")).stdout.startswith("Successfully replaced 1 ")

    stale = yaml.safe_load(snapshot)
    stale["spec"]["disabled"] = True
    proc = ctl("replace", "-f", "-", stdin=yaml.safe_dump(stale), rc=1)
    assert "update conflict: IPPool 'json-pool' was modified since resourceVersion" in proc.stderr
    current = json.loads(ctl("get", "ippool", "json-pool", "-o", "json").stdout)
    assert current["spec"]["disabled"] is False and current["spec"]["natOutgoing"] is False

    del stale["metadata"]["resourceVersion"]  # no version: replace whatever is there
    ctl("replace", "-f", "-", stdin=yaml.safe_dump(stale))
    assert json.loads(ctl("get", "ippool", "json-pool", "-o", "json").stdout)["spec"]["disabled"] is True
    missing = ctl("replace", "-f", "-", stdin=yaml.safe_dump(pool_doc("ghost", "10.8.0.0/16")), rc=1)
    assert "resource does not exist: IPPool 'ghost'" in missing.stderr


def test_list_kind_from_stdin_and_get_output_reapplies(ctl: Ctl, etcd_kv: KV) -> None:
    proc = ctl("create", "-f", "-", stdin=(MANIFESTS / "list.yaml").read_text())
    assert proc.stdout == "Successfully created 2 resource(s)\n"
    peers = ctl("get", "bgppeer").stdout.splitlines()
    assert peers[1].split() == ["list-peer-1", "10.0.0.1:1179", "(global)", "65000"]
    by_file = ctl("get", "-f", str(MANIFESTS / "list.yaml"), "-o", "json").stdout
    assert [o.name for o in parse_documents(by_file)] == ["list-pool-1", "list-peer-1"]
    exported = ctl("get", "ippool", "-o", "yaml").stdout
    ctl("delete", "ippool", "list-pool-1")
    assert ctl("apply", "-f", "-", stdin=exported).stdout == "Successfully applied 1 'IPPool' resource(s)\n"
    assert parse_documents(ctl("get", "ippool", "-o", "json").stdout)[0].name == "list-pool-1"


def test_namespaces(ctl: Ctl, etcd_kv: KV) -> None:
    policy = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "np1"},
              "spec": {"selector": "app == 'x'"}}  # fmt: skip
    ctl("apply", "-f", "-", stdin=json.dumps(policy))
    ctl("apply", "-n", "team-a", "-f", "-", stdin=json.dumps(policy))
    assert keys(etcd_kv) == ["networkpolicies/default/np1", "networkpolicies/team-a/np1"]
    mismatch = {**policy, "metadata": {"name": "np1", "namespace": "team-b"}}
    proc = ctl("apply", "-n", "team-a", "-f", "-", stdin=json.dumps(mismatch), rc=1)
    assert "field 'metadata.namespace'" in proc.stderr
    assert [line.split() for line in ctl("get", "netpol", "-A").stdout.splitlines()] == [
        ["NAMESPACE", "NAME", "TIER"], ["default", "np1", "default"], ["team-a", "np1", "default"],
    ]  # fmt: skip
    assert len(ctl("get", "networkpolicy", "-n", "team-a").stdout.splitlines()) == 2
    ctl("delete", "np", "np1", "-n", "team-a")
    assert keys(etcd_kv) == ["networkpolicies/default/np1"]


def test_config_file_and_bad_usage(ctl: Ctl, etcd_endpoints: str, tmp_path: Path) -> None:
    cfg = tmp_path / "felixctl.cfg"
    spec = {"datastoreType": "etcdv3", "etcdEndpoints": etcd_endpoints}
    cfg.write_text(yaml.safe_dump({"apiVersion": "v3", "kind": "CalicoAPIConfig", "spec": spec}))
    ctl.env["ETCD_ENDPOINTS"] = "http://127.0.0.1:1"  # would fail: the file must win
    assert ctl("--config", str(cfg), "apply", "-f", str(MANIFESTS / "pools.json")).returncode == 0
    assert "json-pool" in ctl("get", "ippool", "-c", str(cfg)).stdout
    assert "resource type 'frobs' is not supported" in ctl("get", "frobs", "-c", str(cfg), rc=1).stderr
    assert "cannot read" in ctl("apply", "-f", str(tmp_path / "nope.yaml"), "-c", str(cfg), rc=1).stderr
    assert ctl("get", "ippool", "-o", "xml", rc=2).stderr


def test_pools_may_not_overlap_or_change_cidr(ctl: Ctl, etcd_kv: KV) -> None:
    ctl("apply", "-f", "-", stdin=json.dumps(pool_doc("a", "10.10.0.0/16")))
    batch = json.dumps([pool_doc("b", "10.11.0.0/16"), pool_doc("c", "10.10.128.0/17")])
    proc = ctl("apply", "-f", "-", stdin=batch, rc=1)
    assert "document 2, IPPool 'c': field 'spec.cidr': overlaps IPPool 'a' (10.10.0.0/16)" in proc.stderr
    resized = json.dumps(pool_doc("a", "10.10.0.0/16", blockSize=28))
    assert "field 'spec.blockSize': cannot be changed" in ctl("apply", "-f", "-", stdin=resized, rc=1).stderr
    assert keys(etcd_kv) == ["ippools/a"]
