"""Wiring of `felixpy node`: every part constructed here, explicitly, and run until one fails.

    datastore Syncer + affinity watcher ─┐
    CNI handler threads (unix socket) ───┼─▶ Writer queue ─▶ CalcGraph ─▶ LinuxDataplane (+BGP, policy)
    resync timer ────────────────────────┘

Crash-only: the main thread watches the other threads; if any of them died, or the writer raised,
the process exits non-zero and its supervisor restarts it. Kernel state is left in place on exit,
so forwarding continues, and the restarted agent adopts it (routes by protocol, veths by name).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from felixpy import interpreter
from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import Update
from felixpy.cni.handler import CNIHandler
from felixpy.cni.ipam_service import IpamService
from felixpy.cni.server import CNIServer
from felixpy.dataplane.encap_driver import EncapDriver, EncapSettings
from felixpy.dataplane.links import WorkloadLinks
from felixpy.dataplane.linux import FamilyPolicies, LinuxDataplane, PolicyDriver
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.routes import RouteTable
from felixpy.dataplane.sysctl import enable_ip_forwarding, ipv6_available
from felixpy.datastore.backend import Backend
from felixpy.datastore.config import DatastoreConfig, connect
from felixpy.datastore.kv import KV
from felixpy.datastore.tiers import ensure_default_tier
from felixpy.private_files import private_dir
from felixpy.runtime import startup
from felixpy.runtime.config_watch import ROUTE_REFLECTOR_FIELDS, ConfigWatch, params_digest
from felixpy.runtime.health import HealthServer, Metrics, NullMetrics, metrics_for
from felixpy.runtime.settings import FelixParams, Settings
from felixpy.runtime.sync import SYNCED_KINDS, SyncSources, build_models, read_early
from felixpy.runtime.writer import NullDataplane, Writer
from ipam.ipam import IPAM

if TYPE_CHECKING:
    from bgp.service import BGPService
    from felixpy.dataplane.wireguard_driver import WireguardDriver
    from felixpy.runtime.autodetect import HostAddress
    from felixpy.runtime.node_status_reporter import NodeStatusReporter

log = structlog.get_logger(__name__)
# The main loop's period: how soon a failed writer or datastore sync ends the agent, a settled
# FelixConfiguration change restarts it, gauges refresh. /liveness and /readiness are answered
# from the state itself, not from this loop. 0.5 s until session 9: each turn is a wake-up of an
# idle agent (docs/performance.md, "Idle (session 9)").
MAIN_LOOP_SECONDS = 1.0

# Handed across the exec of a config restart (the environment is the one thing exec keeps).
RESTARTS_ENV = "FELIXPY_CONFIG_RESTARTS"  # how many config restarts this process has had
TARGET_ENV = "FELIXPY_CONFIG_TARGET"  # params_digest of the parameters the last one was for


@dataclass(frozen=True)
class ConfigRestart:
    target: str  # params_digest of the wanted parameters
    fields: tuple[str, ...]


@dataclass
class Agent:
    settings: Settings
    params: FelixParams
    kv: KV
    backend: Backend
    writer: Writer
    dataplane: LinuxDataplane | BGPOnlyDataplane
    sources: SyncSources
    metrics: Metrics | NullMetrics
    cni: CNIServer | None
    bgp: BGPService | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    writer_error: BaseException | None = None
    config_watch: ConfigWatch | None = None
    restart: ConfigRestart | None = None  # set when run() returned to exec again: the config changed
    terminated: bool = False  # a SIGTERM/SIGINT came: exit, even if a config restart was due
    writer_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    node_status: NodeStatusReporter | None = field(default=None, init=False, repr=False)  # (with BGP)

    def __post_init__(self) -> None:
        if self.metrics.enabled and self.bgp is not None and hasattr(self.bgp, "counters"):
            from bgp.metrics import BGPCollector

            self.metrics.registry.register(BGPCollector(self.bgp))  # refusals, receive limits (issue 12)

    def watch_config(self, env: dict[str, str], last_target: str | None = None) -> None:
        fields = ROUTE_REFLECTOR_FIELDS if self.settings.route_reflector else None
        watch = ConfigWatch(self.settings.nodename, env, self.params, fields=fields, last_target=last_target)
        self.writer.on_updates = lambda updates: watch.on_updates(updates, time.monotonic())
        self.config_watch = watch

    def _config_changed(self) -> bool:
        """Look at the settled FelixConfiguration; log what it means; True if a restart is due."""
        watch = self.config_watch
        check = watch.check(time.monotonic()) if watch is not None else None
        if check is None:
            return False
        if check.error is not None:
            self.metrics.errors.labels("config_invalid").inc()
            log.error(
                "config.invalid",
                error=check.error,
                updated=check.updated,
                action="keeping the running configuration",
            )
            return False
        changes = {k: {"running": old, "wanted": new} for k, (old, new) in check.changes.items()}
        if not changes:
            log.info(
                "config.unchanged", updated=check.updated, reason="the effective parameters are the same"
            )
            return False
        if check.repeated:
            log.error(
                "config.restart_ineffective",
                changes=changes,
                action="no second restart: the previous one was for these parameters and did not apply them",
            )
            return False
        log.warning(
            "config.changed",
            changes=changes,
            updated=check.updated,
            action="restarting in place as Felix does (routes, chains and veths stay)",
        )
        assert check.wanted is not None
        self.restart = ConfigRestart(params_digest(check.wanted), tuple(check.changes))
        return True

    def ready(self) -> bool:
        return self.writer.ready

    def live(self) -> bool:
        return self.failure() is None

    def failure(self) -> str | None:
        if self.writer_error is not None:
            return f"writer: {self.writer_error!r}"
        err = self.sources.error()
        if err is None and self.node_status is not None and self.node_status.failure() is not None:
            return f"CalicoNodeStatus writer: {self.node_status.failure()!r}"
        return None if err is None else f"datastore sync: {err!r}"

    def _writer_main(self) -> None:
        try:
            # While the syncer reads the snapshot (the writer has nothing to do until then): the
            # synced kinds' validators, built now rather than by the snapshot's first resources.
            build_models(SYNCED_KINDS, stop=self.writer.has_work)
            self.writer.run(self.stop)
        except BaseException as exc:
            self.writer_error = exc
            log.exception("writer.crashed")

    def run(self) -> int:
        self.writer_thread = threading.Thread(target=self._writer_main, name="felixpy-writer", daemon=True)
        self.writer_thread.start()
        self.sources.start(self.stop)
        if self.cni is not None:
            self.cni.start()
        if self.bgp is not None:
            self.bgp.start()
            from felixpy.runtime.node_status_reporter import NodeStatusReporter

            self.node_status = NodeStatusReporter(self.backend, self.settings.nodename, self.bgp).start()
        trimmer = interpreter.HeapTrimmer()  # start-up's peak given back (felixpy.interpreter)
        while not self.stop.wait(MAIN_LOOP_SECONDS):
            self.metrics.in_sync.set(1 if self.writer.in_sync.is_set() else 0)
            if self.writer.in_sync.is_set():
                trimmer.poll(time.monotonic())
            self.metrics.orphaned_endpoints.set(len(getattr(self.dataplane, "orphans", ())))
            failure = self.failure()
            if failure is not None:
                log.error("agent.exiting", reason=failure)
                self.shutdown(graceful=False)
                return 1
            if self._config_changed():
                break
        self.shutdown(graceful=True)
        return 0

    def shutdown(self, *, graceful: bool) -> None:
        self.stop.set()
        if self.cni is not None:
            self.cni.stop()
        if self.node_status is not None:
            self.node_status.stop()
        if self.bgp is not None:
            self.bgp.stop(graceful=graceful)
        self.sources.syncer.stop(timeout=2.0)
        if graceful and self.writer_thread is not None:
            self.writer_thread.join(5.0)  # let a commit in progress finish (bounded)


def _on_commit(
    metrics: Metrics | NullMetrics, dataplane: LinuxDataplane
) -> Callable[[float, bool, int], None]:
    def observe(seconds: float, ok: bool, n_updates: int) -> None:
        metrics.apply_seconds.observe(seconds)
        metrics.felix_apply_seconds.observe(seconds)
        if n_updates:  # 0 = a deferred flush, no messages
            metrics.felix_batch_size.observe(n_updates)
        metrics.local_endpoints.set(len(dataplane.endpoints))
        if not ok:
            metrics.errors.labels("dataplane_apply").inc()
            metrics.felix_failures += 1

    return observe


def _bgp_service(settings: Settings) -> BGPService | None:
    if not settings.bgp_enabled:
        return None
    from bgp.service import BGPService

    return BGPService(settings.nodename, settings.run_dir, bfd_external=settings.bfd_external)


def _policy(
    settings: Settings, params: FelixParams, kinds: set[str]
) -> tuple[PolicyCalc | None, PolicyDriver | None]:
    """calc's policy stage (the compilers) and the iptables/ipset writers, or (None, None): nothing
    programmed in iptables.

    With IPv6 support a second compiler (``version=6``) drives ip6tables and the ``cali60`` sets.
    Both writers share one IpsetWriter: it owns every ``cali40``/``cali60`` set in the namespace and
    would otherwise destroy the other family's sets as "not desired".
    """
    if not settings.policy_enabled:
        return None, None
    from felixpy.dataplane.ipset_writer import IpsetWriter
    from felixpy.dataplane.iptables import IptablesWriter
    from felixpy.dataplane.iptables_backend import make_backend
    from felixpy.dataplane.policy_driver import PolicyDriver as VersionDriver
    from policy.chains import ChainConfig
    from policy.compiler import PolicyCompiler

    ipsets = IpsetWriter()
    compilers, drivers = [], []
    for version in (4, 6) if _ipv6_enabled(params) else (4,):
        config = ChainConfig(
            ipip_enabled="ipip" in kinds and version == 4,
            vxlan_enabled="vxlan" in kinds and version == 4,  # tunnels run over IPv4 only
            vxlan_port=params.vxlanPort,
            version=version,
            endpoint_to_host_action=params.defaultEndpointToHostAction,
            failsafe_in=params.failsafeInboundHostPorts,
            failsafe_out=params.failsafeOutboundHostPorts,
            workload_source_spoofing=params.workloadSourceSpoofing,
        )
        compilers.append(PolicyCompiler(settings.nodename, config=config))
        drivers.append(VersionDriver(version, IptablesWriter(make_backend(ipv6=version == 6)), ipsets))
    return PolicyCalc(compilers), drivers[0] if len(drivers) == 1 else FamilyPolicies(drivers)


def _ipv6_enabled(params: FelixParams) -> bool:
    return params.ipv6Support and ipv6_available()


def _wireguard_driver(
    settings: Settings, params: FelixParams, backend: Backend, mtu: int, *, ipv6: bool = False
) -> WireguardDriver:
    """The WireGuard driver of one family: ``wireguard.cali`` (wireguardEnabled) or, ``ipv6``,
    ``wg-v6.cali`` (wireguardEnabledV6) with its own key, published as ``status.wireguardPublicKeyV6``.
    The private key's file is under FELIXPY_STATE_DIR (0600)."""
    from felixpy.calc.wireguard import WireguardConfig
    from felixpy.dataplane.wireguard_driver import WireguardDriver, node_key_publisher

    base = WireguardConfig.v6() if ipv6 else WireguardConfig()  # each family's device, port, table
    cfg = dataclasses.replace(
        base,
        enabled=params.wireguardEnabledV6 if ipv6 else params.wireguardEnabled,
        listening_port=params.wireguardListeningPortV6 if ipv6 else params.wireguardListeningPort,
        interface_name=params.wireguardInterfaceNameV6 if ipv6 else params.wireguardInterfaceName,
        mtu=params.wireguardMTUV6 if ipv6 else params.wireguardMTU,
        routing_rule_priority=params.wireguardRoutingRulePriority,
        host_encryption=params.wireguardHostEncryptionEnabled,
        keepalive=int(params.wireguardKeepAlive),
    )
    publish = node_key_publisher(backend, settings.nodename, ipv6=ipv6)
    return WireguardDriver(
        cfg, nodename=settings.nodename, host_mtu=mtu, key_dir=settings.state_dir, publish=publish
    )


