"""One scenario, two datastores: the agent's calc must see the same cluster through etcd and Kubernetes.

The agent's own wiring is driven as `felixpy node` drives it (felixpy/agent.py): `SyncSources` (the
datastore Syncer + the block-affinity watcher) → `Writer` → `CalcGraph("node-a")`, with the recording
dataplane in place of the kernel. In etcd mode (a real etcd, fixture `etcd_backend`) the scenario writes
WorkloadEndpoints and Calico Nodes as Calico's CNI plugin and node agent do; in Kubernetes mode it writes
Pods (with the CNI plugin's annotations), Nodes with `projectcalico.org/*` annotations, Namespaces and
networking.k8s.io NetworkPolicies to the stand-in API server (tests/fixtures/kubeapi.py — no real
kube-apiserver can run here), the IPPool as a CRD. After every step both must give the same NodeState.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import pytest

from felixpy.calc.graph import CalcGraph
from felixpy.calc.updates import Route, Vtep
from felixpy.cni.request import wep_name
from felixpy.dataplane.iface_names import veth_name_for_workload
from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources import IPPool, Node, WorkloadEndpoint
from felixpy.resources.k8s import K8sNetworkPolicy, Namespace
from felixpy.runtime.sync import SyncSources
from felixpy.runtime.writer import Msg, ResourceMsg, Writer
from policy.entities import Endpoint
from tests.fixtures.calc_recorder import RecordingDataplane
from tests.fixtures.kubeapi import KubeAPI

pytestmark = pytest.mark.integration

ME = "node-a"
POOL = "10.80.0.0/16"
NODE_IPS = {"node-a": "192.0.2.10/24", "node-b": "192.0.2.11/24"}
B_TUNNEL, B_MAC = "10.80.1.0", "ee:00:00:00:00:0b"
POLICY = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
}


class Cluster(Protocol):
    """What the scenario does, in each datastore's own terms."""

    def node(self, name: str, *, vxlan: bool) -> None: ...
    def pool(self) -> None: ...
    def namespace(self, name: str, labels: dict[str, str]) -> None: ...
    def pod(self, name: str, node: str, ip: str, labels: dict[str, str]) -> None: ...
    def relabel_pod(self, name: str, labels: dict[str, str]) -> None: ...
    def delete_pod(self, name: str) -> None: ...
    def k8s_policy(self, name: str) -> None: ...
    def outage(self) -> AbstractContextManager[None]:
        """Changes made inside happen while history is compacted (and, where possible, watches drop)."""
        ...


class EtcdCluster:
    """etcd mode: the objects Calico's CNI plugin / node agent / kube-controllers write to etcd."""

    def __init__(self, backend: Any):
        self.b = backend
        self.nodes: dict[str, str] = {}

    def node(self, name: str, *, vxlan: bool) -> None:
        spec: dict[str, Any] = {"bgp": {"ipv4Address": NODE_IPS[name]}}
        if vxlan:
            spec |= {"ipv4VXLANTunnelAddr": B_TUNNEL, "vxlanTunnelMACAddr": B_MAC}
        self.b.apply(Node.model_validate({"metadata": {"name": name}, "spec": spec}))

    def pool(self) -> None:
        self.b.apply(
            IPPool.model_validate(
                {"metadata": {"name": "pool-1"}, "spec": {"cidr": POOL, "vxlanMode": "Always"}}
            )
        )

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        self.b.apply(Namespace.model_validate({"metadata": {"name": name, "labels": labels}}))

    def pod(self, name: str, node: str, ip: str, labels: dict[str, str]) -> None:
        self.nodes[name] = node
        self.b.apply(_calico_wep(name, node, ip, labels))

    def relabel_pod(self, name: str, labels: dict[str, str]) -> None:
        wep = self.b.get(WorkloadEndpoint, wep_name(self.nodes[name], "k8s", name, "eth0"), "shop")
        wep.metadata.labels = _wep_labels(labels)
        self.b.update(wep)

    def delete_pod(self, name: str) -> None:
        self.b.delete(WorkloadEndpoint, wep_name(self.nodes[name], "k8s", name, "eth0"), "shop")

    def k8s_policy(self, name: str) -> None:
        meta = {"name": name, "namespace": "shop"}
        self.b.apply(K8sNetworkPolicy.model_validate({"metadata": meta, "spec": POLICY}))

    def outage(self) -> AbstractContextManager[None]:
        return _compacting(self.b.kv)


