"""Stored Profiles reach the policy compiler through the agent's sync (etcd mode), and Kubernetes mode
syncs the Namespaces and ServiceAccounts its profiles are generated from, not the Profile kind.

The agent's wiring as ``felixpy node`` has it (SyncSources → Writer → CalcGraph with the policy stage),
the recording dataplane in place of the kernel. A local pod lists the profile ``teams``; a
GlobalNetworkPolicy selects ``team == 'blue'``, a label no pod carries: it applies once the profile's
labelsToApply gives it, and stops applying when they change; the profile's rules make its
``cali-pri-teams`` chain, which empties when the stored profile is deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources import GlobalNetworkPolicy
from felixpy.resources.stored import Profile
from felixpy.runtime.sync import SyncSources
from policy.compiler import PolicyCompiler
from tests.fixtures.calc_recorder import RecordingDataplane
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.test_kube_mode_calc import ME, EtcdCluster, RecordingWriter, _calico_wep

pytestmark = pytest.mark.integration
POLICY = {
    "metadata": {"name": "blue"},
    "spec": {"selector": "team == 'blue'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]},
}


def teams(labels: dict[str, str]) -> Profile:
    spec = {"labelsToApply": labels, "ingress": [{"action": "Deny", "protocol": "TCP"}]}
    return Profile.model_validate({"metadata": {"name": "teams"}, "spec": spec})


def test_a_stored_profile_reaches_the_compiler(etcd_backend: Any) -> None:
    b = etcd_backend
    cluster = EtcdCluster(b)
    cluster.namespace("shop", {})
    cluster.node("node-a", vxlan=False)
    wep = _calico_wep("api", "node-a", "10.80.0.6", {"app": "api"})
    wep.spec.profiles = ["kns.shop", "teams"]
    b.apply(wep)
    b.apply(GlobalNetworkPolicy.model_validate(POLICY))
    b.apply(teams({"team": "blue"}))
    dataplane = RecordingDataplane()
    graph = CalcGraph(ME, policy=PolicyCalc([PolicyCompiler(ME)]))
    writer = RecordingWriter(graph, dataplane)
    sources = SyncSources(b.kv, b, writer)
    stop = threading.Event()
    threading.Thread(target=writer.run, args=(stop,), daemon=True).start()
    sources.start(stop)
    try:

        def chains() -> dict[str, tuple[str, ...]]:
            return {
                name: tuple(r.action for r in c.rules) for (_, name), c in dataplane.chains.get(4, {}).items()
            }

        def until(check: Callable[[dict[str, tuple[str, ...]]], bool], what: str) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # bounded poll
                assert sources.error() is None, sources.error()
                if check(chains()):
                    return
                stop.wait(0.05)
            raise AssertionError(f"{what}: chains are {sorted(chains())}")

        until(lambda c: "cali-pi-gnp/blue" in c and "-j DROP" in c.get("cali-pri-teams", ()), "the snapshot")
        b.apply(teams({"team": "red"}))
        until(lambda c: "cali-pi-gnp/blue" not in c, "labelsToApply changed")
        b.delete(Profile, "teams")
        until(
            lambda c: c.get("cali-pri-teams") == (),
            "the profile deleted: a name nobody stored allows nothing",
        )
    finally:
        stop.set()
        sources.syncer.stop(timeout=5)


def test_kubernetes_mode_does_not_sync_the_generated_profiles(kube_api: KubeAPI) -> None:
    backend = KubernetesBackend.for_url(kube_api.url)
    sources = SyncSources(object(), backend, RecordingWriter(CalcGraph(ME), RecordingDataplane()))  # type: ignore[arg-type]
    kinds = {k.KIND for k in sources.syncer.kinds}
    assert "Profile" not in kinds and {"Namespace", "ServiceAccount"} <= kinds