def _encap_driver(
    params: FelixParams,
    address: HostAddress | None,
    mtu: int,
    wireguard: WireguardDriver | None = None,
    wireguard_v6: WireguardDriver | None = None,
) -> EncapDriver:
    return EncapDriver(
        EncapSettings(
            parent=address.iface if address else "",
            parent_ip=address.cidr.split("/")[0] if address else "",
            host_mtu=mtu,
            vxlan_vni=params.vxlanVNI,
            vxlan_port=params.vxlanPort,
            vxlan_mtu=params.vxlanMTU,
            ipip_mtu=params.ipipMTU,
        ),
        wireguard=wireguard,
        wireguard_v6=wireguard_v6,
    )


class BGPOnlyDataplane(NullDataplane):
    """--route-reflector mode: no workload dataplane; calc's BGP inputs go to the BGP service only."""

    def __init__(self, bgp_sink: Callable[[list[Update]], None] | None) -> None:
        self.bgp_sink = bgp_sink
        self.endpoints: dict[tuple[str, str], object] = {}

    def apply(self, updates: list[Update]) -> None:
        if self.bgp_sink is not None:
            self.bgp_sink(updates)


def _intervals(params: FelixParams) -> dict[str, float]:
    return {
        "routes": params.routeRefreshInterval,
        "iptables": params.iptablesRefreshInterval,
        "ipsets": params.ipsetsRefreshInterval,
    }


