"""Network sets reach the policy compiler through the agent's sync, on etcd and on Kubernetes.

The agent's wiring as ``felixpy node`` has it (SyncSources → Writer → CalcGraph with the policy stage),
the recording dataplane in place of the kernel. A GlobalNetworkPolicy on a local pod allows ingress
from ``role == 'partner'``; a GlobalNetworkSet and a NetworkSet with that label are written to the
datastore (etcd at Calico's keys; the stand-in API server's CRDs in Kubernetes mode): their nets show
up in the rule's ipset, a nets change and a deletion change the members, no chain is rewritten.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources import GlobalNetworkPolicy
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet
from felixpy.runtime.sync import SyncSources
from policy.chain_names import ipset_name
from policy.compiler import PolicyCompiler
from policy.selector import parse
from tests.fixtures.calc_recorder import RecordingDataplane
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.test_kube_mode_calc import ME, EtcdCluster, KubeCluster, RecordingWriter

pytestmark = pytest.mark.integration
PARTNERS = ipset_name(parse("role == 'partner'").unique_id)
POLICY = {
    "metadata": {"name": "from-partners"},
    "spec": {
        "selector": "app == 'api'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"selector": "role == 'partner'"}}],
    },
}


def gns(nets: list[str]) -> GlobalNetworkSet:
    meta = {"name": "partners", "labels": {"role": "partner"}}
    return GlobalNetworkSet.model_validate({"metadata": meta, "spec": {"nets": nets}})


def netset(nets: list[str]) -> NetworkSet:
    meta = {"name": "suppliers", "namespace": "shop", "labels": {"role": "partner"}}
    return NetworkSet.model_validate({"metadata": meta, "spec": {"nets": nets}})


@pytest.fixture(params=["etcd", "kubernetes"])
def world(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any, Any]]:
    """(scenario driver, kv, backend) for one datastore."""
    if request.param == "etcd":
        backend = request.getfixturevalue("etcd_backend")
        yield EtcdCluster(backend), backend.kv, backend
        return
    api: KubeAPI = request.getfixturevalue("kube_api")
    backend = KubernetesBackend.for_url(api.url)
    yield KubeCluster(api, backend), KubeKV(backend), backend


def test_network_sets_fill_the_rule_ipset(world: tuple[Any, Any, Any]) -> None:
    cluster, kv, backend = world
    cluster.namespace("shop", {"team": "red"})
    cluster.node("node-a", vxlan=False)
    cluster.pod("api", "node-a", "10.80.0.6", {"app": "api"})
    backend.apply(GlobalNetworkPolicy.model_validate(POLICY))
    backend.apply(gns(["192.0.2.0/24"]))
    backend.apply(netset(["198.51.100.7"]))
    dataplane = RecordingDataplane()
    graph = CalcGraph(ME, policy=PolicyCalc([PolicyCompiler(ME)]))
    writer = RecordingWriter(graph, dataplane)
    sources = SyncSources(kv, backend, writer)
    stop = threading.Event()
    threading.Thread(target=writer.run, args=(stop,), daemon=True).start()
    sources.start(stop)
    try:

        def members() -> frozenset[str] | None:
            ipset = dataplane.ipsets.get(4, {}).get(PARTNERS)
            return None if ipset is None else ipset.members

        def until(want: frozenset[str], what: str) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # bounded poll
                assert sources.error() is None, sources.error()
                if members() == want:
                    return
                stop.wait(0.05)
            raise AssertionError(f"{what}: {PARTNERS} is {members()}, not {sorted(want)}")

        until(frozenset({"192.0.2.0/24", "198.51.100.7"}), "the snapshot")
        # The bare address matches as a /32 (above) and reads back as written, as in Calico.
        assert backend.get(NetworkSet, "suppliers", "shop").spec.nets == ["198.51.100.7"]
        chains = dict(dataplane.chains[4])
        assert any(name == "cali-pi-gnp/from-partners" for _, name in chains)
        backend.apply(gns(["192.0.2.0/25", "203.0.113.0/24"]))
        until(frozenset({"192.0.2.0/25", "203.0.113.0/24", "198.51.100.7"}), "a nets change")
        backend.delete(NetworkSet, "suppliers", "shop")
        until(frozenset({"192.0.2.0/25", "203.0.113.0/24"}), "a NetworkSet deleted")
        assert dataplane.chains[4] == chains, "set changes rewrote no chain"
    finally:
        stop.set()
        sources.syncer.stop(timeout=5)
