"""Felix's metric families (``felix_*``), under Felix's names, types and label names.

Read at scrape time from the agent's own state (the syncer, the calculation graph, the policy
compilers, the iptables/ipset writers' :class:`~felixpy.dataplane.toolstats.ToolStats`). Dicts
are copied with ``tuple(d.values())`` (one C call under the GIL) before counting, so a scrape
never iterates a dict the writer thread is changing. The counting itself is pure (the functions
below the collector) and unit-tested. docs/operations.md §Metrics lists what is and is not exported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from policy.convert import UNSUPPORTED_REASONS
from policy.set_specs import NamedPortSet, SelectorSet
from policy.setindex import FULL_SCAN, NO_MATCH, SINGLE_VALUE, optimized

if TYPE_CHECKING:
    from felixpy.calc.graph import CalcGraph
    from felixpy.calc.policy_stage import PolicyCalc
    from felixpy.dataplane.ipset_writer import IpsetWriter
    from felixpy.dataplane.kernel_objects import Chain, RouteTarget
    from felixpy.dataplane.linux import PolicyDriver
    from felixpy.dataplane.policy_driver import PolicyDriver as VersionDriver
    from felixpy.dataplane.routes import RouteTable
    from felixpy.dataplane.toolstats import ToolStats
    from felixpy.runtime.writer import WriterStats
    from policy.compiler import PolicyCompiler
    from policy.entities import Endpoint
    from policy.set_specs import SetSpec

# felix_resync_state: Felix's values for its syncer states.
RESYNC_STATE = {"wait-for-ready": 1, "resync": 2, "in-sync": 3}

# Felix's counters have no ``_total`` suffix (Go's client does not add one); prometheus_client
# would append it. These are exported under their bare name: see counter() and exposition().
FELIX_COUNTERS = frozenset(
    {
        "felix_resyncs_started",
        "felix_int_dataplane_failures",
        "felix_iptables_lines_executed",
        "felix_iptables_restore_calls",
        "felix_iptables_restore_errors",
        "felix_iptables_save_calls",
        "felix_iptables_save_errors",
        "felix_ipset_calls",
        "felix_ipset_errors",
        "felix_ipset_lines_executed",
        "felix_label_index_selector_evals",
        "felix_label_index_strategy_evals",
        "felix_calc_graph_updates_processed",
        "felix_calc_graph_output_events",
        "felix_int_dataplane_messages",
    }
)
# Calico's WireGuard counters (felixpy.runtime.wireguard_metrics), bare-named too.
BARE_COUNTERS = FELIX_COUNTERS | {"wireguard_bytes_rcvd", "wireguard_bytes_sent"}


def counter(name: str, doc: str, value: float | None = None) -> Metric:
    """A counter family whose samples carry Felix's bare name (no ``_total``); labelled samples: add()."""
    assert name in BARE_COUNTERS, name
    metric = Metric(name, doc, "counter")
    if value is not None:
        metric.add_sample(name, {}, value)
    return metric


def add(metric: Metric, labels: Mapping[str, str], value: float) -> None:
    metric.add_sample(metric.name, dict(labels), value)


def exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, as Felix serves it: the HELP/TYPE lines of FELIX_COUNTERS
    carry the bare name their samples have (prometheus_client writes ``<name>_total`` there)."""
    out = []
    for line in generate_latest(registry).decode().split("\n"):
        if line.startswith(("# HELP ", "# TYPE ")):
            head, name, rest = line[:7], *line[7:].partition(" ")[::2]
            if name.endswith("_total") and name[:-6] in BARE_COUNTERS:
                line = f"{head}{name[:-6]} {rest}"
        out.append(line)
    return "\n".join(out).encode()


@dataclass(frozen=True)
class PolicyCounts:
    """What one policy compiler knows: the cluster's endpoints and policies, and the local ones."""

    workload_endpoints: int
    host_endpoints: int
    policies: int
    tiers: int
    local_endpoints: int
    local_policies: int
    local_selectors: int
    # felix_label_index_num_endpoints: what Felix's label index tracks, every endpoint (workload and
    # host, local or not) and every network set (GlobalNetworkSet, NetworkSet), as Felix counts them
    label_index_endpoints: int = 0
    # felix_label_index_num_active_selectors{optimized}: the local policies' rule selectors (the
    # felix_active_local_selectors), split by whether the label index narrows their scan
    optimized_selectors: int = 0
    unoptimized_selectors: int = 0
    # felix_label_index_strategy_evals{strategy}, felix_label_index_selector_evals{result}: counts
    # kept by the compiler's SetIndex since the agent process started (a config restart re-execs it)
    strategy_evals: Mapping[str, int] = field(default_factory=dict)
    selector_evals: Mapping[bool, int] = field(default_factory=dict)
    # felix_cluster_num_profiles: the Profiles the compiler holds: stored ones (etcd mode) and, for
    # each Namespace and ServiceAccount it holds (Kubernetes mode), kns.<ns> / ksa.<ns>.<sa>
    profiles: int = 0