def _startup(
    settings: Settings, env: dict[str, str]
) -> tuple[KV, Backend, IPAM, HostAddress | None, FelixParams]:
    """calico-node's start-up steps; returns (kv, backend, ipam, node address, params)."""
    # The run directory holds cni.sock, exabgp.conf (MD5 passwords), logs and status: 0700, first.
    private_dir(settings.run_dir)
    # The node's addresses first: a node without the address IP/IP6 ask for stops before any connection.
    address = startup.node_address(settings)
    address6 = startup.node_address6(settings)
    # Raw keys for IPAM (etcd, or IPAM CRDs) and typed resources (etcd layout, or the Kubernetes API).
    kv, backend = connect(DatastoreConfig.from_env(env))
    # Nothing is written while a migration holds the datastore (calico-node waits too).
    startup.wait_until_unlocked(backend, settings.datastore_lock_wait)
    ipam = IPAM(kv, backend)
    startup.register_node(
        backend, settings, address.cidr if address else None, address6.cidr if address6 else None
    )
    if not settings.route_reflector:
        startup.ensure_default_pool(backend, settings)
        ensure_default_tier(backend)
    return kv, backend, ipam, address, startup.felix_params(backend, settings)


def build_route_reflector(settings: Settings, env: dict[str, str]) -> Agent:
    """BGP only: register (cluster ID, label), sync, feed the BGP service; no CNI, routes or iptables."""
    kv, backend, _, _, params = _startup(settings, env)
    first_read = read_early(backend)  # the snapshot, read while the rest is built (issue 15)
    bgp = _bgp_service(settings)
    from felixpy.dataplane.bgp_sink import BGPSink

    dataplane = BGPOnlyDataplane(BGPSink(bgp) if bgp is not None else None)
    writer = Writer(CalcGraph(settings.nodename, bgp=bgp is not None), dataplane, intervals={}, hold_gc=True)
    sources = SyncSources(kv, backend, writer, first_read=first_read)
    metrics = metrics_for(params.prometheusMetricsEnabled)
    agent = Agent(settings, params, kv, backend, writer, dataplane, sources, metrics, None, bgp)
    _serve_http(agent)
    return agent


