"""What a running agent listens on, seen as `ss -ltn` inside its node namespace (issue 12): by default
health on 127.0.0.1:9099 and no metrics; asked for, metrics on their own host and port. The node
namespace also holds the test's etcd (127.0.0.1:23790 and :23800), which is all else that listens."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.kernel.test_agent_cni import ETCD_PORT, NodeEnv, running_node

pytestmark = pytest.mark.kernel

ETCD = {f"127.0.0.1:{ETCD_PORT}", "127.0.0.1:23800"}
# "" is "unset" for every FELIX_* variable: the agent falls back to its built-in defaults.
DEFAULTS = {
    name: ""
    for name in (
        "FELIX_HEALTHHOST",
        "FELIX_HEALTHPORT",
        "FELIX_PROMETHEUSMETRICSENABLED",
        "FELIX_PROMETHEUSMETRICSHOST",
        "FELIX_PROMETHEUSMETRICSPORT",
    )
}


def listeners(e: NodeEnv) -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", e.node.name, "ss", "-H", "-ltn"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeEnv]:
    with running_node("listen") as e:
        yield e


def restart(e: NodeEnv, **env: str) -> set[str]:
    """Restart the agent; the top-level packages its start imported (``-X importtime`` lines in its log)."""
    e.kill_agent()
    before = len(e.agent_log())
    e.start_agent(PYTHONPROFILEIMPORTTIME="1", **env)
    lines = e.agent_log()[before:].splitlines()
    return {line.split("|")[2].strip().split(".")[0] for line in lines if line.startswith("import time:")}


# Never in a running agent (tests/unit/test_start_imports.py); prometheus_client only with metrics on.
NOT_IMPORTED = {"yaml", "pyroute2", "kubernetes", "matplotlib", "jsonschema", "exabgp", "iptc"}


def test_defaults_health_on_loopback_only_and_no_metrics(node: NodeEnv) -> None:
    imported = restart(node, **DEFAULTS)
    assert listeners(node) == ETCD | {"127.0.0.1:9099"}
    assert {"felixpy", "grpc", "pyetcd"} <= imported  # the log holds the start's imports
    assert imported & (NOT_IMPORTED | {"prometheus_client"}) == set()


def test_metrics_when_asked_listen_apart_from_health(node: NodeEnv) -> None:
    metrics = {
        "FELIX_PROMETHEUSMETRICSENABLED": "true",
        "FELIX_PROMETHEUSMETRICSHOST": "10.77.0.1",
        "FELIX_PROMETHEUSMETRICSPORT": "9191",
    }
    imported = restart(node, **{**DEFAULTS, **metrics})
    assert listeners(node) == ETCD | {"127.0.0.1:9099", "10.77.0.1:9191"}
    assert "prometheus_client" in imported
    assert imported & NOT_IMPORTED == set()
    url = "http://10.77.0.1:9191/metrics"
    probe = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
    text = subprocess.run(
        ["ip", "netns", "exec", node.node.name, "python3", "-c", probe],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    assert "felixpy_datastore_in_sync" in text and "felix_cluster_num_workload_endpoints" in text


def test_health_can_be_moved_and_disabled(node: NodeEnv) -> None:
    node.kill_agent()
    _start_without_readiness(node, {**DEFAULTS, "FELIX_HEALTHHOST": "10.77.0.1", "FELIX_HEALTHPORT": "9199"})
    assert listeners(node) == ETCD | {"10.77.0.1:9199"}
    node.kill_agent()
    _start_without_readiness(node, {**DEFAULTS, "FELIX_HEALTHENABLED": "false"})
    assert listeners(node) == ETCD


def _start_without_readiness(e: NodeEnv, env: dict[str, str]) -> None:
    """Start the agent and wait for its `agent.started` log line (no readiness probe on 9099 here)."""
    started = e.agent_log().count("agent.started")
    original = e.ready
    try:
        e.ready = lambda: e.agent_log().count("agent.started") > started  # type: ignore[method-assign]
        e.start_agent(**env)
    finally:
        e.ready = original  # type: ignore[method-assign]
