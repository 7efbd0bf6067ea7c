"""A golden corpus of calicoctl-style invocations, run through the real felixctl against a real etcd:
each line is what a Calico user types, with the exit code and the output calicoctl's grammar gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from felixpy.datastore.kv import KV
from tests.integration.test_felixctl import ROOT, Ctl, ctl, keys  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

LIST_DOC = """\
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: p1}
  spec: {cidr: 10.10.0.0/16}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata: {name: blocked, labels: {role: blocked}}
  spec: {nets: [192.0.2.0/24, 198.51.100.7]}
"""
NETSET = """\
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod}
spec: {nets: [203.0.113.0/24]}
"""
MORE_KINDS = """\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: keep}
spec: {reservedCIDRs: [10.10.0.0/28]}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: true, maxBlocksPerHost: 4}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec: {labelsToApply: {pcns.projectcalico.org/name: prod}, ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: node-a-status}
spec: {node: node-a, classes: [Agent, BGP, Routes], updatePeriodSeconds: 10}
---
apiVersion: projectcalico.org/v3
kind: ClusterInformation
metadata: {name: default}
spec: {calicoVersion: v3.29.1, clusterType: "k8s,bgp", datastoreReady: true}
"""
FELIX = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vethMTU: 1400, bpfEnabled: false, chainInsertMode: Append}
"""


def test_input_shapes(ctl: Ctl, etcd_kv: KV, tmp_path: Path) -> None:  # noqa: F811
    out = ctl("apply", "-f", "-", stdin=LIST_DOC).stdout
    assert "Successfully applied 2 resource(s)" in out
    assert keys(etcd_kv) == ["globalnetworksets/blocked", "ippools/p1"]
    # a directory: its manifests, sub-directories with -R
    (tmp_path / "ns").mkdir()
    (tmp_path / "more.yaml").write_text(MORE_KINDS)
    (tmp_path / "README.md").write_text("# not a manifest")
    (tmp_path / "ns" / "netset.yml").write_text(NETSET)
    ctl("validate", "-f", str(tmp_path))
    (tmp_path / "empty").mkdir()
    assert "Successfully applied 0" in ctl("apply", "-f", str(tmp_path / "empty"), "--skip-empty").stdout
    out = ctl("create", "-f", str(tmp_path)).stdout
    assert "Successfully created 5 resource(s)" in out and "networksets/prod/partners" not in keys(etcd_kv)
    out = ctl("create", "-f", str(tmp_path), "-R", "--skip-exists").stdout
    assert "Successfully created 1 'NetworkSet' resource(s)" in out
    assert "networksets/prod/partners" in keys(etcd_kv)
    assert "already exists" in ctl("create", "-f", str(tmp_path), "-R", rc=1).stderr
    got = yaml.safe_load(ctl("get", "ipamconfiguration", "default", "-o", "yaml").stdout)
    assert got["spec"] == {"strictAffinity": True, "maxBlocksPerHost": 4, "autoAllocateBlocks": True}
    assert "v3.29.1" in ctl("version").stdout
    got = json.loads(ctl("get", "networksets", "-n", "prod", "-o", "json").stdout)
    assert [i["spec"]["nets"] for i in got["items"]] == [["203.0.113.0/24"]]
    bad = MORE_KINDS.replace("maxBlocksPerHost: 4", "maxBlocksPerHost: -4")
    err = ctl("apply", "-f", "-", stdin=bad, rc=1).stderr
    assert "IPAMConfiguration 'default': field 'spec.maxBlocksPerHost'" in err


