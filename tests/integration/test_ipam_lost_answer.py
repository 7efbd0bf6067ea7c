"""IPAM when etcd cannot tell whether a write applied (OutcomeUnknown, felixpy/datastore/etcd_outcome.py):
the allocation reads its block back instead of failing the CNI ADD. Real etcd; the lost answer is
injected by a KV wrapper that makes the real write (or not) and then raises as EtcdKV does."""

from __future__ import annotations

from typing import Any

import pytest

from felixpy.datastore.etcd_outcome import OutcomeUnknown
from felixpy.datastore.kv import TxnOp
from ipam.ipam import IPAM, UNKNOWN_RETRIES
from tests.integration.ipam_helpers import assert_consistent, make_pool

pytestmark = pytest.mark.integration


class LosingKV:
    """The real KV, except that the transactions picked by ``lose`` lose their answer.
    ``apply`` says whether such a transaction is made first (the answer lost on the way back)."""

    def __init__(self, kv: Any, *, apply: bool, lose: int = 1, only: str = "/assignment/") -> None:
        self.kv, self.apply, self.lose, self.only = kv, apply, lose, only
        self.lost = 0

    def txn(self, ops: list[TxnOp]) -> int:
        if self.lost < self.lose and any(self.only in op.key for op in ops):
            self.lost += 1
            if self.apply:
                self.kv.txn(ops)
            raise OutcomeUnknown("etcd: write outcome unknown: (injected) changed too often to scan")
        return int(self.kv.txn(ops))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)


def _assign(kv: Any, backend: Any, handle: str) -> list[str]:
    ipam = IPAM(kv, backend, cache_seconds=0)
    return ipam.auto_assign(handle, node="n1", attrs={"node": "n1", "pod": handle}).v4


@pytest.mark.parametrize("applied", [True, False], ids=["write-landed", "write-lost"])
def test_a_lost_answer_of_a_take_is_read_back_one_address_under_the_handle(
    etcd_kv, etcd_backend, applied: bool
) -> None:
    make_pool(etcd_backend, "p", "10.61.0.0/24", blockSize=28)
    first = _assign(
        etcd_kv, etcd_backend, "k8s-pod-network.warm"
    )  # the block exists: the next write is a take
    kv = LosingKV(etcd_kv, apply=applied, lose=1)
    got = _assign(kv, etcd_backend, "k8s-pod-network.c1")
    assert kv.lost == 1, "the lost answer was not injected"
    held = assert_consistent(etcd_kv)
    assert len(got) == 1 and held[got[0]] == "k8s-pod-network.c1" and got[0] != first[0]
    assert sorted(a for a, h in held.items() if h == "k8s-pod-network.c1") == got, "exactly one address"


def test_the_claim_of_a_new_block_read_back(etcd_kv, etcd_backend) -> None:
    make_pool(etcd_backend, "p", "10.62.0.0/24", blockSize=28)
    for applied in (True, False):
        handle = f"k8s-pod-network.claim-{applied}"
        node = f"n-{applied}"
        kv = LosingKV(etcd_kv, apply=applied, lose=1)
        got = IPAM(kv, etcd_backend, cache_seconds=0).auto_assign(handle, node=node, attrs={"node": node}).v4
        assert kv.lost == 1
        held = assert_consistent(etcd_kv)
        assert [a for a, h in held.items() if h == handle] == got
    ipam = IPAM(etcd_kv, etcd_backend, cache_seconds=0)
    assert len(ipam.affine_blocks("n-True")) == 1, "a landed claim is used, not claimed twice"


def test_unknown_outcomes_are_bounded_then_reported(etcd_kv, etcd_backend) -> None:
    make_pool(etcd_backend, "p", "10.63.0.0/24", blockSize=28)
    _assign(etcd_kv, etcd_backend, "k8s-pod-network.warm")
    kv = LosingKV(etcd_kv, apply=False, lose=10**6, only="/handle/")
    with pytest.raises(OutcomeUnknown):
        _assign(kv, etcd_backend, "k8s-pod-network.never")
    assert kv.lost == UNKNOWN_RETRIES
    held = assert_consistent(etcd_kv)
    assert "k8s-pod-network.never" not in held.values(), "nothing half-made"
