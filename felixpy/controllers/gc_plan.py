"""Pure garbage-collection decisions: what is a confirmed leak, with its reason. No I/O.

Safety rules, each a line below and a row in tests/unit/test_controllers_gc_plan.py:
- Nothing is planned from an incomplete view: the caller passes ``None`` when any list failed,
  and the plan is empty and the candidate clocks are left as they were. A view with no pods or
  no nodes at all counts as incomplete.
- An allocation is *valid* (kept, its clock cleared) when its address is a live pod's address,
  when its handle is a live pod's handle (the CNI handle ``<network>.<containerID>``), when its
  pod exists (same UID where the allocation recorded one, on the allocation's node where both
  are known), when it has no pod/namespace attributes (unknown owner: never collected), or when
  it is a tunnel address of a node that exists.
- A pod in a terminal phase (Failed — Evicted among them — or Succeeded) holds nothing: its addresses
  and container ID count for no allocation, and its own allocations are invalid though the Pod object
  remains (Calico's rule: finished pods have no IPs), and so is its WorkloadEndpoint (etcd mode; Calico's
  Kubernetes datastore shows no endpoint for a finished pod). A Running or Pending pod is never one.
- An invalid allocation becomes a *candidate*; it is *confirmed* only once it has stayed invalid
  for longer than the grace period, measured from the first pass that saw it invalid.
- A handle is released only when every one of its addresses is confirmed.
- A grace period of 0 disables collection (Calico's leakGracePeriod semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TUNNEL_TYPES = frozenset(
    {
        "ipipTunnelAddress",
        "vxlanTunnelAddress",
        "vxlanV6TunnelAddress",
        "wireguardTunnelAddress",
        "wireguardV6TunnelAddress",
    }
)
TUNNEL_HANDLE_PREFIXES = (
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "vxlan-v6-tunnel-addr-",
    "wireguard-tunnel-addr-",
    "wireguard-v6-tunnel-addr-",
)


TERMINAL_PHASES = frozenset({"Failed", "Succeeded"})


@dataclass(frozen=True, slots=True)
class Allocation:
    ip: str
    handle: str
    attrs: Mapping[str, str]

    @property
    def key(self) -> str:
        return f"ip/{self.ip}/{self.handle}"

    @property
    def is_tunnel(self) -> bool:
        return self.attrs.get("type") in TUNNEL_TYPES or self.handle.startswith(TUNNEL_HANDLE_PREFIXES)


@dataclass(frozen=True, slots=True)
class LivePod:
    namespace: str
    name: str
    uid: str = ""
    node: str = ""
    ips: frozenset[str] = frozenset()
    container_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    phase: str = ""  # status.phase; "" when not reported yet (a new pod: live)
    reason: str = ""  # status.reason ("Evicted")

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A WorkloadEndpoint as stored (etcd mode): its pod and its CAS token."""

    namespace: str
    name: str
    pod: str
    node: str
    revision: str

    @property
    def key(self) -> str:
        return f"wep/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the API server holds, from lists that all completed."""

    pods: Mapping[tuple[str, str], LivePod]
    nodes: frozenset[str]

    def pod_ips(self) -> dict[str, LivePod]:
        """The addresses live pods hold (a terminal pod's status keeps its podIP: it holds nothing)."""
        return {ip: p for p in self.pods.values() if not p.terminal for ip in p.ips}

    def container_ids(self) -> frozenset[str]:
        return frozenset(p.container_id for p in self.pods.values() if p.container_id and not p.terminal)


@dataclass(frozen=True, slots=True)
class Release:
    what: str  # an address, an endpoint "<ns>/<name>", or a node name
    handle: str
    reason: str


@dataclass(slots=True)
class Plan:
    addresses: list[Release] = field(default_factory=list)
    endpoints: list[tuple[Endpoint, str]] = field(default_factory=list)
    nodes: list[Release] = field(default_factory=list)  # deleted nodes whose holdings go now
    candidates: dict[str, float] = field(default_factory=dict)  # key -> first time seen invalid