def test_grammar_and_outputs(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    ctl("apply", "-f", "-", stdin=LIST_DOC)
    # flags between KIND and NAME
    got = yaml.safe_load(ctl("get", "ippool", "-o", "yaml", "p1").stdout)
    assert got["metadata"]["name"] == "p1" and got["spec"]["cidr"] == "10.10.0.0/16"
    assert ctl("get", "gns", "-o", "name").stdout == "blocked\n"
    out = ctl(
        "get", "ippool", "-o", "custom-columns=NAME:.metadata.name,CIDR:.spec.cidr,NAT:.spec.natOutgoing"
    )
    assert out.stdout.splitlines() == ["NAME   CIDR           NAT", "p1     10.10.0.0/16   false"]
    tpl = '{{range .items}}{{.metadata.name}}={{.spec.cidr}}{{"\\n"}}{{end}}'
    assert ctl("get", "ippool", "-o", f"go-template={tpl}").stdout == "p1=10.10.0.0/16\n"
    assert "'if' is not supported" in ctl("get", "ippool", "-o", "go-template={{if .x}}{{end}}", rc=1).stderr
    assert ctl("get", "ippool", "-o", "table", "--bogus", rc=2).returncode == 2
    # delete -s / --skip-not-exists, and the old spelling
    assert "Successfully deleted 0" in ctl("delete", "ippool", "nope", "-s").stdout
    assert "Successfully deleted 0" in ctl("delete", "--skip-not-found", "ippool", "nope").stdout
    assert "resource does not exist" in ctl("delete", "ippool", "nope", rc=1).stderr


def test_patch_label_validate_warn(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    ctl("apply", "-f", "-", stdin=LIST_DOC)
    ctl("patch", "ippool", "p1", "-p", '{"spec": {"natOutgoing": true}}')
    ctl(
        "patch",
        "ippool",
        "p1",
        "--type",
        "json",
        "-p",
        '[{"op": "replace", "path": "/spec/disabled", "value": true}]',
    )
    spec = yaml.safe_load(ctl("get", "ippool", "p1", "-o", "yaml").stdout)["spec"]
    assert spec["natOutgoing"] is True and spec["disabled"] is True
    err = ctl("patch", "ippool", "p1", "-p", '{"spec": {"blockSize": 99}}', rc=1).stderr
    assert "field 'spec.blockSize'" in err
    err = ctl("patch", "ippool", "p1", "-p", '{"metadata": {"name": "p2"}}', rc=1).stderr
    assert "cannot change the kind or metadata.name" in err
    ctl("label", "gns", "blocked", "tier=edge")
    assert "add --overwrite" in ctl("label", "gns", "blocked", "tier=core", rc=1).stderr
    ctl("label", "gns", "blocked", "tier=core", "--overwrite")
    labels = yaml.safe_load(ctl("get", "gns", "blocked", "-o", "yaml").stdout)["metadata"]["labels"]
    assert labels == {"role": "blocked", "tier": "core"}
    ctl("label", "gns", "blocked", "tier", "--remove")
    labels = yaml.safe_load(ctl("get", "gns", "blocked", "-o", "yaml").stdout)["metadata"]["labels"]
    assert labels == {"role": "blocked"}
    # nothing accepted silently: validate lists, apply warns (exit 0), both name each field
    before = keys(etcd_kv)
    out = ctl("validate", "-f", "-", stdin=FELIX).stdout
    assert "spec.chainInsertMode: stored but not acted on" in out and "spec.vethMTU" not in out
    assert keys(etcd_kv) == before  # validate writes nothing
    err = ctl("apply", "-f", "-", stdin=FELIX).stderr
    assert "Warning: FelixConfiguration 'default': stored but not acted on by felixpy:" in err
    assert "spec.chainInsertMode" in err and "spec.vethMTU" not in err
    assert "felixconfigurations/default" in keys(etcd_kv)
    # a Profile's rules and labelsToApply are enforced by the agent: no warning
    profile = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: dev-apps}\n"
    profile += "spec: {ingress: [{action: Deny}], labelsToApply: {team: dev}}\n"
    assert "not acted on" not in ctl("validate", "-f", "-", stdin=profile).stdout
    assert "not acted on" not in ctl("apply", "-f", "-", stdin=profile).stderr


HTTP_POLICY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: api-get}
spec:
  selector: app == 'api'
  ingress:
  - {action: Allow, protocol: TCP, destination: {ports: [80]}, http: {methods: [GET]}}
  egress:
  - {action: Deny, destination: {services: {name: db, namespace: prod}}}
  - {action: Allow}
"""


def test_unenforced_policy_matches_are_named_and_stored(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    """A policy rule with ``http`` or ``services`` is accepted as Calico accepts it, and validate/apply
    name each such match with what the rule does instead (it fails closed)."""
    http = "spec.ingress[0].http: not enforced by felixpy (HTTP (L7) matches need application-layer "
    http += "policy, which felixpy does not implement); the rule never allows"
    service = "spec.egress[0].destination.services: not enforced by felixpy (Service matches are not "
    service += "implemented); the rule denies without that match (a superset)"
    out = ctl("validate", "-f", "-", stdin=HTTP_POLICY).stdout
    assert f"GlobalNetworkPolicy 'api-get': {http}" in out and service in out
    assert "Successfully validated 1 resource(s)" in out
    proc = ctl("apply", "-f", "-", stdin=HTTP_POLICY)
    assert proc.stdout.startswith("Successfully applied 1 ")
    assert f"Warning: GlobalNetworkPolicy 'api-get': {http}" in proc.stderr and service in proc.stderr
    assert "egress[1]" not in proc.stderr
    assert "globalnetworkpolicies/api-get" in keys(etcd_kv)
