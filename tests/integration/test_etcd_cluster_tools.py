"""ETCD_ENDPOINTS with three members for the tools: felixctl (its config file) and the CNI IPAM
plugin (its network config's etcd_endpoints, as Calico's plugin reads it), with a member down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.resources import KVBackend
from tests.fixtures.etcd_cluster import USER, EtcdCluster
from tests.integration.ipam_helpers import assert_consistent, make_pool

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CNI_"))}
    return subprocess.run(cmd, input=stdin, env=clean | env, capture_output=True, text=True, timeout=60)


def test_felixctl_config_file_with_three_endpoints_and_a_member_killed(
    etcd_cluster: EtcdCluster, cluster_kv: EtcdKV, tmp_path: Path
) -> None:
    spec = {
        "datastoreType": "etcdv3",
        "etcdEndpoints": etcd_cluster.endpoints,
        "etcdCACertFile": etcd_cluster.ca_cert,
        "etcdCertFile": etcd_cluster.cert_file,
        "etcdKeyFile": etcd_cluster.key_file,
        "etcdUsername": USER,
        "etcdPassword": etcd_cluster.password,
    }
    cfg = tmp_path / "felixctl.cfg"
    cfg.write_text(
        yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "CalicoAPIConfig", "spec": spec})
    )
    cfg.chmod(0o600)
    pool = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p1"}}
    pool["spec"] = {"cidr": "10.77.0.0/16"}
    etcd_cluster.kill(0)  # the first endpoint in the list is gone
    t0 = time.monotonic()
    p = _run([str(BIN / "felixctl"), "apply", "-f", "-", "-c", str(cfg)], {}, json.dumps(pool))
    assert p.returncode == 0, p.stdout + p.stderr
    p = _run([str(BIN / "felixctl"), "get", "ippool", "-o", "json", "-c", str(cfg)], {})
    assert p.returncode == 0, p.stderr
    assert "10.77.0.0/16" in p.stdout
    assert time.monotonic() - t0 < 20
    # The same through the environment (ETCD_ENDPOINTS with three endpoints).
    p = _run([str(BIN / "felixctl"), "ipam", "check"], etcd_cluster.env())
    assert p.returncode == 0, p.stdout + p.stderr


def _cni(command: str, conf: dict, container: str, env: dict[str, str]) -> tuple[int, dict]:
    cni_env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": "/proc/self/ns/net",  # must exist for ADD; IPAM alone never enters it
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    p = _run([str(BIN / "felixpy-ipam")], cni_env | env, json.dumps(conf))
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else {})


def test_cni_ipam_with_three_endpoints_in_its_config_and_a_member_stopped(
    etcd_cluster: EtcdCluster, cluster_kv: EtcdKV
) -> None:
    make_pool(KVBackend(cluster_kv), "default-ipv4-ippool", "10.201.0.0/24")
    conf = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "felixpy-ipam",
        "etcd_endpoints": etcd_cluster.endpoints,
        "etcd_ca_cert_file": etcd_cluster.ca_cert,
        "etcd_cert_file": etcd_cluster.cert_file,
        "etcd_key_file": etcd_cluster.key_file,
        "nodename": "node1",
    }
    creds = {"ETCD_USERNAME": USER, "ETCD_PASSWORD": etcd_cluster.password}
    etcd_cluster.pause(0)  # partitioned: connections to it are accepted and never answered
    try:
        rc, out = _cni("ADD", conf, "c1", creds)
        assert rc == 0, out
        assert out["ips"][0]["address"].startswith("10.201.0.")
    finally:
        etcd_cluster.resume(0)
    rc, out = _cni("ADD", conf, "c2", creds)
    assert rc == 0, out
    assert len(assert_consistent(cluster_kv)) == 2
    rc, out = _cni("ADD", conf | {"etcd_endpoints": "ftp://nowhere"}, "c3", creds)
    assert rc != 0 and "etcd_endpoints" in out.get("msg", ""), out
    rc, out = _cni("DEL", conf, "c1", creds)
    assert rc == 0, out
    assert len(assert_consistent(cluster_kv)) == 1
