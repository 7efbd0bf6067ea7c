"""Golden calicoctl-style invocations of the administration verbs, through the real felixctl against a
real etcd: ipam configure / split / check (reservations), datastore migrate lock / unlock / export /
import, convert. Every failure is one line on stderr naming what is wrong, exit code 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.datastore.kv import KV
from ipam.ipam import IPAM
from tests.fixtures.etcd import running_etcd
from tests.integration.test_felixctl import Ctl, ctl, keys  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods, labels: {team: net}}
spec: {cidr: 10.60.0.0/24, blockSize: 28, natOutgoing: true, ipipMode: CrossSubnet}
"""
CLUSTER = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {role: blocked}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: keep}
spec: {reservedCIDRs: [10.60.0.0/30]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-blocked}
spec:
  selector: all()
  ingress: [{action: Deny, source: {selector: role == 'blocked'}}]
"""


def no_traceback(proc: Any) -> None:
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 2, proc.stderr


def test_ipam_configure(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    out = ctl("ipam", "configure", "--strictaffinity=true").stdout
    assert out == "Successfully set StrictAffinity to: true\n"
    out = ctl("ipam", "configure", "--max-blocks-per-host", "5").stdout
    assert out == "Successfully set MaxBlocksPerHost to: 5\n"
    table = ctl("ipam", "show", "--show-configuration").stdout
    assert any(line.split() == ["StrictAffinity", "true"] for line in table.splitlines())
    assert any(line.split() == ["MaxBlocksPerHost", "5"] for line in table.splitlines())
    got = yaml.safe_load(ctl("get", "ipamconfiguration", "default", "-o", "yaml").stdout)["spec"]
    assert got == {"strictAffinity": True, "maxBlocksPerHost": 5, "autoAllocateBlocks": True}
    assert [r.split() for r in ctl("get", "ipamconfig").stdout.splitlines()] == [
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"], ["default", "true", "true"]]  # fmt: skip
    wide = ctl("get", "ipamconfig", "-o", "wide").stdout.splitlines()
    assert wide[1].split() == ["default", "true", "true", "5"]
    for argv, message in (
        (["--strictaffinity=maybe"], "invalid value 'maybe' for --strictaffinity"),
        (["--max-blocks-per-host=many"], "invalid value 'many' for --max-blocks-per-host"),
        ([], "at least one configuration option must be specified"),
        (["--strictaffinity=false"], "field 'spec.maxBlocksPerHost': maxBlocksPerHost can only be set with"),
    ):
        proc = ctl("ipam", "configure", *argv, rc=1)
        assert message in proc.stderr, proc.stderr
        no_traceback(proc)
    assert yaml.safe_load(ctl("get", "ipamconfig", "default", "-o", "yaml").stdout)["spec"] == got


def test_ipam_split(ctl: Ctl, etcd_kv: KV, etcd_backend: Any) -> None:  # noqa: F811
    ctl("apply", "-f", "-", stdin=POOL)
    ipam = IPAM(etcd_kv, etcd_backend, cache_seconds=0)
    held = ipam.auto_assign("h", node="n1", num_v4=3).v4
    proc = ctl("ipam", "split", "2", "--name", "pods", rc=1)
    assert "datastore is not locked. Run the `felixctl datastore migrate lock` command" in proc.stderr
    no_traceback(proc)
    assert ctl("datastore", "migrate", "lock").stdout == "Datastore locked.\n"
    for argv, message in (
        (["3", "--name", "pods"], "must be a power of 2 greater than 1, not 3"),
        (["32", "--cidr", "10.60.0.0/24"], "smaller than the pool's blockSize /28"),
        (["2", "--name", "nope"], "unable to find IP pool with name nope"),
        (["2", "--cidr", "10.99.0.0/24"], "unable to find IP pool covering the specified CIDR 10.99.0.0/24"),
        (["2"], "no name or CIDR provided"),
        (["two", "--name", "pods"], "'two' is not a valid number"),
    ):
        proc = ctl("ipam", "split", *argv, rc=1)
        assert message in proc.stderr, proc.stderr
        no_traceback(proc)
    out = ctl("ipam", "split", "4", "--cidr", "10.60.0.0/24").stdout
    assert out.splitlines() == [
        "IP Pool pods was successfully split into 4 smaller pools.",
        "Created split-pods-0 with CIDR 10.60.0.0/26.",
        "Created split-pods-1 with CIDR 10.60.0.64/26.",
        "Created split-pods-2 with CIDR 10.60.0.128/26.",
        "Created split-pods-3 with CIDR 10.60.0.192/26.",
    ]
    pools = json.loads(ctl("get", "ippool", "-o", "json").stdout)["items"]
    assert [p["metadata"]["name"] for p in pools] == [f"split-pods-{i}" for i in range(4)]
    for p in pools:  # every setting carried over, none disabled
        assert p["metadata"]["labels"] == {"team": "net"}
        assert {k: p["spec"][k] for k in ("blockSize", "natOutgoing", "ipipMode")} == {
            "blockSize": 28, "natOutgoing": True, "ipipMode": "CrossSubnet"
        }  # fmt: skip
        assert not p["spec"].get("disabled")
    for a in held:  # existing allocations now lie in a pool
        assert ipam.get_assignment(a) is not None
    ctl("datastore", "migrate", "unlock")
    assert ipam.auto_assign("h2", node="n1").v4


def test_ipam_check_lists_allocations_in_a_reservation(ctl: Ctl, etcd_kv: KV, etcd_backend: Any) -> None:  # noqa: F811
    ctl("apply", "-f", "-", stdin=POOL)
    ipam = IPAM(etcd_kv, etcd_backend, cache_seconds=0)
    first = ipam.assign_ip("10.60.0.1", "before", node="n1")
    assert first == "10.60.0.0/28"
    ctl("apply", "-f", "-", stdin=CLUSTER)
    out = ctl("ipam", "check", "-o", "/dev/null").stdout
    assert (
        "  10.60.0.1 is allocated (handle before) inside IPReservation 'keep': kept; no new allocation "
        "gets a reserved address"
    ) in out
    got = ipam.auto_assign("after", node="n1", num_v4=4).v4
    assert not {"10.60.0.0", "10.60.0.2", "10.60.0.3"} & set(got)
    shown = ctl("ipam", "show", "--ip", "10.60.0.1").stdout.splitlines()
    assert shown[0] == "IP 10.60.0.1 is in use" and shown[1] == "Handle ID: before"
    assert shown[-1] == (
        "10.60.0.1 is reserved by IPReservation 'keep' (10.60.0.0/30) (allocated before the reservation; "
        "kept)"
    )
    proc = ctl("ipam", "release", "--ip", "10.60.0.1")
    assert proc.stdout == "Successfully released IP address 10.60.0.1\n"
    assert ctl("ipam", "show", "--ip", "10.60.0.1", rc=1).stdout.splitlines() == [
        "10.60.0.1 is not assigned",
        "10.60.0.1 is reserved by IPReservation 'keep' (10.60.0.0/30): IPAM never assigns it",
    ]


def test_datastore_migrate(ctl: Ctl, etcd_kv: KV, etcd_backend: Any, tmp_path: Path) -> None:  # noqa: F811
    ctl("apply", "-f", "-", stdin=POOL)
    ctl("apply", "-f", "-", stdin=CLUSTER)
    ctl("ipam", "configure", "--strictaffinity=true")
    IPAM(etcd_kv, etcd_backend, cache_seconds=0).auto_assign("h", node="n1", num_v4=2)
    proc = ctl("datastore", "migrate", "export", rc=1)
    assert "datastore is not locked" in proc.stderr
    no_traceback(proc)
    ctl("datastore", "migrate", "lock")
    info = yaml.safe_load(ctl("get", "clusterinformation", "default", "-o", "yaml").stdout)
    assert info["spec"]["datastoreReady"] is False
    table = ctl("get", "clusterinfo").stdout.splitlines()
    assert table[0].split() == ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"]
    assert table[1].split() == ["default", "false"]
    export = ctl("datastore", "migrate", "export")
    assert export.stderr == "Exported 6 resource(s) and 4 IPAM key(s).\n"
    v3, info_part, ipam_part = export.stdout.split("===\n")
    docs = list(yaml.safe_load_all(v3))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("IPPool", "pods"),
        ("GlobalNetworkPolicy", "deny-blocked"),
        ("GlobalNetworkSet", "blocked"),
        ("NetworkSet", "partners"),
        ("IPReservation", "keep"),
        ("IPAMConfiguration", "default"),
    ]
    assert all("resourceVersion" not in d["metadata"] for d in docs)
    assert json.loads(info_part)["spec"]["datastoreReady"] is False
    ipam = json.loads(ipam_part)  # calicoctl's shape: what IPAM wrote, one entry per key
    assert sorted(ipam) == ["block_affinities", "blocks", "config", "handles"]
    (block,) = ipam["blocks"]
    cidr = block["Value"]["cidr"]  # the block IPAM claimed, 10.60.0.x/28
    assert block["Key"] == "/calico/ipam/v2/assignment/ipv4/block/" + cidr.replace("/", "-")
    assert block["TTL"] == 0
    assert [e["Key"] for e in ipam["block_affinities"]] == [
        "/calico/ipam/v2/host/n1/ipv4/block/" + cidr.replace("/", "-")]  # fmt: skip
    assert [e["Key"] for e in ipam["handles"]] == ["/calico/ipam/v2/handle/h"]
    assert ipam["config"]["Key"] == "/calico/ipam/v2/config" and ipam["config"]["Value"]["strict_affinity"]
    assert ipam["block_affinities"][0]["Value"]["state"] == "confirmed"
    path = tmp_path / "export.txt"
    path.write_text(export.stdout)
    # importing into a non-empty (here: the same, locked) datastore is refused
    proc = ctl("datastore", "migrate", "import", "-f", str(path), rc=1)
    assert "datastore already has Calico resources: found existing IPPool resource 'pods'" in proc.stderr
    no_traceback(proc)
    bad = tmp_path / "bad.txt"
    bad.write_text("kind: IPPool\n")
    proc = ctl("datastore", "migrate", "import", "-f", str(bad), rc=1)
    assert "is not an export: it needs three parts" in proc.stderr
    (tmp_path / "target").mkdir()
    with running_etcd(tmp_path / "target") as target:
        other = Ctl(target.endpoints)
        out = other("datastore", "migrate", "import", "-f", str(path)).stdout
        assert "Successfully created 6 resource(s)" in out
        assert "Successfully applied 4 IPAM resource(s)" in out
        kv = target.kv()
        try:
            assert keys(kv) == keys(etcd_kv)
            src = {i.key: json.loads(i.value) for i in etcd_kv.list("/calico/ipam/v2/")[0]}
            dst = {i.key: json.loads(i.value) for i in kv.list("/calico/ipam/v2/")[0]}
            assert src == dst
        finally:
            kv.close()
        got = yaml.safe_load(other("get", "clusterinformation", "default", "-o", "yaml").stdout)
        assert got["spec"]["datastoreReady"] is False, "left locked for the operator"
        other("datastore", "migrate", "unlock")
        got = yaml.safe_load(other("get", "clusterinformation", "default", "-o", "yaml").stdout)
        assert got["spec"]["datastoreReady"] is True


V1 = """\
apiVersion: v1
kind: ipPool
metadata: {cidr: 10.1.0.0/16}
spec:
  ipip: {enabled: true, mode: cross-subnet}
  nat-outgoing: true
