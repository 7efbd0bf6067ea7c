"""TLS with client certificates, username/password auth, endpoint failover, and config wiring."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from felixpy.datastore.config import DatastoreConfig, connect_backend, connect_kv
from felixpy.datastore.errors import DatastoreError, Unavailable
from felixpy.datastore.etcd import EtcdKV
from felixpy.resources import IPPool
from tests.fixtures.etcd import EtcdProcess, free_port, running_etcd

pytestmark = pytest.mark.integration


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    with running_etcd(tmp_path, tls=True) as etcd:
        assert etcd.endpoints.startswith("https://")
        kv = etcd.kv()
        try:
            rev = kv.create("/tls/a", b"secret")
            assert kv.get("/tls/a").mod_revision == rev  # type: ignore[union-attr]
        finally:
            kv.close()
        # Trusting the CA but presenting no client certificate: the server refuses us.
        anonymous = EtcdKV(etcd.endpoints, ca_cert=etcd.ca_cert, timeout=2.0)
        try:
            with pytest.raises(DatastoreError):
                anonymous.get("/tls/a")
        finally:
            anonymous.close()
        # The same through the calicoctl-style config file.
        cfg_file = tmp_path / "calicoctl.cfg"
        cfg_file.write_text(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            f"  datastoreType: etcdv3\n  etcdEndpoints: {etcd.endpoints}\n"
            f"  etcdCACertFile: {etcd.ca_cert}\n  etcdCertFile: {etcd.cert_file}\n"
            f"  etcdKeyFile: {etcd.key_file}\n"
        )
        backend = connect_backend(DatastoreConfig.from_file(cfg_file))
        backend.create(IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.1.0.0/16"}}))
        assert backend.get(IPPool, "p").spec.cidr == "10.1.0.0/16"  # type: ignore[attr-defined]


def _etcdctl(etcd: EtcdProcess, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", etcd.endpoints, *args],
        check=True,
        capture_output=True,
        timeout=20,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


def test_username_password_auth(tmp_path: Path) -> None:
    with running_etcd(tmp_path) as etcd:
        _etcdctl(etcd, "user", "add", "root:rootpw")
        _etcdctl(etcd, "auth", "enable")
        env = {"ETCD_ENDPOINTS": etcd.endpoints, "ETCD_USERNAME": "root", "ETCD_PASSWORD": "rootpw"}
        kv = connect_kv(DatastoreConfig.from_env(env))
        try:
            kv.put("/auth/a", b"1")
            assert kv.get("/auth/a").value == b"1"  # type: ignore[union-attr]
        finally:
            kv.close()
        for bad in (EtcdKV(etcd.endpoints, username="root", password="wrong"), EtcdKV(etcd.endpoints)):
            try:
                with pytest.raises(DatastoreError) as info:
                    bad.get("/auth/a")
                assert not isinstance(info.value, Unavailable)  # a permanent error, not "retry later"
            finally:
                bad.close()


def test_reads_fail_over_to_the_next_endpoint(etcd_server: EtcdProcess, etcd_kv: EtcdKV) -> None:
    etcd_kv.put("/fo/a", b"x")
    dead = f"http://127.0.0.1:{free_port()}"
    kv = EtcdKV(f"{dead},{etcd_server.endpoints}", timeout=2.0)
    try:
        for _ in range(3):  # whichever endpoint it starts on, reads succeed
            assert kv.get("/fo/a").value == b"x"  # type: ignore[union-attr]
    finally:
        kv.close()
    only_dead = EtcdKV(dead, timeout=1.0)
    try:
        with pytest.raises(Unavailable):
            only_dead.get("/fo/a")
    finally:
        only_dead.close()
