"""``BGPService``: the one object the agent constructs to run BGP on a node (see bgp/__init__.py).

Threads: ``bgp-service`` (the only caller of the engine: RIB, FIB, advertisements),
``bgp-exabgp`` (supervises the ExaBGP child), and the API channel's accept/reader/writer.
Processes: ExaBGP, and the bridge it runs. Run-dir files: ``exabgp.conf``, ``exabgp.pid``,
``exabgp.log``, ``bgp-api.sock`` and ``bgp-status.json`` (read by ``felixctl node status``).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bgp import exabgp_api as api
from bgp.bfd_client import BfdClient
from bgp.bfd_config import daemon_sessions
from bgp.channel import ApiChannel
from bgp.engine import Desired, Engine
from bgp.fib import Fib, Resolver, RouteOps
from bgp.filters import (
    DEFAULT_MAX_AS_PATH,
    EXCLUDE_LABEL,
    ImportPolicy,
    PoolInfo,
    local_exports,
    service_cidrs,
    service_exports,
)
from bgp.nexthop_iface import NextHopInterfaces
from bgp.reflect import LocalInfo
from bgp.route import borrowed_addresses, normalize_prefix
from bgp.speaker import Speaker, SpeakerSettings
from bgp.status import ROUTES_REQUEST, PeerStatus, write_routes, write_status
from bgp.topology import DEFAULT_PORT, SecretResolver, compute_peers, hashed_router_id, local_asn
from felixpy.dataplane.kernel_objects import RTPROT_FELIXPY_BGP
from felixpy.private_files import private_dir
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node

log = logging.getLogger(__name__)
RESYNC_SECONDS = 30.0
# the status file is rewritten at least this often: an agent that overlapped its predecessor
# (which writes running=False as it stops) still shows as running within this time
STATUS_REWRITE_SECONDS = 10.0
# a change of route counts only (UPDATEs, no session change) is written this long after the first
# one at most: a reflector's burst of 10,000 routes came in 10-15 batches of ExaBGP lines, and each
# wrote the status file between them (~1 ms each, on the path of the next batch)
STATUS_ROUTES_SECONDS = 0.1
REFLECTOR_REACTOR_SPEED = 0.1  # 4 clients x 10,000 routes: 4.5 s at 0.3, 3.2 s at 0.1 (docs/perf-bgp.md)
# Other nodes: ExaBGP's loop wakes every speed/100 s and runs every peer each time, so its idle CPU
# grows with wake rate x peers. IO (peer sockets, API pipe) wakes it at once and queued API work
# never waits (bgp.exabgp_launch), so this bounds only timers and accepting connections (docs/performance.md).
NODE_REACTOR_SPEED = 5.0
SOCKET_NAME = "bgp-api.sock"
# The routes view (bgp-routes.json, felixctl node routes; CalicoNodeStatus Routes) is built only on
# request — felixctl touches ROUTES_REQUEST in the run directory, the CalicoNodeStatus writer asks in
# process — so a busy reflector spends nothing on it otherwise: a request is answered within
# ROUTES_REQUEST_SECONDS; while someone asked in the last ROUTES_INTEREST_SECONDS, changes are
# written at most every ROUTES_VIEW_SECONDS.
ROUTES_VIEW_SECONDS = 2.0
ROUTES_REQUEST_SECONDS = 0.5
ROUTES_INTEREST_SECONDS = 60.0
# The service thread sleeps until its next deadline (an engine timer, the status rewrite, the FIB
# resync, a routes view due) or an item on its queue, at most this long; a request file touched by
# felixctl wakes it through inotify (`_RequestWatch`). Without inotify it polls the file every
# ROUTES_REQUEST_SECONDS as before. Idle, it woke twice a second (docs/performance.md, "Idle (session 9)").
IDLE_WAIT_SECONDS = 10.0
_IN_ATTRIB, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x4, 0x8, 0x80, 0x100


class _RequestWatch:
    """Calls ``wake`` whenever ``name`` in ``directory`` is created, touched or replaced (inotify,
    one thread blocked in ``read``: no wake-up while nothing happens). ``start`` returns False when
    the kernel or libc offers no inotify (the caller then polls)."""

    def __init__(self, directory: Path, name: str, wake: Callable[[], None]):
        self.directory, self.name, self.wake = directory, name.encode(), wake
        self._fd, self._wd = -1, -1
        self._stopping = threading.Event()
        self._libc: Any = None

    def start(self) -> bool:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0:
                return False
            mask = _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
            wd = libc.inotify_add_watch(fd, os.fsencode(self.directory), mask)
        except (OSError, AttributeError):
            return False
        if wd < 0:
            os.close(fd)
            return False
        self._libc, self._fd, self._wd = libc, fd, wd
        threading.Thread(target=self._run, name="bgp-routes-request", daemon=True).start()
        return True

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                data = os.read(self._fd, 4096)
                if not data:
                    return
                off = 0
                while off + 16 <= len(data):  # struct inotify_event: wd, mask, cookie, len, name
                    _wd, _mask, _cookie, size = struct.unpack_from("iIII", data, off)
                    if data[off + 16 : off + 16 + size].rstrip(b"\0") == self.name:
                        self.wake()
                    off += 16 + size
        except OSError:
            return
        finally:
            os.close(self._fd)

    def stop(self) -> None:
        """End the thread: removing the watch queues an event that ends its ``read``."""
        self._stopping.set()
        if self._libc is not None and self._wd >= 0:
            self._libc.inotify_rm_watch(self._fd, self._wd)


@dataclass(frozen=True, slots=True)
class Plan:
    desired: Desired
    bind: list[str]
    port: int
    missing_filters: tuple[str, ...] = ()  # BGPFilter names some BGPPeer uses that do not exist


def _config(configs: list[BGPConfiguration], name: str) -> BGPConfiguration | None:
    return next((c for c in configs if c.metadata.name == name), None)


def build_plan(
    node_name: str,
    *,
    nodes: Iterable[Node],
    bgp_configs: Iterable[BGPConfiguration],
    peers: Iterable[BGPPeer],
    pools: Iterable[IPPool],
    local_blocks: Iterable[str],
    borrowed: Iterable[str] = (),
    resolve_secret: SecretResolver | None = None,
    bgp_filters: Iterable[BGPFilter] = (),
    workloads: Iterable[tuple[str, str]] = (),
    all_blocks: Iterable[tuple[str, str]] = (),
) -> Plan:
    """Resources → what the engine and the speaker need (pure).

    ``workloads``: (node, address) of every WorkloadEndpoint in the cluster; ``all_blocks``:
    (block, affine node) of every block. Together they say which addresses are borrowed (used
    on a node other than their block's) and by whom: this node originates its own as /32s, and
    accepts another node's /32 only from that node (``ImportPolicy.borrowed``).
    """
    nodes, configs, peers, bgp_filters = list(nodes), list(bgp_configs), list(peers), list(bgp_filters)
    me = next((n for n in nodes if n.metadata.name == node_name), None)
    bgp = me.spec.bgp if me is not None else None
    addresses = [a for a in (bgp.ipv4_address, bgp.ipv6_address) if a] if bgp else []
    v4 = str(ipaddress.ip_interface(bgp.ipv4_address).ip) if bgp and bgp.ipv4_address else None
    default = _config(configs, "default")
    node_cfg = _config(configs, f"node.{node_name}")
    sessions = compute_peers(
        node_name, nodes, configs, peers, resolve_secret=resolve_secret, bgp_filters=bgp_filters
    )
    known = {f.metadata.name for f in bgp_filters}
    missing = sorted({n for p in peers for n in p.spec.filters if n not in known})
    asn = local_asn(node_name, nodes, configs)
    cluster = bgp.route_reflector_cluster_id if bgp else None
    local = LocalInfo(router_id=v4 or hashed_router_id(node_name), local_as=asn, cluster_id=cluster or None)
    pool_infos = tuple(sorted((PoolInfo.from_resource(p) for p in pools), key=lambda p: p.cidr))
    blocks = [normalize_prefix(b) for b in local_blocks]
    spec = default.spec if default else None
    # service ranges: only the default BGPConfiguration's count (Calico ignores them on node.<name>)
    services = service_cidrs(default)
    lent = borrowed_addresses(workloads, all_blocks)
    mine = frozenset(p for p, owner in lent.items() if owner == node_name)
    policy = ImportPolicy(
        pool_infos,
        frozenset(blocks),
        bool(spec and spec.import_default_route),
        asn,
        local.router_id,
        local.cluster_id,
        services,
        local_workloads=mine,
        borrowed=lent,
        node_addresses=node_addresses(nodes),
        max_as_path=DEFAULT_MAX_AS_PATH
        if spec is None or spec.max_as_path_length is None
        else spec.max_as_path_length,
    )
    adv_config = node_cfg or default  # prefixAdvertisements: the node's override wins
    exports = local_exports(blocks, [*borrowed, *sorted(mine)], pool_infos, config=adv_config)
    if me is None or me.metadata.labels.get(EXCLUDE_LABEL) != "true":
        for prefix, attrs in service_exports(services, pool_infos, config=adv_config).items():
            exports.setdefault(prefix, attrs)
    subnets = tuple(str(ipaddress.ip_interface(a).network) for a in addresses)
    desired = Desired(
        peers=tuple(sessions),
        local=local,
        import_policy=policy,
        pools=pool_infos,
        exports=exports,
        resolver=Resolver(pools=pool_infos, local_subnets=subnets),
        ecmp=bool(spec and spec.ecmp),
    )
    port = next((c.spec.listen_port for c in (node_cfg, default) if c and c.spec.listen_port), DEFAULT_PORT)
    bind = [str(ipaddress.ip_interface(a).ip) for a in addresses]
    return Plan(desired, bind, port, tuple(missing))


def node_addresses(nodes: Iterable[Node]) -> dict[str, str]:
    """Node address and router ID -> node name (who announced a route)."""
    out: dict[str, str] = {}
    for node in nodes:
        bgp = node.spec.bgp
        if bgp is None:
            continue
        for address in (bgp.ipv4_address, bgp.ipv6_address):
            if address:
                out[str(ipaddress.ip_interface(address).ip)] = node.metadata.name
        out.setdefault(hashed_router_id(node.metadata.name), node.metadata.name)
    return out


class BGPService:
    def __init__(
        self,
        node_name: str,
        run_dir: str | Path,
        *,
        netns: str | None = None,
        route_protocol: int = RTPROT_FELIXPY_BGP,
        install_routes: bool = True,
        route_ops: RouteOps | None = None,
        reactor_speed: float = NODE_REACTOR_SPEED,
        reflector_reactor_speed: float = REFLECTOR_REACTOR_SPEED,
        exabgp: str | None = None,
        resolve_secret: SecretResolver | None = None,
        wire_reflector: bool = True,
        bfd_external: bool = False,
    ) -> None:
        self.node_name = node_name
        self.run_dir = Path(run_dir)
        private_dir(self.run_dir)  # 0700: it holds exabgp.conf (MD5 passwords)
        self._resolve_secret = resolve_secret
        self._speeds = (reactor_speed, min(reactor_speed, reflector_reactor_speed))
        settings = SpeakerSettings(self.run_dir, netns=netns, reactor_speed=reactor_speed)
        if exabgp:
            settings.exabgp = exabgp
        socket_path = str(self.run_dir / SOCKET_NAME)
        self.speaker = Speaker(settings, socket_path=socket_path)
        self.channel = ApiChannel(socket_path, self._on_event, defer_parse=True)
        self._ops = route_ops
        if install_routes and route_ops is None:
            from bgp.fib_netlink import NetlinkRouteOps

            self._ops = NetlinkRouteOps(netns=netns, protocol=route_protocol)
        fib = Fib(self._ops) if install_routes and self._ops is not None else None
        self._wire_reflector = wire_reflector
        self.engine = Engine(
            self.channel.send,
            fib,
            now=time.monotonic(),
            wire=wire_reflector,
            interface_of=NextHopInterfaces(netns),
        )
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._status: list[PeerStatus] = []
        self._status_written = 0.0  # monotonic time of the last status file write
        self._routes_since: float | None = None  # first route-count change not written yet
        self._lock = threading.Lock()
        self._missing_filters: tuple[str, ...] = ()
        self._plan: Plan | None = None
        self._counters: dict[tuple[str, ...], int] = {}
        self._received: dict[str, int] = {}
        self._fib_refused = 0
        self._view_dirty = True
        self._view_mono = -ROUTES_VIEW_SECONDS  # monotonic time of the last view written
        self._view_wall = 0.0  # its wall time ("updated")
        self._asked = 0.0  # wall time of the last in-process request
        self._last_asked = 0.0  # wall time of the last request seen, file or in-process
        self._request_watch: _RequestWatch | None = None
        self._view: dict[str, object] | None = None  # the last routes view written
        self.started_at = 0.0  # wall time of start()
        self.configured_at = 0.0  # wall time of the last update()
        # BFD (issue 19): its own process, kept across our restarts (bgp.bfd_client)
        self.bfd = BfdClient(self.run_dir, self._on_bfd, netns=netns, external=bfd_external)
        self._bfd_rows: list[dict[str, object]] = []
        self._bfd_drops: dict[str, int] = {}

    # --- public API ----------------------------------------------------------------------
    def update(
        self,
        *,
        nodes: Iterable[Node],
        bgp_configs: Iterable[BGPConfiguration],
        peers: Iterable[BGPPeer],
        pools: Iterable[IPPool],
        local_blocks: Iterable[str],
        borrowed: Iterable[str] = (),
        bgp_filters: Iterable[BGPFilter] = (),
        workloads: Iterable[tuple[str, str]] = (),
        all_blocks: Iterable[tuple[str, str]] = (),
    ) -> None:
        """The full desired state (latest wins). Thread-safe; applied by the service thread."""
        plan = build_plan(
            self.node_name,
            nodes=nodes,
            bgp_configs=bgp_configs,
            peers=peers,
            pools=pools,
            local_blocks=local_blocks,
            borrowed=borrowed,
            resolve_secret=self._resolve_secret,
            bgp_filters=bgp_filters,
            workloads=workloads,
            all_blocks=all_blocks,
        )
        if plan.missing_filters != self._missing_filters:
            self._missing_filters = plan.missing_filters
            if plan.missing_filters:
                log.warning(
                    "bgp: BGPPeer filters name BGPFilters that do not exist (skipped until they do): %s",
                    ", ".join(plan.missing_filters),
                )
        # a reflector fans every route out to every client: ExaBGP's 10 ms poll would idle it
        reflector = bool(plan.desired.local.cluster_id)
        self.speaker.settings.reactor_speed = self._speeds[reflector]
        # and ExaBGP's per-route Python would make it 30-50x slower than BIRD: UPDATEs as bytes
        self.speaker.settings.wire = self._wire_reflector and reflector
        self._plan = plan
        self.configured_at = time.time()
        self._configure_speaker(plan)
        self.bfd.configure(daemon_sessions(plan.desired.peers))
        self._queue.put(("plan", plan))

    def _configure_speaker(self, plan: Plan) -> None:
        """ExaBGP's sessions: the plan's, minus those a Disable receive limit shut."""
        disabled = set(self.engine.disabled)
        peers = [p for p in plan.desired.peers if p.address not in disabled]
        self.speaker.configure(peers, bind=plan.bind, port=plan.port)

    def start(self) -> None:
        self.started_at = time.time()
        # `felixctl node status` answers "running" from the first moment (no sessions yet), not
        # from the previous agent's file (its pid, or running=False after a SIGTERM)
        try:
            write_status(self.run_dir, self.status(), bfd=self.bfd_status())
        except OSError as exc:
            log.warning("bgp status file not written at start: %s", exc)
        self._status_written = time.monotonic()
        self.channel.start()
        self.speaker.start()
        self.bfd.start()
        watch = _RequestWatch(self.run_dir, ROUTES_REQUEST, self._wake)
        self._request_watch = watch if watch.start() else None
        self._thread = threading.Thread(target=self._loop, name="bgp-service", daemon=True)
        self._thread.start()

    def stop(self, graceful: bool = True, *, stop_bfd: bool = False) -> None:
        """End ExaBGP (with graceful restart negotiated, peers keep our routes), keep kernel routes.

        The BFD daemon keeps running (its sessions stay Up: a restart stays hitless) unless
        ``stop_bfd`` (it then tells its peers AdminDown, which is not a failure to them)."""
        self._stopping.set()
        self._wake()
        if self._request_watch is not None:
            self._request_watch.stop()
        self.speaker.stop(timeout=5.0 if graceful else 0.5)
        self.bfd.stop()
        if stop_bfd:
            self.bfd.stop_daemon()
        self.channel.stop()
        if self._thread is not None:
            self._thread.join(5.0)
        write_status(self.run_dir, self.status(), running=False, bfd=self.bfd_status())

    def status(self) -> list[PeerStatus]:
        with self._lock:
            return list(self._status)

    def routes_view(self) -> dict[str, object] | None:
        """The last routes view (``Engine.routes_view``), None before the first."""
        with self._lock:
            return self._view

    def fresh_routes_view(self, timeout: float = 3.0) -> dict[str, object] | None:
        """Ask the service thread for a view and wait (bounded) for one built after the request;
        the last one if none came in time."""
        asked = time.time()
        with self._lock:
            self._asked = max(self._asked, asked)
        self._wake()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            with self._lock:
                if self._view_wall >= asked:
                    return self._view
            time.sleep(0.05)
        return self.routes_view()

    def _view_due(self, now: float) -> bool:
        """Whether to build and write the routes view now (see ROUTES_VIEW_SECONDS)."""
        try:
            asked = (self.run_dir / ROUTES_REQUEST).stat().st_mtime
        except OSError:
            asked = 0.0
        with self._lock:
            asked = max(asked, self._asked)
        self._last_asked = asked
        if asked >= self._view_wall and now - self._view_mono >= ROUTES_REQUEST_SECONDS:
            return True
        interested = time.time() - asked < ROUTES_INTEREST_SECONDS
        return self._view_dirty and interested and now - self._view_mono >= ROUTES_VIEW_SECONDS

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def router_id(self) -> str:
        plan = self._plan
        return plan.desired.local.router_id if plan is not None else ""

    @property
    def families(self) -> tuple[int, ...]:
        """The IP versions this node speaks BGP on (its addresses)."""
        plan = self._plan
        return tuple(sorted({6 if ":" in a else 4 for a in plan.bind})) if plan is not None else ()

    def bfd_status(self) -> list[dict[str, object]]:
        """Per-peer BFD rows (bgp.bfd_gate.BfdGate.rows) as of the last batch."""
        with self._lock:
            return list(self._bfd_rows)

    def bfd_drops(self) -> dict[str, int]:
        """BFD packets the daemon dropped, by reason."""
        with self._lock:
            return dict(self._bfd_drops)

    def counters(self) -> tuple[dict[tuple[str, ...], int], dict[str, int], int]:
        """(engine counters, prefixes received per peer, FIB refusals) as of the last batch."""
        with self._lock:
            return dict(self._counters), dict(self._received), self._fib_refused

    def wait_synced(self, timeout: float) -> bool:
        """True once every command sent to ExaBGP was acknowledged (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.channel.connected and self.channel.idle() and self._queue.empty():
                return True
            time.sleep(0.05)
        return False

    # --- service thread ------------------------------------------------------------------
    def _wake(self) -> None:
        """End the service thread's wait now (a stop, a routes view request)."""
        self._queue.put(("wake", None))

    def _wait_seconds(self, now: float, next_resync: float) -> float:
        """How long the service thread may sleep: until its next deadline, IDLE_WAIT_SECONDS at
        most (ROUTES_REQUEST_SECONDS while the request file has to be polled)."""
        due = [next_resync, self._status_written + STATUS_REWRITE_SECONDS]
        if self._routes_since is not None:
            due.append(self._routes_since + STATUS_ROUTES_SECONDS)
        engine_due = self.engine.next_due(now)
        if engine_due is not None:
            due.append(engine_due)
        if self._view_dirty and time.time() - self._last_asked < ROUTES_INTEREST_SECONDS:
            due.append(self._view_mono + ROUTES_VIEW_SECONDS)
        cap = IDLE_WAIT_SECONDS if self._request_watch is not None else ROUTES_REQUEST_SECONDS
        return min(cap, max(0.01, min(due) - now))

    def _on_event(self, event: api.Event) -> None:
        self._queue.put(("event", event))

    def _on_bfd(self, doc: dict[str, object]) -> None:
        self._queue.put(("bfd", doc))

    def _loop(self) -> None:
        if self.engine.fib is not None:
            self.engine.fib.resync()
        next_resync = time.monotonic() + RESYNC_SECONDS
        self._wake()  # a first turn at once (the first routes view, the status)
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=self._wait_seconds(time.monotonic(), next_resync))
            except queue.Empty:
                item = None
            batch = [item] if item else []
            while len(batch) < 2000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch = [b for b in batch if b[0] != "wake"]
            if self._stopping.is_set():
                break
            self._process(batch)
            now = time.monotonic()
            if batch:
                self._view_dirty = True
            if self._view_due(now):
                self._view_dirty = False
                self._view_mono = now
                view = self.engine.routes_view()
                wall = time.time()
                try:
                    write_routes(self.run_dir, view, updated=wall)
                except OSError as exc:
                    log.warning("bgp routes view not written: %s", exc)
                with self._lock:
                    self._view, self._view_wall = view, wall
            if now >= next_resync and self.engine.fib is not None:
                self.engine.fib.resync()
                next_resync = now + RESYNC_SECONDS

    def _process(self, batch: list[tuple[str, object]]) -> None:
        now = time.monotonic()
        for kind, payload in batch:
            if kind == "plan":
                assert isinstance(payload, Plan)
                self.engine.configure(payload.desired)
            elif kind == "bfd":
                self.engine.bfd_message(payload, now)  # type: ignore[arg-type]
            else:
                event = payload
                if isinstance(payload, api.Unparsed):
                    try:
                        event = api.parse_line(payload.line)
                    except Exception:  # a decoder bug must not stop the service thread
                        log.exception("bgp event not parsed: %.200s", payload.line)
                        continue
                self.engine.handle(event, now)  # type: ignore[arg-type]
        self.engine.flush()
        self.engine.tick(now)
        if self.engine.disabled_changed:
            self.engine.disabled_changed = False
            plan = self._plan
            if plan is not None:
                self._configure_speaker(plan)
        fib = self.engine.fib
        with self._lock:
            self._counters = dict(self.engine.counters)
            self._fib_refused = fib.refused_owned if fib is not None else 0
        if self.engine.routes_changed:
            self.engine.routes_changed = False
            if self._routes_since is None:
                self._routes_since = now
        routes_due = self._routes_since is not None and now - self._routes_since >= STATUS_ROUTES_SECONDS
        if self.engine.status_changed or routes_due or now - self._status_written >= STATUS_REWRITE_SECONDS:
            self.engine.status_changed = False
            self._routes_since = None
            self._status_written = now
            ours = self.speaker.settings.hold_time
            status = [
                replace(s, hold_time=min(s.hold_time, ours) if s.hold_time else 0)
                for s in self.engine.status()
            ]
            bfd_rows = self.engine.bfd_gate.rows(now)
            with self._lock:
                self._status = status
                self._received = {s.address: s.routes_received for s in status}
                self._bfd_rows, self._bfd_drops = bfd_rows, dict(self.engine.bfd_gate.drops)
            write_status(self.run_dir, status, bfd=bfd_rows)
