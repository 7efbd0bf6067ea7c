"""`felixctl delete ippool` refuses a pool that still holds allocations until it is disabled, and says how
many addresses are in use — on a real etcd, through the real command line."""

from __future__ import annotations

import json

import pytest

from felixpy.datastore.kv import KV
from felixpy.datastore.resources import KVBackend
from ipam.ipam import IPAM
from tests.integration.test_felixctl import Ctl, pool_doc

pytestmark = pytest.mark.integration


@pytest.fixture
def ctl(etcd_kv: KV, etcd_endpoints: str) -> Ctl:
    return Ctl(etcd_endpoints)


def test_pool_with_allocations_is_only_deleted_once_disabled(ctl: Ctl, etcd_kv: KV) -> None:
    ctl("apply", "-f", "-", stdin=json.dumps(pool_doc("busy", "10.70.0.0/24", blockSize=26)))
    ctl("apply", "-f", "-", stdin=json.dumps(pool_doc("idle", "10.71.0.0/24", blockSize=26)))
    ipam = IPAM(etcd_kv, KVBackend(etcd_kv), cache_seconds=0)
    for i in range(3):
        ipam.auto_assign(f"h{i}", node="n1", pools=["busy"])

    refused = ctl("delete", "ippool", "busy", rc=1)
    assert "3 address(es) in use" in refused.stderr and "disable it first" in refused.stderr
    assert "idle" in ctl("get", "ippool").stdout and "busy" in ctl("get", "ippool").stdout

    ctl("delete", "ippool", "idle")  # no allocations: deleted at once
    ctl("apply", "-f", "-", stdin=json.dumps(pool_doc("busy", "10.70.0.0/24", blockSize=26, disabled=True)))
    ctl("delete", "ippool", "busy")
    assert "busy" not in ctl("get", "ippool").stdout
