"""Many processes, each with its own etcd client, allocating and releasing at once.

The invariants checked after each phase: no address handed out twice, every address
recorded under its handle, and the block bitmaps agree exactly with the handle records.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from tests.integration.ipam_helpers import assert_consistent, make_pool

pytestmark = pytest.mark.integration

PROCS = 8
PER_PROC = 500
NODES = 4


def _allocate(endpoints: str, proc: int, count: int, node: str) -> tuple[list[tuple[str, str]], int]:
    from felixpy.datastore.etcd import EtcdKV
    from felixpy.datastore.resources import KVBackend
    from ipam.errors import PoolExhausted
    from ipam.ipam import IPAM

    kv = EtcdKV(endpoints)
    ipam = IPAM(kv, KVBackend(kv))
    out, exhausted = [], 0
    try:
        for i in range(count):
            handle = f"k8s-pod-network.p{proc}-{i}"
            try:
                r = ipam.auto_assign(handle, node=node, attrs={"node": node, "pod": f"p{proc}-{i}"})
            except PoolExhausted:
                exhausted += 1
                continue
            out.append((handle, r.v4[0]))
    finally:
        kv.close()
    return out, exhausted


def _release(endpoints: str, handles: list[str]) -> list[str]:
    from felixpy.datastore.etcd import EtcdKV
    from felixpy.datastore.resources import KVBackend
    from ipam.ipam import IPAM

    kv = EtcdKV(endpoints)
    ipam = IPAM(kv, KVBackend(kv))
    try:
        return [a for h in handles for a in ipam.release_by_handle(h)]
    finally:
        kv.close()


def _run(fn, args_list: list[tuple]) -> list:
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(args_list)) as pool:
        return pool.starmap(fn, args_list)


def test_8_procs_x_500_allocations_then_concurrent_release(etcd_kv, etcd_backend, etcd_endpoints) -> None:
    make_pool(etcd_backend, "big", "10.100.0.0/19")
    t0 = time.monotonic()
    results = _run(_allocate, [(etcd_endpoints, p, PER_PROC, f"node-{p % NODES}") for p in range(PROCS)])
    took = time.monotonic() - t0
    pairs = [pair for got, exhausted in results for pair in got]
    assert all(exhausted == 0 for _, exhausted in results)
    assert len(pairs) == PROCS * PER_PROC
    addrs = [a for _, a in pairs]
    assert len(set(addrs)) == len(addrs), "an address was handed out twice"
    owner = assert_consistent(etcd_kv)
    assert owner == {a: h for h, a in pairs}, "every address is recorded under its own handle"
    print(f"\n{len(pairs)} allocations by {PROCS} processes in {took:.1f}s ({len(pairs) / took:.0f}/s)")

    # Release concurrently, interleaving handles so several processes hit each block.
    handles = [h for h, _ in pairs]
    released = _run(_release, [(etcd_endpoints, handles[p::PROCS]) for p in range(PROCS)])
    flat = [a for chunk in released for a in chunk]
    assert sorted(flat) == sorted(addrs), "every address released exactly once"
    assert assert_consistent(etcd_kv) == {}
    assert etcd_kv.list("/calico/ipam/v2/handle/")[0] == []


def test_small_pool_filled_concurrently_never_duplicates(etcd_kv, etcd_backend, etcd_endpoints) -> None:
    make_pool(etcd_backend, "small", "10.110.0.0/26", blockSize=28)
    results = _run(_allocate, [(etcd_endpoints, p, 16, f"node-{p % NODES}") for p in range(PROCS)])
    pairs = [pair for got, _ in results for pair in got]
    exhausted = sum(e for _, e in results)
    addrs = [a for _, a in pairs]
    assert len(addrs) == 64 and len(set(addrs)) == 64, "the pool fills exactly, with no duplicate"
    assert exhausted == PROCS * 16 - 64, "every other request got PoolExhausted"
    assert assert_consistent(etcd_kv) == {a: h for h, a in pairs}