def resync_state(status: str | None) -> int:
    return RESYNC_STATE.get(status or "wait-for-ready", 1)


def resyncs_started(status: str | None, resyncs: int) -> int:
    """The first snapshot is a resync too (Felix counts it); then one per lost watch / compaction."""
    return (0 if status is None else 1) + resyncs


class SyncProgress(Protocol):
    """What the collector reads of the datastore syncer (``felixpy.datastore.syncer.Syncer``)."""

    @property
    def status(self) -> str | None: ...

    @property
    def resyncs(self) -> int: ...


def endpoint_counts(endpoints: Sequence[Endpoint]) -> tuple[int, int]:
    """(workload endpoints, host endpoints) among policy Endpoints (``host=True`` for a HostEndpoint)."""
    hosts = sum(1 for ep in endpoints if getattr(ep, "host", False))
    return len(endpoints) - hosts, hosts


def table_counts(chains: Iterable[Chain]) -> dict[str, tuple[int, int]]:
    """table -> (chains, rules) for the chains the agent programs."""
    n_chains: Counter[str] = Counter()
    n_rules: Counter[str] = Counter()
    for chain in chains:
        n_chains[chain.table] += 1
        n_rules[chain.table] += len(chain.rules)
    return {t: (n_chains[t], n_rules[t]) for t in n_chains}


def selector_count(specs: Iterable[SetSpec]) -> int:
    """Active selectors: the selector and named-port sets the local policies use (not CIDR sets)."""
    return sum(1 for s in specs if isinstance(s, SelectorSet | NamedPortSet))


def optimized_counts(specs: Iterable[SetSpec]) -> tuple[int, int]:
    """(optimized, not) among the active selectors: a selector with a ``key == value`` term is
    scanned over that label value's holders, one without over every endpoint and network set."""
    flags = [optimized(s.selector) for s in specs if isinstance(s, SelectorSet | NamedPortSet)]
    return sum(flags), len(flags) - sum(flags)


def profile_count(
    stored: Iterable[str], namespaces: Iterable[str], service_accounts: Iterable[tuple[str, str]]
) -> int:
    """Distinct profile names: the stored ones, ``kns.<ns>`` per Namespace and ``ksa.<ns>.<sa>`` per
    ServiceAccount (Kubernetes mode generates these from them; a stored one of the same name is one)."""
    names = set(stored)
    names.update(f"kns.{ns}" for ns in namespaces)
    names.update(f"ksa.{ns}.{sa}" for ns, sa in service_accounts)
    return len(names)


def policy_counts(compiler: PolicyCompiler) -> PolicyCounts:
    workloads, hosts = endpoint_counts(tuple(compiler._endpoints.values()))
    specs = tuple(compiler._sets._specs.values())
    opt, unopt = optimized_counts(specs)
    return PolicyCounts(
        workload_endpoints=workloads,
        host_endpoints=hosts,
        policies=len(compiler._policies),
        tiers=len(compiler.tiers._tiers),
        local_endpoints=len(compiler._local),
        local_policies=sum(1 for sel in tuple(compiler._selected.values()) if sel),
        local_selectors=selector_count(specs),
        label_index_endpoints=len(compiler._endpoints) + len(compiler._netsets),
        optimized_selectors=opt,
        unoptimized_selectors=unopt,
        strategy_evals=dict(compiler._sets.strategy_evals),
        selector_evals=dict(compiler._sets.selector_evals),
        profiles=profile_count(
            tuple(compiler._profiles), tuple(compiler._ns_labels), tuple(compiler._sa_labels)
        ),
    )


