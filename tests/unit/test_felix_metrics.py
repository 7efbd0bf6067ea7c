"""Felix's metric families (felixpy.runtime.felix_metrics): the counting, and the names, types and labels
a Prometheus scrape of the agent's registry shows (dashboards and alerts built for Felix match them)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from felixpy.calc.policy_stage import PolicyCalc
from felixpy.dataplane.ipset_writer import IpsetWriter
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_backend import RestoreBackend
from felixpy.dataplane.kernel_objects import Chain, Rule
from felixpy.dataplane.policy_driver import PolicyDriver
from felixpy.dataplane.toolstats import ToolStats
from felixpy.runtime.felix_metrics import (
    FELIX_COUNTERS,
    FelixCollector,
    endpoint_counts,
    exposition,
    ipset_versions,
    policy_counts,
    resync_state,
    resyncs_started,
    route_table_counts,
    table_counts,
)
from felixpy.runtime.health import Metrics
from policy.compiler import PolicyCompiler
from policy.entities import Endpoint, EntityMatch, Policy, PolicyRule
from policy.selector import parse


def _ep(name: str, ip: str, *, node: str = "n1", labels: dict[str, str] | None = None) -> Endpoint:
    return Endpoint(
        key=f"x/{name}",
        namespace="x",
        labels=labels or {"app": name},
        ips=(ip,),
        iface=f"cali{name}",
        node=node,
    )


def _policy(pid: str, selector: str, rules: tuple[PolicyRule, ...] = ()) -> Policy:
    return Policy(id=pid, selector=parse(selector), types=frozenset({"Ingress"}), ingress=rules)


FROM_WEB = PolicyRule("Allow", source=EntityMatch(selector=parse("app == 'web'")))
FROM_NET = PolicyRule("Allow", source=EntityMatch(nets=("192.0.2.0/24",)))


def _compiler() -> PolicyCompiler:
    c = PolicyCompiler("n1")
    c.update_endpoint(_ep("web", "10.0.0.1"))
    c.update_endpoint(_ep("db", "10.0.0.2"))
    c.update_endpoint(_ep("web2", "10.0.1.1", node="n2", labels={"app": "web"}))
    c.update_policy(_policy("gnp/db", "app == 'db'", (FROM_WEB, FROM_NET)))
    c.update_policy(_policy("gnp/elsewhere", "app == 'nothing-here'", (FROM_WEB,)))
    c.dirty()
    return c


def test_tool_stats_count_calls_errors_and_lines_per_table() -> None:
    s = ToolStats()
    with s.call("restore"):
        pass
    with pytest.raises(RuntimeError), s.call("restore"):
        raise RuntimeError("exit status 1")
    s.add_lines("restore", 3, "filter")
    s.add_lines("restore", 2, "filter")
    s.add_lines("restore", 1, "raw")
    assert (s.calls("restore"), s.errors("restore")) == (2, 1)
    assert (s.calls("save"), s.errors("save")) == (0, 0)
    assert s.lines("restore") == {"filter": 5, "raw": 1}


def test_pure_counts() -> None:
    eps = (SimpleNamespace(host=False), SimpleNamespace(host=True), SimpleNamespace(host=False))
    assert endpoint_counts(eps) == (2, 1)
    chains = [Chain("a", (Rule("-j ACCEPT"),) * 2), Chain("b"), Chain("c", (Rule("-j DROP"),), table="raw")]
    assert table_counts(chains) == {"filter": (2, 2), "raw": (1, 1)}
    assert ipset_versions(["cali40s:x", "cali40all-ipam-pools", "cali60s:y", "other"]) == {"4": 2, "6": 1}
    assert [resync_state(s) for s in (None, "wait-for-ready", "resync", "in-sync")] == [1, 1, 2, 3]
    assert resyncs_started(None, 0) == 0 and resyncs_started("in-sync", 0) == 1
    assert resyncs_started("resync", 2) == 3
    dsts = ["10.0.0.1/32", "10.0.1.0/26", "fd00::1/128"]
    assert route_table_counts(254, dsts) == {"IPv4:254": 2, "IPv6:254": 1}


def test_policy_counts_local_and_cluster() -> None:
    counts = policy_counts(_compiler())
    assert (counts.workload_endpoints, counts.host_endpoints) == (3, 0)
    assert counts.policies == 2  # both, whether or not they select here
    assert counts.local_endpoints == 2  # web and db on n1; web2 is on n2
    assert counts.local_policies == 1  # gnp/elsewhere selects nothing on this node
    assert counts.local_selectors == 1  # app == 'web' (the CIDR set is not a selector)
    assert counts.tiers >= 1  # the built-in default tier
    assert counts.label_index_endpoints == 3  # every endpoint, local or not


def test_label_index_num_endpoints_counts_network_sets_as_felix_does() -> None:
    """Felix's label index holds endpoints and network sets alike (rule selectors match both)."""
    from felixpy.resources.stored import GlobalNetworkSet, NetworkSet

    c = _compiler()
    gns = {"metadata": {"name": "g", "labels": {"role": "x"}}, "spec": {"nets": ["192.0.2.0/24"]}}
    c.update_network_set(GlobalNetworkSet.model_validate(gns))
    c.update_network_set(NetworkSet.model_validate(
        {"metadata": {"name": "n", "namespace": "x"}, "spec": {"nets": ["198.51.100.7"]}}))  # fmt: skip
    counts = policy_counts(c)
    assert counts.label_index_endpoints == 5
    assert counts.workload_endpoints == 3 and counts.local_endpoints == 2  # sets are not endpoints there
    c.remove_network_set("gns:g")
    assert policy_counts(c).label_index_endpoints == 4
    driver = PolicyDriver(4, IptablesWriter(RestoreBackend("nft")), IpsetWriter())
    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    metrics.registry.register(FelixCollector("n1", syncer, _graph(c), SimpleNamespace(policy=driver)))
    family = _scrape(metrics)["felix_label_index_num_endpoints"]
    assert family[0] == "gauge" and family[1][0][2] == 4


