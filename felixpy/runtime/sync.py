"""Feeds the writer: the datastore Syncer (resources) plus a watcher of IPAM block affinities.

Affinities (`/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`) are not resources, so they are
followed here with the same snapshot → watch → re-snapshot-with-sweep shape as the Syncer.
The writer is told "in sync" only when both sources are.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from felixpy.calc.updates import InvalidConfig
from felixpy.datastore.errors import DatastoreError
from felixpy.datastore.kv import KV
from felixpy.datastore.syncer import SnapshotRead, Syncer
from felixpy.resources import (
    BGPConfiguration,
    BGPFilter,
    BGPPeer,
    FelixConfiguration,
    GlobalNetworkPolicy,
    HostEndpoint,
    IPPool,
    K8sNetworkPolicy,
    Namespace,
    NetworkPolicy,
    Node,
    Resource,
    ServiceAccount,
    Tier,
    WorkloadEndpoint,
)
from felixpy.resources.stored import GlobalNetworkSet, NetworkSet, Profile
from felixpy.runtime.writer import BlockMsg, InSyncMsg, Msg, ResourceMsg, Writer

if TYPE_CHECKING:
    from felixpy.datastore.backend import Backend, ResourceEvent
    from felixpy.resources.base import Resource

log = structlog.get_logger(__name__)

HOST_PREFIX = "/calico/ipam/v2/host/"
SYNCED_KINDS: list[type[Resource]] = [
    IPPool,
    Node,
    Profile,  # before the endpoints: a snapshot's endpoints then find their profiles' labelsToApply
    WorkloadEndpoint,
    BGPConfiguration,
    BGPPeer,
    BGPFilter,
    FelixConfiguration,
    Tier,  # before the policies: a snapshot's policies then find their tiers
    NetworkPolicy,
    GlobalNetworkPolicy,
    K8sNetworkPolicy,
    Namespace,
    ServiceAccount,
    HostEndpoint,
    GlobalNetworkSet,  # rule selectors match network sets: their nets join the selector ipsets
    NetworkSet,
]


def build_models(kinds: list[type[Resource]], stop: Callable[[], bool]) -> int:
    """Build the validators of ``kinds`` (pydantic builds a model's on its first use: ``defer_build``)
    until ``stop()``; the number built. The agent's writer thread calls it while the syncer reads
    the snapshot from etcd, so that the snapshot's first endpoint, policy, pool... does not pay for
    it (all 17 kinds: ~50 ms of CPU at x10, spent instead while the writer waits for etcd)."""
    built = 0
    for kind in kinds:
        if stop():
            break
        if not kind.__pydantic_complete__:
            kind.model_rebuild()
            built += 1
    return built


def parse_affinity(key: str, value: bytes) -> tuple[str, str, bool] | None:
    """(node, block cidr, confirmed) from an affinity key/value, or None for other keys (pure)."""
    parts = key[len(HOST_PREFIX) :].split("/")
    if not key.startswith(HOST_PREFIX) or len(parts) != 4 or parts[2] != "block":
        return None
    addr, _, plen = parts[3].rpartition("-")
    try:
        doc = json.loads(value or b"{}")
    except ValueError:
        doc = {}
    confirmed = doc.get("state", "confirmed") == "confirmed" and not doc.get("deleted")
    return parts[0], f"{addr}/{plen}", confirmed


def synced_kinds(backend: Backend) -> list[type[Resource]]:
    """SYNCED_KINDS, less those the backend synthesises itself (Kubernetes mode: kns./ksa. Profiles
    from Namespaces and ServiceAccounts, which are synced themselves)."""
    synthesised: frozenset[str] = getattr(backend, "SYNTHESISED_KINDS", frozenset())
    return [k for k in SYNCED_KINDS if k.KIND not in synthesised]


def read_early(backend: Backend) -> SnapshotRead:
    """Start reading the resources' first snapshot now (``SyncSources(..., first_read=)`` takes it).
    The agent calls it once its own start-up writes are done, so the snapshot holds them."""
    return SnapshotRead(backend, synced_kinds(backend))


class SyncSources:
    def __init__(
        self, kv: KV, backend: Backend, writer: Writer, *, first_read: SnapshotRead | None = None
    ) -> None:
        self.kv = kv
        self.writer = writer
        self.syncer = Syncer(
            backend,
            synced_kinds(backend),
            on_updates=self._on_updates,
            on_status=self._on_status,
            first_read=first_read,
        )
        self._resources_synced = False
        self._blocks_synced = False
        self._lock = threading.Lock()
        self._known_blocks: dict[str, str] = {}  # cidr -> node (confirmed only)
        self.affinity_error: BaseException | None = None

    def start(self, stop: threading.Event) -> None:
        self.syncer.start()
        threading.Thread(
            target=self._affinities_main, args=(stop,), name="felixpy-affinities", daemon=True
        ).start()

    def error(self) -> BaseException | None:
        return self.syncer.error or self.affinity_error

    @property
    def in_sync(self) -> bool:
        return self._resources_synced and self._blocks_synced

    # ---- resources ----------------------------------------------------------------------
    def _on_updates(self, events: list[ResourceEvent]) -> None:
        msgs: list[Msg] = []
        add = msgs.append
        for ev in events:
            key = (ev.namespace or "", ev.name)
            kind = (
                "K8sNetworkPolicy" if ev.kind is K8sNetworkPolicy else ev.kind.KIND
            )  # both KIND NetworkPolicy
            if ev.kind is FelixConfiguration:
                add(ResourceMsg(kind, key, _felix_config(ev), ev.revision))
            elif ev.type == "put":  # the model is built by the writer (ResourceMsg.event)
                add(ResourceMsg(kind, key, None, ev.revision, event=ev))
            else:
                add(ResourceMsg(kind, key, None, ev.revision))
        self.writer.submit_many(msgs)  # one queue operation per batch (a snapshot's kind: 11,000)

    def _on_status(self, status: str) -> None:
        log.info("datastore.status", status=status, source="resources")
        with self._lock:
            self._resources_synced = status == "in-sync"
            self._maybe_in_sync()

    def _maybe_in_sync(self) -> None:
        if self._resources_synced and self._blocks_synced:
            self.writer.submit(InSyncMsg())

    # ---- affinities ---------------------------------------------------------------------
    def _affinities_main(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    revision = self._affinity_snapshot()
                    for batch in self.kv.watch(HOST_PREFIX, revision + 1):
                        for ev in batch:
                            self._affinity_event(ev.key, ev.value if ev.type == "put" else b"")
                        if stop.is_set():
                            return
                except DatastoreError as exc:
                    log.warning("datastore.resync", source="affinities", reason=str(exc))
                    stop.wait(1.0)
        except BaseException as exc:  # crash-only: the agent's main loop sees it and exits
            self.affinity_error = exc
            raise

    def _affinity_snapshot(self) -> int:
        items, revision = self.kv.list(HOST_PREFIX)
        seen: dict[str, str] = {}
        for item in items:
            parsed = parse_affinity(item.key, item.value)
            if parsed and parsed[2]:
                seen[parsed[1]] = parsed[0]
        for cidr in set(self._known_blocks) - set(seen):
            self.writer.submit(BlockMsg(cidr, None))
        for cidr, node in seen.items():
            if self._known_blocks.get(cidr) != node:
                self.writer.submit(BlockMsg(cidr, node))
        self._known_blocks = seen
        with self._lock:
            self._blocks_synced = True
            self._maybe_in_sync()
        return revision

    def _affinity_event(self, key: str, value: bytes) -> None:
        parsed = parse_affinity(key, value) if value else parse_affinity(key, b'{"deleted": true}')
        if parsed is None:
            return
        node, cidr, confirmed = parsed
        if confirmed:
            self._known_blocks[cidr] = node
            self.writer.submit(BlockMsg(cidr, node))
        elif self._known_blocks.get(cidr) == node:
            del self._known_blocks[cidr]
            self.writer.submit(BlockMsg(cidr, None))


def _felix_config(ev: ResourceEvent) -> Resource | InvalidConfig | None:
    """A FelixConfiguration that does not validate must not end the syncer (and the agent with it):
    it goes on as `InvalidConfig`, which the config watch reports and ignores."""
    if ev.type != "put":
        return None
    try:
        return ev.obj
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return InvalidConfig(ev.name, where)
