"""GC of finished pods and re-created pods, against the stand-in API server and a real etcd (etcd mode).

A pod in a terminal phase (Failed — Evicted among them — or Succeeded) holds no address, though its Pod
object stays until someone deletes it: its allocation is freed once the grace period passes (Calico's
kube-controllers rule). The allocation records its pod's UID (the CNI ADD's K8S_POD_UID), so a pod
deleted and re-created under the same name does not keep its predecessor's address alive, while its
own allocation — Pending, no address in its status yet — is never touched. Running and Pending pods
keep theirs through many grace periods. A finished pod's WorkloadEndpoint goes too (etcd mode), a live
one's stays.
"""

from __future__ import annotations

import time
from typing import Any

from felixpy.kube import convert
from felixpy.resources.endpoint import WorkloadEndpoint
from tests.integration.test_controllers import (
    GRACE,
    NET,
    add_node,
    allocated,
    cluster_env,  # noqa: F401  (the fixture)
    pass_count,
    released_count,
    wait_for,
)


def _pod(env: dict[str, Any], name: str, *, phase: str, reason: str = "", with_ip: bool = True) -> str:
    """A pod object (stand-in) and its allocation, recorded as the CNI ADD records it (uid included)."""
    obj = env["api"].store.create(
        "pods", "default", {"metadata": {"name": name}, "spec": {"nodeName": "n1"}, "status": {}}
    )
    uid = obj["metadata"]["uid"]
    ip = _alloc(env, name, uid, cid=f"c-{name}")
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if with_ip:
        status["podIP"] = ip  # a finished pod's status keeps its podIP
    env["api"].store.patch("pods", "default", name, {"status": status})
    env["backend"].create(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": convert.wep_name("n1", "k8s", name, "eth0"), "namespace": "default"},
                "spec": {
                    "node": "n1",
                    "pod": name,
                    "containerID": f"c-{name}",
                    "ipNetworks": [f"{ip}/32"],
                    "interfaceName": f"cali{name[:11]:0<11}",
                    "orchestrator": "k8s",
                },
            }
        )
    )
    return ip


def _weps(env: dict[str, Any]) -> set[str]:
    return {w.spec.pod for w in env["backend"].list(WorkloadEndpoint)[0] if isinstance(w, WorkloadEndpoint)}


def _alloc(env: dict[str, Any], pod: str, uid: str, *, cid: str) -> str:
    attrs = {"node": "n1", "namespace": "default", "pod": pod, "uid": uid, "timestamp": str(time.time())}
    return str(env["ipam"].auto_assign(f"{NET}.{cid}", node="n1", num_v4=1, attrs=attrs).v4[0])


def test_finished_pods_addresses_freed_after_grace_live_ones_never(cluster_env) -> None:  # noqa: F811
    env = cluster_env
    add_node(env, "n1")
    evicted = _pod(env, "evicted", phase="Failed", reason="Evicted")
    failed = _pod(env, "failed", phase="Failed")
    done = _pod(env, "done", phase="Succeeded")
    running = _pod(env, "running", phase="Running")
    pending = _pod(env, "pending", phase="Pending", with_ip=False)
    # 'web' deleted without CNI DEL and re-created under the same name (a StatefulSet pod): the new pod is
    # Pending, its CNI ADD done, no address in its status yet.
    old_web = _alloc(env, "web", "uid-of-the-deleted-web", cid="c-web-old")
    new_uid = env["api"].store.create(
        "pods",
        "default",
        {"metadata": {"name": "web"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}},
    )["metadata"]["uid"]
    new_web = _alloc(env, "web", new_uid, cid="c-web-new")

    ctl = env["start"]("a")
    started = time.monotonic()
    wait_for(ctl.elector.is_leader, 10, "the only replica to lead")
    gone = (evicted, failed, done, old_web)
    wait_for(
        lambda: not any(allocated(env, ip) for ip in gone), 30, "the finished pods' addresses to be freed"
    )
    assert time.monotonic() - started >= GRACE, "freed before the grace period"
    for name in ("evicted", "failed", "done"):
        assert env["api"].store.get("pods", "default", name), "the Pod objects themselves stay"
    assert released_count(ctl, "address", "pod-evicted") == 1
    assert released_count(ctl, "address", "pod-failed") == 1
    assert released_count(ctl, "address", "pod-succeeded") == 1
    assert released_count(ctl, "address", "pod-replaced") == 1
    wait_for(lambda: _weps(env) == {"running", "pending"}, 30, "the finished pods' WorkloadEndpoints deleted")
    assert released_count(ctl, "endpoint", "pod-evicted") == 1

    base = pass_count(ctl, "ok")
    wait_for(lambda: pass_count(ctl, "ok") >= base + 4, 30, "four more passes (> 2 grace periods)")
    for ip, who in ((running, "Running"), (pending, "Pending"), (new_web, "re-created Pending")):
        assert allocated(env, ip), f"the {who} pod's address is kept"

    # The pending pod finishes: from then on its address is garbage too, after the grace period.
    env["api"].store.patch("pods", "default", "pending", {"status": {"phase": "Succeeded"}})
    finished = time.monotonic()
    wait_for(lambda: not allocated(env, pending), 30, "the newly finished pod's address to be freed")
    assert time.monotonic() - finished >= GRACE, "freed before the grace period"
    assert allocated(env, running) and allocated(env, new_web)
    wait_for(lambda: _weps(env) == {"running"}, 30, "its WorkloadEndpoint deleted too")