def test_label_index_selectors_scans_and_evaluations_under_felix_names() -> None:
    """felix_label_index_num_active_selectors{optimized} splits felix_active_local_selectors by whether
    the label index narrows the selector's scan; _strategy_evals{strategy} and _selector_evals{result}
    are Felix-typed bare counters of the scans of new selector sets and of their evaluations."""
    c = _compiler()  # gnp/db: source app == 'web' (2 candidates, both match), and a CIDR
    other = PolicyRule("Allow", source=EntityMatch(selector=parse("app in {'web', 'api'} && has(app)")))
    c.update_policy(_policy("gnp/db2", "app == 'db'", (other,)))  # a full scan: web, web2 true, db false
    none = PolicyRule("Allow", source=EntityMatch(selector=parse("role == 'absent'")))
    c.update_policy(_policy("gnp/db3", "app == 'db'", (none,)))  # no view has role=absent: no-match
    counts = policy_counts(c)
    assert (counts.optimized_selectors, counts.unoptimized_selectors) == (2, 1)
    assert counts.optimized_selectors + counts.unoptimized_selectors == counts.local_selectors
    driver = PolicyDriver(4, IptablesWriter(RestoreBackend("nft")), IpsetWriter())
    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    metrics.registry.register(FelixCollector("n1", syncer, _graph(c), SimpleNamespace(policy=driver)))
    fams = _scrape(metrics)

    def samples(name: str, label: str) -> dict[str, float]:
        return {lab[label]: v for _, lab, v in fams[name][1]}

    assert fams["felix_label_index_num_active_selectors"][0] == "gauge"
    assert samples("felix_label_index_num_active_selectors", "optimized") == {"true": 2, "false": 1}
    assert fams["felix_label_index_strategy_evals"][0] == "counter"
    assert samples("felix_label_index_strategy_evals", "strategy") == {
        "endpoint-single-value": 1, "endpoint-full-scan": 1, "endpoint-no-match": 1,
    }  # fmt: skip
    assert fams["felix_label_index_selector_evals"][0] == "counter"
    assert samples("felix_label_index_selector_evals", "result") == {"true": 4, "false": 1}
    text = _text(metrics)
    assert '\nfelix_label_index_selector_evals{result="true"} 4.0\n' in text  # bare, as Felix writes it
    c.remove_policy("gnp/db2")
    fams = _scrape(metrics)
    assert samples("felix_label_index_num_active_selectors", "optimized") == {"true": 2, "false": 0}
    assert samples("felix_label_index_selector_evals", "result") == {"true": 4, "false": 1}  # counters stay