class _compacting(AbstractContextManager[None]):
    def __init__(self, kv: Any):
        self.kv = kv

    def __exit__(self, *exc: object) -> None:
        self.kv.compact(self.kv.revision())


class KubeCluster:
    """Kubernetes mode: native objects as kubelet / kubectl / the CNI plugin leave them; pool as a CRD."""

    def __init__(self, api: KubeAPI, backend: KubernetesBackend):
        self.s, self.b = api.store, backend

    def node(self, name: str, *, vxlan: bool) -> None:
        ann = {"projectcalico.org/IPv4Address": NODE_IPS[name]}
        if vxlan:
            ann |= {
                "projectcalico.org/IPv4VXLANTunnelAddr": B_TUNNEL,
                "projectcalico.org/VXLANTunnelMACAddr": B_MAC,
            }
        self.s.create("nodes", None, {"metadata": {"name": name, "annotations": ann}})

    def pool(self) -> None:
        self.b.create(
            IPPool.model_validate(
                {"metadata": {"name": "pool-1"}, "spec": {"cidr": POOL, "vxlanMode": "Always"}}
            )
        )

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        try:
            self.s.patch("namespaces", None, name, {"metadata": {"labels": labels}})
        except Exception:
            self.s.create("namespaces", None, {"metadata": {"name": name, "labels": labels}})

    def pod(self, name: str, node: str, ip: str, labels: dict[str, str]) -> None:
        ann = {"cni.projectcalico.org/podIP": f"{ip}/32", "cni.projectcalico.org/containerID": f"cid-{name}"}
        meta = {"name": name, "namespace": "shop", "labels": labels, "annotations": ann}
        spec = {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "c"}]}
        self.s.create(
            "pods", "shop", {"metadata": meta, "spec": spec, "status": {"phase": "Running", "podIP": ip}}
        )

    def relabel_pod(self, name: str, labels: dict[str, str]) -> None:
        current = self.s.get("pods", "shop", name)
        current["metadata"]["labels"] = labels
        self.s.update("pods", "shop", name, current)

    def delete_pod(self, name: str) -> None:
        self.s.delete("pods", "shop", name, None)

    def k8s_policy(self, name: str) -> None:
        self.s.create(
            "networkpolicies.networking.k8s.io", "shop", {"metadata": {"name": name}, "spec": POLICY}
        )

    def outage(self) -> AbstractContextManager[None]:
        return _kube_outage(self.s)


class _kube_outage(AbstractContextManager[None]):
    """Holds the stand-in's lock: no watch sees the changes before history is compacted and every
    stream is closed, so every watch resumes from a compacted resourceVersion (410 → re-list)."""

    def __init__(self, store: Any):
        self.store = store

    def __enter__(self) -> None:
        self.store.cond.acquire()

    def __exit__(self, *exc: object) -> None:
        try:
            self.store.compact()
            self.store.drop_watches()
        finally:
            self.store.cond.release()


def _wep_labels(labels: dict[str, str]) -> dict[str, str]:
    extra = {"projectcalico.org/namespace": "shop", "projectcalico.org/orchestrator": "k8s"}
    return labels | extra | {"projectcalico.org/serviceaccount": "default"}


def _calico_wep(pod: str, node: str, ip: str, labels: dict[str, str]) -> WorkloadEndpoint:
    spec = {
        "orchestrator": "k8s",
        "node": node,
        "pod": pod,
        "endpoint": "eth0",
        "containerID": f"cid-{pod}",
        "serviceAccountName": "default",
        "ipNetworks": [f"{ip}/32"],
        "interfaceName": veth_name_for_workload("shop", pod),
        "profiles": ["kns.shop", "ksa.shop.default"],
    }
    meta = {"name": wep_name(node, "k8s", pod, "eth0"), "namespace": "shop", "labels": _wep_labels(labels)}
    return WorkloadEndpoint.model_validate({"metadata": meta, "spec": spec})


def expected_endpoint(pod: str, ip: str, labels: dict[str, str]) -> Endpoint:
    return Endpoint(
        key=f"shop/{wep_name(ME, 'k8s', pod, 'eth0')}",
        namespace="shop",
        iface=veth_name_for_workload("shop", pod),
        ips=(ip,),
        labels=_wep_labels(labels),
        node=ME,
        profiles=("kns.shop", "ksa.shop.default"),
        service_account="default",
        pod=pod,
        container_id=f"cid-{pod}",
    )