def build(settings: Settings, env: dict[str, str]) -> Agent:
    if settings.route_reflector:
        return build_route_reflector(settings, env)
    kv, backend, ipam, address, params = _startup(settings, env)
    kinds = startup.encap_kinds(backend)
    startup.ensure_tunnel_addresses(ipam, settings.nodename, kinds)
    # The start-up writes are done (Node, default pool and tier, tunnel addresses): the resources'
    # snapshot is read from here, in its own thread, while the rest is built (issue 15, goal 2).
    first_read = read_early(backend)
    mtu = startup.host_mtu(address.iface if address else "")
    startup.write_mtu_file(settings.mtu_path, startup.pod_mtu(params, mtu, kinds))
    startup.write_nodename_file(settings.state_dir, settings.nodename)
    enable_ip_forwarding(ipv6=_ipv6_enabled(params))

    metrics = metrics_for(params.prometheusMetricsEnabled)
    links = WorkloadLinks(prefix=params.interfacePrefix)
    bgp = _bgp_service(settings)
    from felixpy.dataplane.bgp_sink import BGPSink

    policy_calc, policy = _policy(settings, params, kinds)
    dataplane = LinuxDataplane(
        routes=RouteTable(IPRouteNetlink()),
        links=links,
        encap=_encap_driver(
            params, address, mtu, _wireguard_driver(settings, params, backend, mtu),
            # wg-v6.cali: on when asked; else only to clean up after it, where the host has IPv6
            _wireguard_driver(settings, params, backend, mtu, ipv6=True)
            if params.wireguardEnabledV6 or _ipv6_enabled(params) else None,
        ),
        policy=policy,
        bgp_sink=BGPSink(bgp) if bgp is not None else None,
    )
    dataplane.prefetch()  # the kernel reads of the first commit, while the snapshot is fetched and digested
    graph = CalcGraph(
        settings.nodename,
        ipip_routes=not settings.bgp_enabled,
        wireguard=True,
        policy=policy_calc,
        bgp=bgp is not None,
    )
    writer = Writer(
        graph, dataplane, intervals=_intervals(params), on_commit=_on_commit(metrics, dataplane), hold_gc=True
    )
    handler = CNIHandler(
        nodename=settings.nodename,
        kv=kv,
        backend=backend,
        ipam=ipam,
        links=links,
        writer=writer,
        mtu_path=settings.mtu_path,
        prefix=params.interfacePrefix,
        policy=policy,
    )

    ipam_service = IpamService(nodename=settings.nodename, ipam=ipam)

    def handle(request: dict[str, object]) -> dict[str, object]:
        # /opt/cni/bin/felixpy-ipam (the forwarder under that name) asks for IPAM only.
        serve = ipam_service.handle if request.get("plugin") == "ipam" else handler.handle
        answer = serve(request)
        metrics.cni_requests.labels(str(request.get("command")), "error" if "error" in answer else "ok").inc()
        return answer

    cni = CNIServer(settings.socket_path, handle)
    agent = Agent(
        settings, params, kv, backend, writer, dataplane,
        SyncSources(kv, backend, writer, first_read=first_read), metrics, cni, bgp,
    )  # fmt: skip
    _serve_http(agent)
    return agent