def policy_drivers(policy: PolicyDriver | None) -> list[VersionDriver]:
    """The PolicyDriver(s) behind the dataplane's policy (one per IP version), or none."""
    from felixpy.dataplane.linux import FamilyPolicies
    from felixpy.dataplane.policy_driver import PolicyDriver as VersionDriver

    if policy is None:
        return []
    given = policy.drivers if isinstance(policy, FamilyPolicies) else (policy,)
    return [d for d in given if isinstance(d, VersionDriver)]


class FelixCollector(Collector):
    """``felix_*`` families for one agent; registered on the agent's registry."""

    def __init__(
        self,
        nodename: str,
        syncer: SyncProgress,
        graph: CalcGraph,
        dataplane: object,  # LinuxDataplane, the agent's BGPOnlyDataplane, or None
        failures: Callable[[], int] = lambda: 0,
        writer_stats: WriterStats | None = None,
    ) -> None:
        self.nodename = nodename
        self.writer_stats = writer_stats  # felixpy.runtime.writer.WriterStats, None: no writer loop
        self.failures = failures
        self.syncer = syncer
        self.graph = graph
        self.dataplane = dataplane

    def collect(self) -> Iterator[Metric]:
        host = GaugeMetricFamily(
            "felix_host", "Configured Felix hostname (as a label), value 1", labels=["host"]
        )
        host.add_metric([self.nodename], 1)
        yield host
        status, resyncs = self.syncer.status, self.syncer.resyncs
        yield GaugeMetricFamily(
            "felix_resync_state",
            "Datastore sync state: 1 waiting for the datastore, 2 resync in progress, 3 in sync",
            value=resync_state(status),
        )
        yield counter(
            "felix_resyncs_started",
            "Resyncs started with the datastore",
            value=resyncs_started(status, resyncs),
        )
        yield counter(
            "felix_int_dataplane_failures", "Failed dataplane updates (retried)", value=self.failures()
        )
        yield GaugeMetricFamily(
            "felix_cluster_num_hosts", "Calico nodes in the cluster", value=len(self.graph._nodes)
        )
        if self.writer_stats is not None:
            yield from writer_families(self.writer_stats)
        routes: RouteTable | None = getattr(self.dataplane, "routes", None)
        if routes is not None:
            yield route_families(routes.table, tuple(routes._desired))
            yield route_iface_family(routes.table, tuple(routes._desired.items()))
            yield SummaryMetricFamily(
                "felix_route_table_resync_seconds",
                "Time to resync the routing table (kernel re-read and write)",
                count_value=getattr(routes, "resyncs", 0),
                sum_value=getattr(routes, "resync_seconds", 0.0),
            )
        drivers = policy_drivers(getattr(self.dataplane, "policy", None))
        policy: PolicyCalc | None = getattr(self.graph, "policy", None)
        if policy is not None:
            yield from unenforced_families(policy.unenforced_counts(), policy.unconvertible_count())
        if drivers and policy is not None:
            yield from self._policy_families(policy.compilers, drivers)
        else:  # no policy compiler: local endpoints from the dataplane itself
            yield GaugeMetricFamily(
                "felix_active_local_endpoints",
                "Local endpoints (workload and host)",
                value=len(getattr(self.dataplane, "endpoints", ())),
            )

    def _policy_families(
        self, compilers: Sequence[PolicyCompiler], drivers: Sequence[VersionDriver]
    ) -> Iterator[Metric]:
        counts = policy_counts(compilers[0])  # every family's compiler sees the same inputs
        gauges = {
            "felix_cluster_num_workload_endpoints": (
                "Workload endpoints in the cluster",
                counts.workload_endpoints,
            ),
            "felix_cluster_num_host_endpoints": ("Host endpoints in the cluster", counts.host_endpoints),
            "felix_cluster_num_policies": ("Policies in the cluster", counts.policies),
            "felix_cluster_num_tiers": ("Tiers in the cluster", counts.tiers),
            "felix_cluster_num_profiles": ("Profiles in the cluster", counts.profiles),
            "felix_active_local_endpoints": ("Local endpoints (workload and host)", counts.local_endpoints),
            "felix_active_local_policies": ("Policies that select a local endpoint", counts.local_policies),
            "felix_active_local_selectors": ("Active rule selectors", counts.local_selectors),
            "felix_label_index_num_endpoints": (
                "Endpoints and network sets tracked by the label index",
                counts.label_index_endpoints,
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        yield from label_index_families(counts)
        yield from iptables_families(compilers, drivers)
        yield from ipset_families(drivers[0].ipsets)  # one IpsetWriter shared by both families


def unenforced_families(counts: Mapping[str, int], unconvertible: int) -> Iterator[Metric]:
    """felixpy's own: the policy rule parts it does not enforce as written (they fail closed), by
    reason (every reason always present), and the policies it cannot convert at all."""
    rules = GaugeMetricFamily(
        "felixpy_policy_rules_unenforced",
        "Policy rule matches felixpy does not enforce as written (the rule fails closed), by reason",
        labels=["reason"],
    )
    for reason in sorted({*UNSUPPORTED_REASONS, *counts}):
        rules.add_metric([reason], counts.get(reason, 0))
    yield rules
    yield GaugeMetricFamily(
        "felixpy_policies_unconvertible",
        "Policies felixpy cannot convert (previous version kept, or a deny-all stand-in)",
        value=unconvertible,
    )


def label_index_families(counts: PolicyCounts) -> Iterator[Metric]:
    """Felix's label index families; every label value felixpy produces is always present."""
    selectors = GaugeMetricFamily(
        "felix_label_index_num_active_selectors",
        "Active rule selectors, by whether the label index narrows their scan",
        labels=["optimized"],
    )
    selectors.add_metric(["true"], counts.optimized_selectors)
    selectors.add_metric(["false"], counts.unoptimized_selectors)
    yield selectors
    evals = counter("felix_label_index_selector_evals", "Selector evaluations in scans, by result")
    for result in (True, False):
        add(evals, {"result": str(result).lower()}, counts.selector_evals.get(result, 0))
    yield evals
    scans = counter("felix_label_index_strategy_evals", "Label index scans, by scan strategy")
    for strategy in sorted({FULL_SCAN, NO_MATCH, SINGLE_VALUE, *counts.strategy_evals}):
        add(scans, {"strategy": strategy}, counts.strategy_evals.get(strategy, 0))
    yield scans


def route_table_counts(table: int, destinations: Iterable[str]) -> dict[str, int]:
    """Felix's ``table`` label ("IPv4:254") -> routes the agent manages there."""
    out = {f"IPv4:{table}": 0, f"IPv6:{table}": 0}
    for dst in destinations:
        out[f"IPv{6 if ':' in dst else 4}:{table}"] += 1
    return out


def writer_families(stats: WriterStats) -> Iterator[Metric]:
    """Felix's calculation-graph and dataplane-message families, from the writer loop's counts.
    ``type`` values are felixpy's names (resource kinds fed to the graph; update classes applied)."""
    yield SummaryMetricFamily(
        "felix_calc_graph_update_time_seconds",
        "Seconds to update the calculation graph for each batch of datastore updates",
        count_value=stats.calc_batches,
        sum_value=stats.calc_seconds,
    )
    processed = counter(
        "felix_calc_graph_updates_processed", "Datastore updates processed by the calculation graph"
    )
    for kind, n in sorted(tuple(stats.updates_processed.items())):
        add(processed, {"type": kind}, n)
    yield processed
    yield counter(
        "felix_calc_graph_output_events", "Events emitted by the calculation graph", value=stats.output_events
    )
    messages = counter("felix_int_dataplane_messages", "Dataplane messages by type")
    for kind, n in sorted(tuple(stats.dataplane_messages.items())):
        add(messages, {"type": kind}, n)
    yield messages


def route_iface_counts(table: int, routes: Iterable[tuple[str, RouteTarget]]) -> dict[str, int]:
    """Felix's ``table`` label -> interfaces the agent's routes there go out of (blackhole and
    unreachable routes have none)."""
    devs: dict[str, set[str]] = {f"IPv4:{table}": set(), f"IPv6:{table}": set()}
    for dst, target in routes:
        if getattr(target, "dev", ""):
            devs[f"IPv{6 if ':' in dst else 4}:{table}"].add(target.dev)
    return {label: len(names) for label, names in devs.items()}


def route_iface_family(table: int, routes: Iterable[tuple[str, RouteTarget]]) -> Metric:
    family = GaugeMetricFamily(
        "felix_route_table_num_ifaces", "Interfaces the agent's routes in the table use", labels=["table"]
    )
    for label, n in sorted(route_iface_counts(table, routes).items()):
        family.add_metric([label], n)
    return family


def route_families(table: int, destinations: Iterable[str]) -> Metric:
    family = GaugeMetricFamily(
        "felix_route_table_num_routes", "Routes the agent manages in the routing table", labels=["table"]
    )
    for label, n in sorted(route_table_counts(table, destinations).items()):
        family.add_metric([label], n)
    return family


def iptables_families(
    compilers: Sequence[PolicyCompiler], drivers: Sequence[VersionDriver]
) -> Iterator[Metric]:
    """Chains and rules per table of each IP version's compiler (calc), calls of its writer."""
    by_version = {compiler.version: compiler for compiler in compilers}
    chains = GaugeMetricFamily(
        "felix_iptables_chains", "Active iptables chains", labels=["ip_version", "table"]
    )
    rules = GaugeMetricFamily("felix_iptables_rules", "Active iptables rules", labels=["ip_version", "table"])
    lines = counter("felix_iptables_lines_executed", "iptables rule updates executed")
    calls: Counter[str] = Counter()
    for driver in drivers:
        version = str(driver.version)
        for table, (n_chains, n_rules) in sorted(
            table_counts(tuple(by_version[driver.version]._chains.values())).items()
        ):
            chains.add_metric([version, table], n_chains)
            rules.add_metric([version, table], n_rules)
        stats: ToolStats | None = getattr(driver.iptables.backend, "stats", None)
        if stats is None:  # python-iptables: no iptables-restore/-save processes to count
            continue
        for table, n in sorted(stats.lines("restore").items()):
            add(lines, {"ip_version": version, "table": table}, n)
        for action in ("restore", "save"):
            calls[f"{action}_calls"] += stats.calls(action)
            calls[f"{action}_errors"] += stats.errors(action)
    yield chains
    yield rules
    yield lines
    docs = {
        "restore_calls": "iptables-restore calls",
        "restore_errors": "iptables-restore failures",
        "save_calls": "iptables-save calls",
        "save_errors": "iptables-save failures",
    }
    for key, doc in docs.items():
        yield counter(f"felix_iptables_{key}", doc, value=calls[key])


def ipset_families(ipsets: IpsetWriter) -> Iterator[Metric]:
    stats = ipsets.stats
    yield counter("felix_ipset_calls", "ipset commands run", value=stats.calls("ipset"))
    yield counter("felix_ipset_errors", "ipset commands that failed", value=stats.errors("ipset"))
    yield counter(
        "felix_ipset_lines_executed", "ipset restore lines executed", value=sum(stats.lines("ipset").values())
    )
    by_version = ipset_versions(tuple(ipsets._desired))
    calico = GaugeMetricFamily("felix_ipsets_calico", "Calico-owned IP sets", labels=["ip_version"])
    for version, n in sorted(by_version.items()):
        calico.add_metric([version], n)
    yield calico
    yield GaugeMetricFamily(
        "felix_ipsets_total", "IP sets programmed by the agent", value=sum(by_version.values())
    )


def ipset_versions(names: Iterable[str]) -> Mapping[str, int]:
    """ip_version -> sets, from the owned-set prefixes (``cali40`` IPv4, ``cali60`` IPv6)."""
    out = {"4": 0, "6": 0}
    for name in names:
        if name.startswith("cali40"):
            out["4"] += 1
        elif name.startswith("cali60"):
            out["6"] += 1
    return out