class RecordingWriter(Writer):
    """The agent's Writer, also keeping every ResourceMsg it was given (to count deliveries)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.msgs: list[ResourceMsg] = []

    def submit(self, msg: Msg) -> None:
        if isinstance(msg, ResourceMsg):
            self.msgs.append(msg)
        super().submit(msg)

    def submit_many(self, msgs: list[Msg]) -> None:  # (SyncSources gives a batch at once)
        self.msgs += [m for m in msgs if isinstance(m, ResourceMsg)]
        super().submit_many(msgs)


class Dataplane(RecordingDataplane):
    """The calc recorder with the Writer's commit/resync (nothing to write: no kernel here)."""

    def commit(self) -> bool:
        return True

    def resync(self, what: str) -> None:
        pass

    def post_write_check(self) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def commit_deferred(self) -> bool:
        return True


INPUT_KINDS = ("Namespace", "K8sNetworkPolicy", "IPPool", "Node")


class InputsGraph(CalcGraph):
    """The calc graph, noting the policy and BGP inputs the sync delivers to it (calc consumes them)."""

    def __init__(self, nodename: str) -> None:
        super().__init__(nodename)
        self.inputs: dict[tuple[str, tuple[str, str]], Any] = {}

    def on_resource(self, kind: str, key: tuple[str, str], obj: Any | None) -> None:
        if obj is None:
            self.inputs.pop((kind, key), None)
        else:
            self.inputs[(kind, key)] = obj
        super().on_resource(kind, key, obj)


class Agent:
    """SyncSources → Writer → CalcGraph, exactly as felixpy.agent.build wires them."""

    def __init__(self, kv: Any, backend: Any):
        self.dataplane = Dataplane()
        self.graph = InputsGraph(ME)
        self.writer = RecordingWriter(self.graph, self.dataplane)
        self.sources = SyncSources(kv, backend, self.writer)
        self.stop = threading.Event()
        self.writer_error: BaseException | None = None

    def _write(self) -> None:
        try:
            self.writer.run(self.stop)
        except BaseException as exc:  # surfaced by until(), as the agent's main loop would
            self.writer_error = exc

    def start(self) -> None:
        threading.Thread(target=self._write, daemon=True).start()
        self.sources.start(self.stop)

    def close(self) -> None:
        self.stop.set()
        self.sources.syncer.stop(timeout=5)

    def inputs(self) -> dict[tuple[str, tuple[str, str]], Any]:
        """The policy and BGP inputs calc got, by model class (a k8s and a Calico NetworkPolicy apart)."""
        items = dict(self.graph.inputs).items()
        return {(type(o).__name__, k): _summary(o) for (_, k), o in items if type(o).__name__ in INPUT_KINDS}

    def until(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.sources.error() is None and self.writer_error is None, (
                self.sources.error(),
                self.writer_error,
            )
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {self.dataplane.state()} {self.inputs()}")


def _summary(obj: Any) -> Any:
    if isinstance(obj, Namespace):
        return dict(obj.metadata.labels)
    if isinstance(obj, K8sNetworkPolicy):
        return obj.to_dict()["spec"]
    if isinstance(obj, IPPool):
        return (obj.spec.cidr, obj.spec.vxlan_mode)
    if isinstance(obj, Node):
        return obj.spec.bgp.ipv4_address if obj.spec.bgp else None
    return type(obj).__name__


@pytest.fixture(params=["etcd", "kubernetes"])
def world(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Any, Any]]:
    """(scenario driver, kv, backend) for one datastore."""
    if request.param == "etcd":
        backend = request.getfixturevalue("etcd_backend")
        yield EtcdCluster(backend), backend.kv, backend
        return
    api: KubeAPI = request.getfixturevalue("kube_api")
    backend = KubernetesBackend.for_url(api.url)
    yield KubeCluster(api, backend), KubeKV(backend), backend


def local(*eps: tuple[str, str, dict[str, str]]) -> tuple[dict[Any, Endpoint], dict[str, Route]]:
    endpoints = {
        ("shop", wep_name(ME, "k8s", p, "eth0")): expected_endpoint(p, ip, lab) for p, ip, lab in eps
    }
    routes = {
        f"{ip}/32": Route(
            f"{ip}/32",
            "local",
            iface=veth_name_for_workload("shop", p),
            reason=f"workload shop/{wep_name(ME, 'k8s', p, 'eth0')}",
        )
        for p, ip, _ in eps
    }
    return endpoints, routes