---
apiVersion: v1
kind: policy
metadata: {name: allow-tcp-6379}
spec:
  selector: role == 'database'
  types: [ingress, egress]
  ingress:
  - action: allow
    protocol: tcp
    source: {selector: role == 'frontend', "!net": 10.0.0.0/8}
    destination: {ports: [6379]}
  egress:
  - action: next-tier
---
apiVersion: v1
kind: bgpPeer
metadata: {peerIP: 192.168.1.1, scope: global}
spec: {asNumber: 63400}
"""
K8S_NP = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: web}}
    - namespaceSelector: {}
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    ports: [{port: 8080}, {protocol: UDP, port: 53, endPort: 60}]
"""


def test_convert(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    docs = list(yaml.safe_load_all(ctl("convert", "-f", "-", stdin=V1).stdout))
    assert (docs[0]["kind"], docs[0]["metadata"]) == ("IPPool", {"name": "10-1-0-0-16"})
    pool = docs[0]["spec"]
    assert (pool["cidr"], pool["ipipMode"], pool["natOutgoing"]) == ("10.1.0.0/16", "CrossSubnet", True)
    gnp = docs[1]
    assert (gnp["kind"], gnp["metadata"]["name"]) == ("GlobalNetworkPolicy", "allow-tcp-6379")
    assert gnp["spec"]["types"] == ["Ingress", "Egress"]
    rule = gnp["spec"]["ingress"][0]
    assert rule["action"] == "Allow" and rule["protocol"] == "TCP"
    assert rule["source"]["selector"] == "role == 'frontend'" and rule["source"]["notNets"] == ["10.0.0.0/8"]
    assert rule["destination"]["ports"] == [6379]
    assert gnp["spec"]["egress"][0]["action"] == "Pass"
    assert (docs[2]["kind"], docs[2]["metadata"]["name"]) == ("BGPPeer", "bgppeer-global-192-168-1-1")
    assert docs[2]["spec"]["peerIP"] == "192.168.1.1" and docs[2]["spec"]["asNumber"] == 63400
    # the output applies as it is
    ctl("apply", "-f", "-", stdin=ctl("convert", "-f", "-", stdin=V1).stdout)
    assert keys(etcd_kv) == [
        "bgppeers/bgppeer-global-192-168-1-1", "globalnetworkpolicies/allow-tcp-6379", "ippools/10-1-0-0-16",
    ]  # fmt: skip

    np = json.loads(ctl("convert", "-f", "-", "-o", "json", stdin=K8S_NP).stdout)
    assert np["kind"] == "NetworkPolicy"
    assert np["metadata"] == {"name": "knp.default.api", "namespace": "prod"}
    spec = np["spec"]
    assert spec["order"] == 1000 and spec["types"] == ["Ingress"]
    assert spec["selector"] == "projectcalico.org/orchestrator == 'k8s' && app == 'api'"
    tcp = [r for r in spec["ingress"] if r["protocol"] == "TCP"]
    udp = [r for r in spec["ingress"] if r["protocol"] == "UDP"]
    assert len(tcp) == 3 and len(udp) == 3
    assert tcp[0]["source"]["selector"] == "projectcalico.org/orchestrator == 'k8s' && role == 'web'"
    assert tcp[1]["source"]["namespaceSelector"] == "all()"
    assert (tcp[2]["source"]["nets"], tcp[2]["source"]["notNets"]) == (["172.17.0.0/16"], ["172.17.1.0/24"])
    assert tcp[0]["destination"]["ports"] == [8080] and udp[0]["destination"]["ports"] == ["53:60"]

    for stdin, message in (
        ("apiVersion: v1\nkind: workloadEndpoint\nmetadata: {name: x}\n", "field 'metadata.node': required"),
        ("apiVersion: v1\nkind: tier\nmetadata: {name: x}\n", "v1 kind 'tier' cannot be converted"),
        ("apiVersion: v1\nkind: policy\nmetadata: {name: x}\nspec: {ingress: [{action: maybe}]}\n",
         "field 'spec.ingress[0].action': unknown action 'maybe'"),
        ("apiVersion: v1\nkind: profile\nmetadata: {name: x, tags: [a]}\n", "field 'metadata.tags'"),
        ("apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.0.0.0/99}\n", "converted"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "field 'apiVersion'"),
        ("- [unclosed\n", ""),
    ):  # fmt: skip
        proc = ctl("convert", "-f", "-", stdin=stdin, rc=1)
        assert message in proc.stderr, proc.stderr
        no_traceback(proc)


def test_bad_input_is_one_line(ctl: Ctl, etcd_kv: KV, tmp_path: Path) -> None:  # noqa: F811
    for argv, rc, message in (
        (["node", "diags", "--output-dir", str(tmp_path / "nope")], 1, "is not a directory"),
        (["datastore", "migrate", "import", "-f", str(tmp_path / "nope")], 1, "cannot read"),
        (["convert", "-f", str(tmp_path / "nope")], 1, "cannot read"),
        (["ipam", "configure", "--max-blocks-per-host=-3", "--strictaffinity=true"], 1,
         "field 'spec.maxBlocksPerHost'"),
        (["datastore", "migrate"], 2, "required: SUBCOMMAND"),
        (["ipam", "split", "2", "--name", "a", "--cidr", "10.0.0.0/8"], 2, "not allowed with argument"),
    ):  # fmt: skip
        proc = ctl(*argv, rc=rc)
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert ctl("node", "checksystem", "-f", str(tmp_path / "nope"), rc=1).stdout.splitlines()[1] == (
        f"FAIL  kernel config: {tmp_path / 'nope'} cannot be read (-f)"
    )


V1_NODE_WEP = """\
apiVersion: v1
kind: node
metadata: {name: Rack1_Host1}
spec:
  bgp: {asNumber: 64512, ipv4Address: 10.0.0.5/24}
  orchRefs: [{nodeName: rack1-host1, orchestrator: k8s}]
---
apiVersion: v1
kind: workloadEndpoint
metadata:
  name: eth0
  workload: prod.frontend-5gs43
  orchestrator: k8s
  node: rack1-host1
  activeInstanceID: 1337495556942031415ba4bd5a5ba3b2
  labels: {app: frontend, calico/k8s_ns: prod}
spec:
  interfaceName: cali0ef24ba
  mac: ca:fe:1d:52:bb:e9
  ipNetworks: [10.244.3.7/32]
  profiles: [k8s_ns.prod]
  ports: [{name: http, port: 80, protocol: tcp}]
"""


def test_convert_v1_node_and_workload_endpoint(ctl: Ctl, etcd_kv: KV) -> None:  # noqa: F811
    """calicoctl converts v1 node and workloadEndpoint too (libcalico-go's upgrade converters)."""
    node, wep = yaml.safe_load_all(ctl("convert", "-f", "-", stdin=V1_NODE_WEP).stdout)
    assert (node["kind"], node["metadata"]["name"]) == ("Node", "rack1-host1")  # normalised, no suffix
    assert node["spec"]["bgp"] == {"ipv4Address": "10.0.0.5/24", "asNumber": 64512}
    assert node["spec"]["orchRefs"] == [{"nodeName": "rack1-host1", "orchestrator": "k8s"}]
    assert wep["kind"] == "WorkloadEndpoint"
    assert wep["metadata"]["name"] == "rack1--host1-k8s-frontend--5gs43-eth0"
    assert wep["metadata"]["namespace"] == "prod"
    assert wep["metadata"]["labels"] == {"app": "frontend", "projectcalico.org/namespace": "prod"}
    spec = wep["spec"]
    assert (spec["orchestrator"], spec["node"], spec["pod"], spec["endpoint"]) == (
        "k8s", "rack1-host1", "frontend-5gs43", "eth0")  # fmt: skip
    assert spec["containerID"] == "1337495556942031415ba4bd5a5ba3b2"
    assert spec["profiles"] == ["kns.prod"] and spec["ipNetworks"] == ["10.244.3.7/32"]
    assert spec["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]
    # the output applies as it is, and reads back
    ctl("apply", "-f", "-", stdin=ctl("convert", "-f", "-", stdin=V1_NODE_WEP).stdout)
    assert keys(etcd_kv) == [
        "nodes/rack1-host1", "workloadendpoints/prod/rack1--host1-k8s-frontend--5gs43-eth0"]  # fmt: skip
    got = yaml.safe_load(ctl("get", "wep", "-n", "prod", "-o", "yaml",
                             "rack1--host1-k8s-frontend--5gs43-eth0").stdout)  # fmt: skip
    assert got["spec"]["interfaceName"] == "cali0ef24ba"
    bad = ctl("convert", "-f", "-", rc=1, stdin=(
        "apiVersion: v1\nkind: workloadEndpoint\n"
        "metadata: {name: eth0, workload: nodot, orchestrator: k8s, node: n1}\n"))  # fmt: skip
    assert "field 'metadata.workload': malformed k8s workload ID 'nodot'" in bad.stderr
    no_traceback(bad)
    no_bgp_address = "apiVersion: v1\nkind: node\nmetadata: {name: n}\nspec: {bgp: {}}\n"
    bad = ctl("convert", "-f", "-", rc=1, stdin=no_bgp_address)
    assert "field 'spec.bgp': needs ipv4Address or ipv6Address" in bad.stderr


def test_cluster_diags_one_archive_of_the_datastore(
    ctl: Ctl, etcd_kv: KV, tmp_path: Path, request: pytest.FixtureRequest  # noqa: F811
) -> None:
    """``cluster diags``: every kind as ``get -A -o yaml`` (the applied ones come back), versions, the
    node list and IPAM, in one tar.gz; kubectl-only flags are refused, not ignored."""
    import shutil
    import tarfile

    ctl("apply", "-f", "-", stdin=POOL + "---\n" + CLUSTER)
    out = ctl("cluster", "diags", "--output-dir", str(tmp_path), "--skip-temp-dir-cleanup").stdout
    assert "Recording felixctl get globalnetworksets -A -o yaml" in out
    kept = Path(next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Temporary")))
    request.addfinalizer(lambda: shutil.rmtree(kept.parent, ignore_errors=True))  # the kept temp dir
    archive = Path(out.strip().splitlines()[-1].removeprefix("Diags saved to "))
    assert archive.parent == tmp_path and archive.name.startswith("cluster-diags-")
    with tarfile.open(archive) as tar:
        names = {Path(n).relative_to(kept.name).as_posix() for n in tar.getnames() if "/" in n}
        assert {"version.txt", "nodes_wide.txt", "ipam_show_blocks.txt", "ipam_check.txt"} <= names

        def read(name: str) -> str:
            member = tar.extractfile(f"{kept.name}/{name}")
            assert member is not None
            return member.read().decode()

        gns = read("resources/globalnetworksets.yaml")
        assert gns.startswith("# felixctl get globalnetworksets -A -o yaml (exit code 0)\n")
        assert "blocked" in gns and "192.0.2.0/24" in gns
        assert "partners" in read("resources/networksets.yaml")  # namespaced: every namespace
        assert "10.60.0.0/24" in read("resources/ippools.yaml")
        assert "exit code 0" in read("version.txt") and "Client Version" in read("version.txt")
    assert (kept / "resources" / "ippools.yaml").is_file()  # --skip-temp-dir-cleanup kept it
    proc = ctl("cluster", "diags", "--since", "1h", rc=2)
    assert "unrecognized arguments: --since" in proc.stderr
    no_traceback(ctl("cluster", "diags", "--output-dir", str(tmp_path / "nope"), rc=1))