def invalid_reason(
    a: Allocation, view: ClusterView, ips: Mapping[str, LivePod], cids: frozenset[str]
) -> str | None:
    """Why ``a`` looks leaked, or None when it is (or may be) in use."""
    node = a.attrs.get("node", "")
    if a.is_tunnel:
        return None if not node or node in view.nodes else "node-deleted"
    if a.ip in ips:
        return None  # the address is a live pod's, whatever the allocation's records say
    if a.handle.partition(".")[2] in cids:
        return None  # the handle was taken over by a live pod
    ns, pod = a.attrs.get("namespace"), a.attrs.get("pod")
    if not ns or not pod:
        return None  # no owner recorded: never collected
    live = view.pods.get((ns, pod))
    if live is None:
        return "pod-deleted" if not node or node in view.nodes else "node-deleted"
    uid = a.attrs.get("uid") or a.attrs.get("podUID") or ""
    if uid and live.uid and uid != live.uid:
        return "pod-replaced"
    if live.terminal:
        return terminal_reason(live)
    if node and live.node and node != live.node and live.ips:
        return "pod-on-other-node"
    return None


def terminal_reason(pod: LivePod) -> str | None:
    """Why a pod that exists holds nothing any more (it has finished), or None while it is live."""
    if not pod.terminal:
        return None
    return "pod-evicted" if pod.reason == "Evicted" else f"pod-{pod.phase.lower()}"


def _confirm(
    key: str, reason: str | None, *, old: Mapping[str, float], new: dict[str, float], now: float, grace: float
) -> bool:
    if reason is None:
        return False
    since = old.get(key, now)
    new[key] = since
    return now - since >= grace


def plan(
    allocations: Iterable[Allocation],
    endpoints: Iterable[Endpoint],
    view: ClusterView | None,
    *,
    candidates: Mapping[str, float],
    affine_nodes: Iterable[str],
    now: float,
    grace: float,
) -> Plan:
    """The confirmed leaks of one pass, and the candidate clocks to carry to the next."""
    if view is None or grace <= 0 or not view.pods or not view.nodes:
        # A cluster always has pods and nodes (these controllers run in one): an empty list is a
        # wrong cluster or a broken API server, never a reason to free everything.
        return Plan(candidates=dict(candidates))
    out = Plan()
    ips, cids = view.pod_ips(), view.container_ids()
    allocs = list(allocations)
    by_handle: dict[str, list[tuple[Allocation, str | None, bool]]] = {}
    for a in allocs:
        reason = invalid_reason(a, view, ips, cids)
        ok = _confirm(a.key, reason, old=candidates, new=out.candidates, now=now, grace=grace)
        by_handle.setdefault(a.handle, []).append((a, reason, ok))
    kept_nodes: set[str] = set()
    for handle, rows in sorted(by_handle.items()):
        if all(ok for _, _, ok in rows):
            out.addresses += [Release(a.ip, handle, r or "") for a, r, _ in rows]
        else:
            kept_nodes.update(a.attrs.get("node", "") for a, _, _ in rows)
    for ep in endpoints:
        owner = view.pods.get((ep.namespace, ep.pod))
        if owner is None:
            reason = "pod-deleted" if ep.node in view.nodes else "node-deleted"
        else:
            reason = terminal_reason(owner)
        if _confirm(ep.key, reason, old=candidates, new=out.candidates, now=now, grace=grace):
            out.endpoints.append((ep, reason or ""))
    for node in sorted(set(affine_nodes)):
        reason = None if node in view.nodes else "node-deleted"
        confirmed = _confirm(f"node/{node}", reason, old=candidates, new=out.candidates, now=now, grace=grace)
        if confirmed and node not in kept_nodes:
            out.nodes.append(Release(node, "", "node-deleted"))
    return out