def test_same_scenario_same_node_state_on_etcd_and_kubernetes(world: tuple[Cluster, Any, Any]) -> None:
    """The scenario of the module docstring, against a real etcd and against the stand-in API server:
    after each step the calc's NodeState (local endpoints with iface/IPs/labels, routes, VTEPs, encap)
    and the passthrough inputs are the same; a compaction mid-scenario loses and repeats nothing."""
    cluster, kv, backend = world
    cluster.namespace("shop", {"team": "red"})
    cluster.pool()
    cluster.node("node-a", vxlan=False)
    cluster.node("node-b", vxlan=True)
    cluster.pod("web", "node-a", "10.80.0.5", {"app": "web"})
    cluster.pod("db", "node-b", "10.80.1.5", {"app": "db"})
    agent = Agent(kv, backend)
    agent.start()
    try:
        _steps(cluster, agent)
    finally:
        agent.close()


def _expect(
    agent: Agent, eps: tuple[tuple[str, str, dict[str, str]], ...], inputs: dict[Any, Any], what: str
) -> None:
    endpoints, routes = local(*eps)
    vtep = Vtep("node-b", B_TUNNEL, B_MAC, "192.0.2.11")

    def check() -> bool:
        state = agent.dataplane.state()
        return (
            state.endpoints == endpoints
            and state.routes == routes
            and state.vteps == {"node-b": vtep}
            and (state.encap.vxlan, state.encap.node_ip) == (True, NODE_IPS[ME])
            and agent.inputs() == inputs
        )

    agent.until(check, what)
    assert agent.dataplane.state() == agent.writer.graph.state(), "the deltas add up to the graph's state"


def _steps(cluster: Cluster, agent: Agent) -> None:
    inputs: dict[Any, Any] = {
        ("Namespace", ("", "shop")): {"team": "red"},
        ("IPPool", ("", "pool-1")): (POOL, "Always"),
        ("Node", ("", "node-a")): NODE_IPS["node-a"],
        ("Node", ("", "node-b")): NODE_IPS["node-b"],
    }
    web, api, cache = (
        ("web", "10.80.0.5", {"app": "web"}),
        ("api", "10.80.0.6", {"app": "api"}),
        ("cache", "10.80.0.7", {"app": "cache"}),
    )
    _expect(agent, (web,), inputs, "the snapshot")

    cluster.pod("api", "node-a", "10.80.0.6", {"app": "api"})
    cluster.k8s_policy("allow-web")
    cluster.namespace("shop", {"team": "blue"})
    inputs[("Namespace", ("", "shop"))] = {"team": "blue"}
    inputs[("K8sNetworkPolicy", ("shop", "allow-web"))] = K8sNetworkPolicy.model_validate(
        {"spec": POLICY}
    ).to_dict()["spec"]
    _expect(agent, (web, api), inputs, "a new pod, a policy and a namespace label change")

    seen = len(agent.writer.msgs)
    resyncs = agent.sources.syncer.resyncs
    with cluster.outage():
        cluster.relabel_pod("web", {"app": "web", "tier": "front"})
        cluster.delete_pod("api")
        cluster.pod("cache", "node-a", "10.80.0.7", {"app": "cache"})
    web = ("web", "10.80.0.5", {"app": "web", "tier": "front"})
    _expect(agent, (web, cache), inputs, "changes made across a compaction")
    agent.until(lambda: agent.sources.syncer.status == "in-sync", "in-sync after the compaction")
    after = [(m.kind, m.key, m.deleted) for m in agent.writer.msgs[seen:]]
    assert sorted(after) == sorted(
        [
            ("WorkloadEndpoint", ("shop", wep_name(ME, "k8s", "api", "eth0")), True),
            ("WorkloadEndpoint", ("shop", wep_name(ME, "k8s", "cache", "eth0")), False),
            ("WorkloadEndpoint", ("shop", wep_name(ME, "k8s", "web", "eth0")), False),
        ]
    ), "each change across the compaction delivered once; nothing unchanged delivered again"
    kube = isinstance(cluster, KubeCluster)
    assert agent.sources.syncer.resyncs == resyncs + (1 if kube else 0)

    cluster.delete_pod("web")
    _expect(agent, (cache,), inputs, "a pod deletion after the resync")
    assert agent.dataplane.in_sync
