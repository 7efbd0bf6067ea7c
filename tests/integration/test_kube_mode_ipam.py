"""IPAM in Kubernetes datastore mode: the real IPAM library over KubeKV (IPAM CRDs) and KubernetesBackend.

Every test here runs against the stand-in API server (tests/fixtures/kubeapi.py) — no real
kube-apiserver can run on this machine. The stand-in speaks the same HTTP protocol (resourceVersion
compare-and-swap, 409 Conflict / AlreadyExists) and is reached through the official `kubernetes` client.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from felixpy.datastore.config import DatastoreConfig, connect_backend, connect_kv
from felixpy.datastore.errors import DatastoreError
from felixpy.datastore.kube_kv import KubeKV, kind_of
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.datastore.kv import TxnOp
from felixpy.resources.ippool import IPPool
from ipam.errors import PoolExhausted
from ipam.ipam import IPAM
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.ipam_helpers import assert_consistent, in_net, make_pool, read_state

pytestmark = pytest.mark.integration

POOL = "10.70.0.0/24"
HANDLE = "/calico/ipam/v2/handle/k8s-pod-network.h1"
BLOCK = "/calico/ipam/v2/assignment/ipv4/block/10.70.0.0-29"


@pytest.fixture
def kube(kube_api: KubeAPI) -> KubeAPI:
    """The stand-in with TCP_NODELAY on its sockets (header and body are separate writes: 40 ms each)."""
    return kube_api


@pytest.fixture
def backend(kube: KubeAPI) -> KubernetesBackend:
    return KubernetesBackend.for_url(kube.url)


@pytest.fixture
def kv(backend: KubernetesBackend) -> KubeKV:
    return KubeKV(backend)


def _ipam(url: str) -> IPAM:
    backend = KubernetesBackend.for_url(url)
    return IPAM(KubeKV(backend), backend)


def _allocate(url: str, node: str, tag: str, count: int) -> list[tuple[str, str]]:
    """In its own process or thread, with its own client: ``count`` single-address assignments."""
    ipam = _ipam(url)
    out = []
    for i in range(count):
        handle = f"k8s-pod-network.{tag}-{i}"
        out.append((handle, ipam.auto_assign(handle, node=node, attrs={"node": node}).v4[0]))
    return out


def _release(url: str, handles: Sequence[str]) -> list[str]:
    ipam = _ipam(url)
    return [a for h in handles for a in ipam.release_by_handle(h)]


def _in_threads(fn: Callable[..., list[Any]], args_list: list[tuple[Any, ...]]) -> list[Any]:
    results: list[list[Any]] = [[] for _ in args_list]
    errors: list[BaseException] = []

    def run(i: int, args: tuple[Any, ...]) -> None:
        try:
            results[i] = fn(*args)
        except BaseException as exc:  # reported below, so a failed thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return [x for r in results for x in r]


def test_processes_and_threads_across_nodes_never_share_an_address(
    kube: KubeAPI, backend: KubernetesBackend, kv: KubeKV
) -> None:
    """3 processes + 3 threads on 4 nodes allocate at once (stand-in API server): no address twice,
    each recorded under its handle; then concurrent releases free each address exactly once."""
    make_pool(backend, "pool", POOL, blockSize=29)
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as procs:
        pending = procs.starmap_async(_allocate, [(kube.url, f"node-{n}", f"p{n}", 12) for n in "abc"])
        in_thread = _in_threads(_allocate, [(kube.url, f"node-{n}", f"t{n}", 12) for n in "abd"])
        in_procs = [x for r in pending.get(timeout=60) for x in r]
    got = dict(in_procs + in_thread)
    assert len(got) == 72 and len(set(got.values())) == 72, "an address was handed out twice"
    assert all(in_net(a, POOL) for a in got.values())
    owner = assert_consistent(kv)
    assert owner == {a: h for h, a in got.items()}, "every address is recorded under its own handle"
    reader = _ipam(kube.url)
    assert {h: reader.assignments_for_handle(h) for h in got} == {h: [a] for h, a in got.items()}

    handles = sorted(got)
    released = _in_threads(_release, [(kube.url, handles[i::4]) for i in range(4)])
    assert sorted(released) == sorted(got.values()), "each address released exactly once"
    blocks, left = read_state(kv)
    assert left == {} and all(b.in_use == 0 for b in blocks)


def test_small_pool_fills_then_answers_pool_exhausted(backend: KubernetesBackend, kv: KubeKV) -> None:
    """A 16-address pool (4 blocks of 4) filled by two nodes at once (stand-in API server): exactly 16
    distinct addresses, then PoolExhausted; a release makes exactly that address assignable again."""
    make_pool(backend, "tiny", "10.71.0.0/28", blockSize=30)
    url = backend.api.configuration.host
    got: list[str] = []
    exhausted: list[str] = []

    def fill(node: str) -> None:
        ipam = _ipam(url)
        for i in range(20):
            try:
                got.append(ipam.auto_assign(f"{node}-{i}", node=node).v4[0])
            except PoolExhausted:
                exhausted.append(node)
                return

    _in_threads(lambda n: [fill(n)], [("node-a",), ("node-b",)])
    assert len(got) == 16 and len(set(got)) == 16 and sorted(exhausted) == ["node-a", "node-b"]
    assert_consistent(kv)
    ipam = _ipam(url)
    with pytest.raises(PoolExhausted):
        ipam.auto_assign("one-more", node="node-c")
    victim = ipam.get_assignment(got[5])
    assert victim is not None and victim.handle_id is not None
    assert ipam.release_by_handle(victim.handle_id) == [got[5]]
    assert ipam.auto_assign("one-more", node="node-c").v4 == [got[5]]
    assert_consistent(kv)


class Crash(BaseException):
    """The process dying between two writes of one transaction (nothing runs after it)."""


class CrashingKubeKV(KubeKV):
    """KubeKV that 'dies' right before its next write to an IPAMBlock."""

    armed = True

    def _apply(self, op: TxnOp) -> int:
        if self.armed and kind_of(op.key)[0] == "ipamblocks":
            self.armed = False
            raise Crash(op.key)
        return super()._apply(op)


def test_crash_between_writes_leaves_only_repairable_state(backend: KubernetesBackend, kv: KubeKV) -> None:
    """Crashes inside IPAM's multi-object writes (stand-in API server): claims are written before the
    block, so what is left is an affinity without block or an over-counting handle, both repaired."""
    make_pool(backend, "pool", POOL, blockSize=29)
    crashing = CrashingKubeKV(backend)
    with pytest.raises(Crash):  # claiming a block: affinity written, block not
        IPAM(crashing, backend).auto_assign("h-claim", node="node-a")
    assert [k.key for k in kv.list("/calico/ipam/v2/host/")[0]] and read_state(kv) == ([], {})
    ipam = IPAM(kv, backend)
    addr = ipam.auto_assign("h-ok", node="node-a").v4[0]
    assert ipam.affine_blocks("node-a") == [ipam.get_assignment(addr).block]  # type: ignore[union-attr]
    assert_consistent(kv)

    crashing.armed = True  # taking an address: handle written, block not
    with pytest.raises(Crash):
        IPAM(crashing, backend).auto_assign("h-crash", node="node-a")
    blocks, handles = read_state(kv)
    assert handles["h-crash"].total == 1 and sum(b.in_use for b in blocks) == 1, "handle over-counts"
    assert ipam.release_by_handle("h-crash") == []
    assert sorted(assert_consistent(kv).values()) == ["h-ok"]


def test_transaction_claims_first_and_never_undoes_over_another_writer(kv: KubeKV) -> None:
    """KubeKV.txn order and undo (stand-in API server): a growing handle is written before the block;
    a failed transaction's undo is a CAS, so a block another client changed meanwhile is left intact."""
    rev = kv.create(BLOCK, b'{"n":0}')
    txn_rev = kv.txn([TxnOp("update", BLOCK, b'{"n":1}', rev), TxnOp("create", HANDLE, b'{"block":{"b":1}}')])
    handle, block = kv.get(HANDLE), kv.get(BLOCK)
    assert handle is not None and block is not None and handle.mod_revision < block.mod_revision == txn_rev
    # etcd semantics: the txn's revision is every written key's CAS token
    kv.update(HANDLE, b'{"block":{"b":2}}', txn_rev)

    other = KubeKV(KubernetesBackend.for_url(kv._b.api.configuration.host))

    class Interleaved(KubeKV):
        def _apply(self, op: TxnOp) -> int:
            if op.op == "delete":  # after our block write, another client writes the block
                cur = other.get(BLOCK)
                assert cur is not None
                other.update(BLOCK, b'{"n":"theirs"}', cur.mod_revision)
            return super()._apply(op)

    mine = Interleaved(kv._b)
    cur = kv.get(BLOCK)
    assert cur is not None
    with pytest.raises(DatastoreError):
        mine.txn(
            [TxnOp("update", BLOCK, b'{"n":"mine"}', cur.mod_revision), TxnOp("delete", HANDLE, revision=1)]
        )
    assert json.loads(kv.get(BLOCK).value) == {"n": "theirs"}  # type: ignore[union-attr]


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "not-checked-by-the-stand-in"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "standin", "user": "tester"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def test_connect_kv_and_backend_from_kubeconfig(kube: KubeAPI, tmp_path: Path) -> None:
    """DATASTORE_TYPE=kubernetes + KUBECONFIG (a file pointing at the stand-in API server) gives
    IPAM's KV over IPAM CRDs and the resource backend; the calicoctl.cfg form works the same way."""
    path = _kubeconfig(tmp_path, kube.url)
    cfg = DatastoreConfig.from_env({"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(path)})
    kv, backend = connect_kv(cfg), connect_backend(cfg)
    assert isinstance(kv, KubeKV) and isinstance(backend, KubernetesBackend)
    make_pool(backend, "from-cfg", POOL)
    addr = IPAM(kv, backend).auto_assign("h1", node="node-a").v4[0]
    stored = kube.store.list("ipamhandles.crd.projectcalico.org", None)[0]
    assert [o["metadata"]["name"] for o in stored] == ["h1"] and in_net(addr, POOL)
    cfg_file = tmp_path / "calicoctl.cfg"
    cfg_file.write_text(f"kind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: {path}\n")
    pools, _ = connect_backend(DatastoreConfig.load(cfg_file)).list(IPPool)
    assert [p.name for p in pools] == ["from-cfg"]
    missing = DatastoreConfig(datastore_type="kubernetes", kubeconfig=str(tmp_path / "absent"))
    with pytest.raises(DatastoreError, match="absent"):
        connect_kv(missing)