def _serve_http(agent: Agent) -> None:
    params = agent.params
    if params.healthEnabled:
        HealthServer(params.healthHost, params.healthPort, live=agent.live, ready=agent.ready).start()
    metrics = agent.metrics
    if not isinstance(metrics, Metrics):  # off (the default): no collector, no prometheus_client import
        return
    from felixpy.runtime.felix_metrics import FelixCollector
    from felixpy.runtime.wireguard_metrics import register as register_wireguard_metrics

    # Felix's felix_* families, read from this agent's state at scrape time (felixpy.runtime.felix_metrics).
    metrics.registry.register(
        FelixCollector(
            agent.settings.nodename,
            agent.sources.syncer,
            agent.writer.graph,
            agent.dataplane,
            failures=lambda: agent.metrics.felix_failures,
            writer_stats=agent.writer.stats,
        )
    )
    # Calico's wireguard_* families, while WireGuard is on, unless prometheusWireGuardMetricsEnabled
    # is false (felixpy.runtime.wireguard_metrics).
    dataplane = agent.dataplane
    encap = dataplane.encap if isinstance(dataplane, LinuxDataplane) else None  # none on a BGP-only node
    wireguard = encap.wireguard_drivers() if encap is not None else None  # IPv4's and IPv6's
    register_wireguard_metrics(
        metrics.registry, agent.settings.nodename, wireguard, enabled=params.prometheusWireGuardMetricsEnabled
    )
    metrics.serve(params.prometheusMetricsHost, params.prometheusMetricsPort)