def _graph(compiler: PolicyCompiler) -> SimpleNamespace:
    return SimpleNamespace(_nodes={}, policy=PolicyCalc([compiler]))


def _text(metrics: Metrics) -> str:
    return exposition(metrics.registry).decode()


def _scrape(metrics: Metrics) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    text = _text(metrics)
    return {
        f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def test_collector_exports_felix_names_types_and_labels() -> None:
    compiler = _compiler()
    backend = RestoreBackend("nft")
    driver = PolicyDriver(4, IptablesWriter(backend), IpsetWriter())
    with backend.stats.call("restore"):
        backend.stats.add_lines("restore", 4, "filter")
    syncer = SimpleNamespace(status="in-sync", resyncs=1)
    graph = SimpleNamespace(_nodes={"n1": object(), "n2": object()}, policy=PolicyCalc([compiler]))
    metrics = Metrics()
    metrics.registry.register(FelixCollector("n1", syncer, graph, SimpleNamespace(policy=driver)))
    fams = _scrape(metrics)

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        samples = fams[name][1]
        return next(v for n, lab, v in samples if lab == (labels or {}) and not n.endswith("_created"))

    assert fams["felix_host"][1][0][1] == {"host": "n1"}
    assert value("felix_resync_state") == 3
    assert fams["felix_resyncs_started"][0] == "counter" and value("felix_resyncs_started") == 2
    assert value("felix_cluster_num_hosts") == 2
    assert value("felix_cluster_num_workload_endpoints") == 3
    assert value("felix_cluster_num_policies") == 2
    assert value("felix_active_local_endpoints") == 2
    assert value("felix_active_local_policies") == 1
    assert value("felix_active_local_selectors") == 1
    assert value("felix_iptables_restore_calls") == 1 and value("felix_iptables_restore_errors") == 0
    assert value("felix_iptables_lines_executed", {"ip_version": "4", "table": "filter"}) == 4
    assert value("felix_iptables_chains", {"ip_version": "4", "table": "filter"}) > 0
    assert value("felix_iptables_rules", {"ip_version": "4", "table": "filter"}) > 0
    assert value("felix_ipset_calls") == 0
    assert fams["felix_int_dataplane_apply_time_seconds"][0] == "summary"
    assert fams["felix_int_dataplane_failures"][0] == "counter"
    assert value("process_resident_memory_bytes") > 0
    assert "felixpy_local_endpoints" in fams  # felixpy's own families stay
    # rule matches felixpy does not enforce (tests/unit/test_policy_unsupported.py): every reason present
    assert value("felixpy_policy_rules_unenforced", {"reason": "http_match"}) == 0
    assert value("felixpy_policy_rules_unenforced", {"reason": "service_match"}) == 0
    assert value("felixpy_policies_unconvertible") == 0


def test_collector_without_policy_counts_dataplane_endpoints() -> None:
    metrics = Metrics()
    dataplane = SimpleNamespace(policy=None, endpoints={"a": 1, "b": 2})
    syncer = SimpleNamespace(status=None, resyncs=0)
    metrics.registry.register(FelixCollector("rr1", syncer, SimpleNamespace(_nodes={}), dataplane))
    fams = _scrape(metrics)
    assert fams["felix_active_local_endpoints"][1][0][2] == 2
    assert fams["felix_resync_state"][1][0][2] == 1
    assert "felix_iptables_restore_calls" not in fams


def test_exposition_uses_felix_bare_counter_names_with_their_type() -> None:
    """Felix (Go client, text 0.0.4) writes ``felix_iptables_restore_calls`` with ``# TYPE … counter``;
    prometheus_client would write ``…_total``: a dashboard's query would match nothing."""
    compiler = _compiler()
    driver = PolicyDriver(4, IptablesWriter(RestoreBackend("nft")), IpsetWriter())
    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    from felixpy.runtime.writer import WriterStats

    dataplane = SimpleNamespace(policy=driver)
    metrics.registry.register(
        FelixCollector("n1", syncer, _graph(compiler), dataplane, writer_stats=WriterStats())
    )
    text = _text(metrics)
    for name in FELIX_COUNTERS:
        assert f"# TYPE {name} counter\n" in text, name
        assert f"{name}_total" not in text, name
    assert "\nfelix_iptables_restore_calls 0.0\n" in text
    assert (
        "# TYPE felixpy_errors_total counter" in text or "felixpy_errors" in text
    )  # felixpy's own untouched
    assert "# TYPE felixpy_cni_requests_total counter" in text


def test_grafana_dashboard_queries_only_names_the_agent_exports() -> None:
    """charts/felixpy/dashboards/felixpy.json: every felix_*/process_* name a panel queries is in a scrape."""
    import json
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "charts/felixpy/dashboards/felixpy.json"
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b((?:felix|process)_[a-z_]+)", e)}
    assert len(queried) >= 10

    compiler = _compiler()
    driver = PolicyDriver(4, IptablesWriter(RestoreBackend("nft")), IpsetWriter())
    dataplane = SimpleNamespace(policy=driver, routes=SimpleNamespace(table=254, _desired={"10.0.0.1/32": 1}))
    metrics = Metrics()
    metrics.felix_apply_seconds.observe(0.01)
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    graph = SimpleNamespace(_nodes={}, policy=PolicyCalc([compiler]))
    metrics.registry.register(FelixCollector("n1", syncer, graph, dataplane))
    exported = {line.split("{")[0].split(" ")[0] for line in _text(metrics).splitlines() if line[:1] != "#"}
    assert not queried - exported, sorted(queried - exported)


def test_profiles_counted_as_felix_cluster_num_profiles() -> None:
    """felix_cluster_num_profiles: the Profiles the agent holds (stored in etcd mode; generated
    kns./ksa. ones in Kubernetes mode, fed to the compiler the same way)."""
    from felixpy.resources.stored import Profile

    c = _compiler()
    for name in ("kns.x", "ksa.x.default"):
        c.update_profile(Profile.model_validate({"metadata": {"name": name}, "spec": {}}))
    assert policy_counts(c).profiles == 2
    driver = PolicyDriver(4, IptablesWriter(RestoreBackend("nft")), IpsetWriter())
    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    metrics.registry.register(FelixCollector("n1", syncer, _graph(c), SimpleNamespace(policy=driver)))
    assert _scrape(metrics)["felix_cluster_num_profiles"] == (
        "gauge",
        [("felix_cluster_num_profiles", {}, 2)],
    )
    c.remove_profile("kns.x")
    assert _scrape(metrics)["felix_cluster_num_profiles"][1][0][2] == 1
    # Kubernetes mode: a Namespace is kns.<ns>, a ServiceAccount ksa.<ns>.<sa> (one name counted once)
    c.update_namespace_labels("x", {"team": "a"})
    c.update_namespace_labels("y", {})
    c.update_service_account_labels("x", "default", {})
    assert _scrape(metrics)["felix_cluster_num_profiles"][1][0][2] == 3  # kns.x, kns.y, ksa.x.default
    c.remove_namespace("y")
    assert _scrape(metrics)["felix_cluster_num_profiles"][1][0][2] == 2


def test_writer_loop_counts_calc_graph_and_dataplane_messages_per_batch() -> None:
    """felix_calc_graph_updates_processed{type} counts datastore updates by kind,
    felix_calc_graph_update_time_seconds observes once per batch, felix_calc_graph_output_events counts
    what the graph emitted and felix_int_dataplane_messages{type} the same updates by class."""
    from felixpy.calc.graph import CalcGraph
    from felixpy.resources.node import Node
    from felixpy.runtime.writer import BlockMsg, InSyncMsg, ResourceMsg, Writer
    from tests.fixtures.calc_recorder import RecordingDataplane

    dataplane = RecordingDataplane()
    writer = Writer(CalcGraph("n1"), dataplane)
    node = Node.model_validate({"metadata": {"name": "n2"}, "spec": {"bgp": {"ipv4Address": "192.0.2.2/24"}}})
    writer._process([ResourceMsg("Node", ("", "n2"), node), BlockMsg("10.0.1.0/26", "n2"), InSyncMsg()])
    writer._process([BlockMsg("10.0.2.0/26", "n2")])
    stats = writer.stats
    assert dict(stats.updates_processed) == {"Node": 1, "Block": 2}
    assert stats.calc_batches == 2 and stats.calc_seconds > 0
    assert stats.output_events == sum(map(len, dataplane.batches)) > 0
    assert sum(stats.dataplane_messages.values()) == stats.output_events
    assert stats.dataplane_messages["InSync"] == 1

    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    collector = FelixCollector("n1", syncer, SimpleNamespace(_nodes={}), None, writer_stats=stats)
    metrics.registry.register(collector)
    fams = _scrape(metrics)
    processed = fams["felix_calc_graph_updates_processed"]
    assert processed[0] == "counter"
    assert {lab["type"]: v for _, lab, v in processed[1]} == {"Node": 1, "Block": 2}
    update_time = fams["felix_calc_graph_update_time_seconds"]
    assert update_time[0] == "summary"
    assert {n: v for n, _, v in update_time[1]}["felix_calc_graph_update_time_seconds_count"] == 2
    assert fams["felix_calc_graph_output_events"][0] == "counter"
    messages = {lab["type"]: v for _, lab, v in fams["felix_int_dataplane_messages"][1]}
    assert messages["InSync"] == 1 and sum(messages.values()) == stats.output_events
    text = _text(metrics)
    assert "# TYPE felix_int_dataplane_messages counter\n" in text
    assert '\nfelix_calc_graph_updates_processed{type="Node"} 1.0\n' in text  # bare, as Felix writes it
    assert f"\nfelix_calc_graph_output_events {float(stats.output_events)}\n" in text


def test_route_table_ifaces_and_resync_time() -> None:
    """felix_route_table_num_ifaces{table}: interfaces the agent's routes use (a blackhole has none);
    felix_route_table_resync_seconds: one observation per full resync of the table."""
    from felixpy.dataplane.kernel_objects import RouteTarget
    from felixpy.dataplane.routes import RouteTable
    from felixpy.runtime.felix_metrics import route_iface_counts

    routes = [
        ("10.0.0.1/32", RouteTarget.device("cali1")),
        ("10.0.0.2/32", RouteTarget.device("cali2")),
        ("10.0.0.3/32", RouteTarget.device("cali2")),
        ("10.0.1.0/26", RouteTarget.blackhole()),
        ("fd00::1/128", RouteTarget.device("cali1")),
    ]
    assert route_iface_counts(254, routes) == {"IPv4:254": 2, "IPv6:254": 1}

    class _Netlink:
        def list_routes(self, **_: object) -> list[object]:
            return []

        def apply_routes(self, **_: object) -> list[object]:
            return []

    table = RouteTable(_Netlink())  # type: ignore[arg-type]
    for dst, target in routes:
        table.set_route(dst, target)
    table.start()
    table.resync()
    assert table.resyncs == 2 and table.resync_seconds > 0
    metrics = Metrics()
    syncer = SimpleNamespace(status="in-sync", resyncs=0)
    dataplane = SimpleNamespace(policy=None, endpoints={}, routes=table)
    metrics.registry.register(FelixCollector("n1", syncer, SimpleNamespace(_nodes={}), dataplane))
    fams = _scrape(metrics)
    assert fams["felix_route_table_num_ifaces"][0] == "gauge"
    assert {lab["table"]: v for _, lab, v in fams["felix_route_table_num_ifaces"][1]} == {
        "IPv4:254": 2, "IPv6:254": 1,
    }  # fmt: skip
    resync = {n: v for n, _, v in fams["felix_route_table_resync_seconds"][1]}
    assert fams["felix_route_table_resync_seconds"][0] == "summary"
    assert resync["felix_route_table_resync_seconds_count"] == 2
