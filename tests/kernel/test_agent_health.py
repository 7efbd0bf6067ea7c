"""Health and Prometheus metrics of the real agent (in its node namespace, against a real etcd):
what a kubelet probe and a Prometheus scrape rely on."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.kernel.test_agent_cni import NodeEnv, _wait, env  # noqa: F401 (module-scoped agent fixture)

pytestmark = pytest.mark.kernel

FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=2); print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def http_get(e: NodeEnv, port: int, path: str) -> tuple[int, str]:
    argv = ["ip", "netns", "exec", e.node.name, "python3", "-c", FETCH, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=True).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def metric(text: str, name: str, labels: str = "") -> float | None:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


def test_liveness_and_readiness_answer_200_with_json(env: NodeEnv) -> None:  # noqa: F811
    for path in ("/liveness", "/readiness"):
        status, body = http_get(env, 9099, path)
        assert status == 200 and json.loads(body) == {"ok": True}, (path, status, body)
    assert http_get(env, 9099, "/nonsense")[0] == 404


def test_metrics_count_endpoints_sync_state_and_dataplane_applies(env: NodeEnv) -> None:  # noqa: F811
    pods = [env.pod(f"m{i}") for i in range(2)]
    for i, pod in enumerate(pods):
        rc, result = env.cni("ADD", pod, f"metrics-{i}")
        assert rc == 0, result

    def endpoints_counted() -> bool:
        text = http_get(env, 9091, "/metrics")[1]
        return (metric(text, "felixpy_local_endpoints") or 0) >= 2

    _wait(endpoints_counted, 15, "felixpy_local_endpoints to count the new pods")
    text = http_get(env, 9091, "/metrics")[1]
    assert metric(text, "felixpy_datastore_in_sync") == 1.0
    assert (metric(text, "felixpy_dataplane_apply_seconds_count") or 0) > 0
    assert "felixpy_cni_requests_total" in text and 'command="ADD"' in text
    before = metric(text, "felixpy_local_endpoints") or 0

    for i, pod in enumerate(pods):
        assert env.cni("DEL", pod, f"metrics-{i}")[0] == 0

    def endpoints_gone() -> bool:
        return metric(http_get(env, 9091, "/metrics")[1], "felixpy_local_endpoints") == before - 2

    _wait(endpoints_gone, 15, "felixpy_local_endpoints to drop by the deleted pods")


def _value(text: str, name: str, labels: str = "") -> float:
    return metric(text, name, labels) or 0.0


def test_metrics_carry_felix_names_for_a_pod_and_a_policy(env: NodeEnv) -> None:  # noqa: F811
    """What a Felix dashboard or alert queries: felix_* names with Felix's types, and process_*."""
    base = http_get(env, 9091, "/metrics")[1]
    pod = env.pod("fm0")
    rc, result = env.cni("ADD", pod, "felix-metrics", extra_args=";K8S_POD_LABELS=felix-metrics=yes")
    assert rc == 0, result
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",  # (a namespaced policy's rule selectors all get a namespace == term)
        "metadata": {"name": "felix-metrics"},
        "spec": {
            "selector": "felix-metrics == 'yes'",
            "types": ["Ingress"],
            "ingress": [
                # the label index's three scans: no endpoint has role=scraper (no-match); the pod
                # has felix-metrics=yes (single-value, true); `in` with two values scans every
                # endpoint (full-scan, false on the pod)
                {"action": "Allow", "source": {"selector": "role == 'scraper'"}},
                {"action": "Allow", "source": {"selector": "felix-metrics == 'yes'"}},
                {"action": "Allow", "source": {"selector": "felix-metrics in {'no', 'maybe'}"}},
            ],
        },
    }
    key = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/felix-metrics"
    env.etcdctl("put", key, json.dumps(policy))
    profile = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "felix-metrics"},
               "spec": {}}  # fmt: skip
    profile_key = "/calico/resources/v3/projectcalico.org/profiles/felix-metrics"
    try:
        env.etcdctl("put", profile_key, json.dumps(profile))
        profiles = "felix_cluster_num_profiles"

        def counted() -> bool:
            text = http_get(env, 9091, "/metrics")[1]
            return (
                _value(text, "felix_active_local_policies") >= _value(base, "felix_active_local_policies") + 1
                and _value(text, "felix_active_local_endpoints") >= 1
                and _value(text, profiles) >= _value(base, profiles) + 1
            )

        _wait(counted, 20, "felix_active_local_policies to count the policy selecting the pod")
        text = http_get(env, 9091, "/metrics")[1]
        assert _value(text, "felix_active_local_endpoints") >= 1
        assert _value(text, "felix_cluster_num_workload_endpoints") >= 1
        assert _value(text, "felix_cluster_num_policies") >= 1
        assert _value(text, "felix_active_local_selectors") >= 3  # the three rule selectors
        # Felix's label index families: two equality selectors, one not; a scan of each by strategy;
        # evaluations by result (the pod matches felix-metrics == 'yes', not the `in`)
        opt, unopt = '{optimized="true"}', '{optimized="false"}'
        selectors = "felix_label_index_num_active_selectors"
        assert _value(text, selectors, opt) >= _value(base, selectors, opt) + 2
        assert _value(text, selectors, unopt) >= _value(base, selectors, unopt) + 1
        active = _value(text, selectors, opt) + _value(text, selectors, unopt)
        assert active == _value(text, "felix_active_local_selectors")
        scans = "felix_label_index_strategy_evals"
        for strategy in ("endpoint-no-match", "endpoint-single-value", "endpoint-full-scan"):
            label = '{strategy="' + strategy + '"}'
            assert _value(text, scans, label) >= _value(base, scans, label) + 1, strategy
        evals = "felix_label_index_selector_evals"
        for result in ("true", "false"):
            label = '{result="' + result + '"}'
            assert _value(text, evals, label) >= _value(base, evals, label) + 1, result
        assert "# TYPE felix_label_index_strategy_evals counter" in text
        assert "# TYPE felix_label_index_num_active_selectors gauge" in text
        assert _value(text, "felix_label_index_num_endpoints") >= 1
        assert _value(text, "felix_cluster_num_hosts") >= 1
        assert _value(text, "felix_resync_state") == 3
        assert _value(text, "felix_resyncs_started") >= 1
        assert _value(text, "felix_iptables_restore_calls") > 0
        assert _value(text, "felix_iptables_save_calls") > 0
        assert _value(text, "felix_ipset_calls") > 0
        assert _value(text, "felix_iptables_chains", '{ip_version="4",table="filter"}') > 0
        assert _value(text, "felix_iptables_rules", '{ip_version="4",table="filter"}') > 0
        assert _value(text, "felix_ipsets_calico", '{ip_version="4"}') >= 1
        assert _value(text, "felix_int_dataplane_apply_time_seconds_count") > 0
        assert _value(text, "felix_route_table_num_routes", '{table="IPv4:254"}') >= 1  # the pod's /32
        assert metric(text, "felix_host", '{host="' + env.nodename + '"}') == 1.0
        assert _value(text, "process_resident_memory_bytes") > 0
        assert _value(text, "process_open_fds") > 0
        # Felix's exact exposition: bare counter names, typed counter, no _total
        assert "# TYPE felix_iptables_restore_calls counter" in text
        assert "felix_iptables_restore_calls_total" not in text
        # the calculation graph and the dataplane messages, counted by the writer loop per batch:
        # the pod's endpoint and the policy went through the graph; the endpoint reached the dataplane
        processed = "felix_calc_graph_updates_processed"
        for kind in ("WorkloadEndpoint", "GlobalNetworkPolicy", "Profile"):
            label = '{type="' + kind + '"}'
            assert _value(text, processed, label) >= _value(base, processed, label) + 1, kind
        assert "# TYPE felix_calc_graph_updates_processed counter" in text
        batches = "felix_calc_graph_update_time_seconds_count"
        assert _value(text, batches) > _value(base, batches)
        assert "# TYPE felix_calc_graph_update_time_seconds summary" in text
        assert _value(text, "felix_calc_graph_output_events") > _value(base, "felix_calc_graph_output_events")
        messages, ep = "felix_int_dataplane_messages", '{type="EndpointUpdate"}'
        assert _value(text, messages, ep) >= _value(base, messages, ep) + 1
        assert "# TYPE felix_int_dataplane_messages counter" in text
        assert "# TYPE felix_cluster_num_profiles gauge" in text
        assert _value(text, "felix_route_table_num_ifaces", '{table="IPv4:254"}') >= 1  # the pod's cali veth
        assert _value(text, "felix_route_table_resync_seconds_count") >= 1  # the start-up sync at least
    finally:
        env.etcdctl("del", profile_key)
        env.etcdctl("del", key)
        env.cni("DEL", pod, "felix-metrics")

    def policy_gone() -> bool:
        text = http_get(env, 9091, "/metrics")[1]
        selectors = "felix_label_index_num_active_selectors"  # its selectors are no longer active
        return _value(text, "felix_active_local_policies") == _value(
            base, "felix_active_local_policies"
        ) and all(
            _value(text, selectors, label) == _value(base, selectors, label)
            for label in ('{optimized="true"}', '{optimized="false"}')
        )

    _wait(policy_gone, 20, "the policy and its selectors to leave the counts after its deletion")