def run_node(settings: Settings, env: dict[str, str]) -> int:
    started = time.monotonic()
    interpreter.limit_malloc_arenas()  # before the threads start (felixpy.interpreter)
    restarts = _int(env.get(RESTARTS_ENV))
    target = env.get(TARGET_ENV) or None
    # The collector off over the build (its lazy imports, start-up reads, models; felixpy.interpreter)
    # and on again before the writer starts, which holds it over the snapshot itself.
    with interpreter.gc_paused(freeze=True):
        agent = build(settings, env)
    agent.metrics.config_restarts.inc(restarts)
    agent.watch_config(env, last_target=target)
    if target is not None:
        if params_digest(agent.params) == target:
            log.info("config.restarted", restarts=restarts, pid=os.getpid(), applied=True)
        else:  # the datastore changed again meanwhile, or start-up resolved differently
            log.error("config.restarted", restarts=restarts, pid=os.getpid(), applied=False)
    interpreter.tune()  # after start-up: GC and GIL hand-over settings (felixpy.interpreter)

    main_pid = os.getpid()

    def on_term(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked helper (pyroute2 netns) inherited the handler
            return
        log.info("agent.stopping", signal=signum)
        agent.terminated = True
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info(
        "agent.started",
        node=settings.nodename,
        run_dir=settings.run_dir,
        startup_seconds=round(time.monotonic() - started, 3),  # from run_node, after the imports
        # from the exec: interpreter start and imports too (not after a config re-exec, which keeps
        # the process and its start time)
        since_exec_seconds=None if restarts else _since_exec(),
        cpu_seconds=round(sum(os.times()[:2]), 3),  # this process's user+sys so far
    )
    code = agent.run()
    if agent.restart is not None and not agent.terminated:
        # Felix exits for its supervisor to start it again; doing it in place keeps the PID (no
        # crash, no restart back-off) and, like any restart, leaves the kernel state in place.
        # run() has already shut down as for SIGTERM (graceful: BGP peers keep our routes).
        os.environ[RESTARTS_ENV] = str(restarts + 1)
        os.environ[TARGET_ENV] = agent.restart.target
        log.info(
            "agent.reexec",
            argv=sys.orig_argv,
            reason="FelixConfiguration changed",
            fields=agent.restart.fields,
            restarts=restarts + 1,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)
    return code


def _since_exec() -> float | None:
    """Seconds since this process was started (/proc: its start time against the uptime clock), so
    the log shows the imports' share of a start too (issue 15 goal 2); None where /proc has not it."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK")), 3)


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0
