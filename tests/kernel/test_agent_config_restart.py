"""A FelixConfiguration change reaches a running agent: it restarts in place, as Felix does.

Real etcd and the real agent in a node namespace (the harness of test_agent_cni.py). The change is
made with `felixctl apply`; the agent must pick it up by itself, keep its PID (it execs itself
after the graceful shutdown a SIGTERM gets), never take the pod's route or veth away meanwhile,
show the new behaviour in the kernel, be ready again and count the restart in its metrics. A change
to another node's configuration, and a value that does not validate, must not restart it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.kernel.test_agent_cni import VENV_BIN, NodeEnv, _ip, _wait, running_node

pytestmark = pytest.mark.kernel
CONFIG_KEY = "/calico/resources/v3/projectcalico.org/felixconfigurations/"
PROBE_KEY = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/cfg-probe"


@pytest.fixture(scope="module")
def env() -> Iterator[NodeEnv]:
    with running_node("nodecfg") as e:
        yield e


def felixctl_apply(env: NodeEnv, name: str, spec: dict[str, object]) -> None:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": name}}
    proc = subprocess.run(
        ["ip", "netns", "exec", env.node.name, str(VENV_BIN / "felixctl"), "apply", "-f", "-"],
        input=json.dumps({**doc, "spec": spec}),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": env.endpoints},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def to_host_action(env: NodeEnv) -> str:
    """The verdict at the end of cali-wl-to-host (Felix's DefaultEndpointToHostAction)."""
    rules = env.node.run("iptables-save", "-t", "filter").splitlines()
    last = [r for r in rules if r.startswith("-A cali-wl-to-host ")][-1:]
    return last[0].split()[-1] if last else ""


def metric(env: NodeEnv, name: str) -> float | None:
    url = "http://127.0.0.1:9091/metrics"
    probe = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=2).read().decode())"
    proc = subprocess.run(
        ["ip", "netns", "exec", env.node.name, "python3", "-c", probe],
        capture_output=True,
        text=True,
        timeout=10,
    )
    found = re.search(rf"^{name} (\S+)$", proc.stdout, re.M)
    return float(found.group(1)) if found else None


def log_lines(env: NodeEnv, event: str) -> list[str]:
    return [line for line in env.agent_log().splitlines() if f"event='{event}'" in line]


def veth_index(env: NodeEnv, dev: str) -> str:
    out = env.node.run("ip", "-o", "link", "show", "dev", dev, check=False)
    return out.split(":", 1)[0] if out.strip() else ""


def test_config_change_restarts_in_place_and_keeps_the_pods_path(env: NodeEnv) -> None:
    original = {
        name: env.etcdctl("get", "--print-value-only", CONFIG_KEY + name).stdout.strip()
        for name in ("default", "node.other-node")
    }
    try:
        _run_scenario(env)
    finally:  # restore the datastore as found, even on failure
        for name, value in original.items():
            if value:
                env.etcdctl("put", CONFIG_KEY + name, value, check=False)
            else:
                env.etcdctl("del", CONFIG_KEY + name, check=False)
        env.etcdctl("del", PROBE_KEY, check=False)


def _run_scenario(env: NodeEnv) -> None:
    assert env.agent is not None
    pod = env.pod("pod-cfg")
    rc, res = env.cni("ADD", pod, "cfg")
    assert rc == 0, res
    ip = _ip(res)
    route = env.node.run("ip", "route", "show", ip)
    dev = route.split(" dev ")[1].split()[0]
    index = veth_index(env, dev)
    assert dev.startswith("cali") and index, route
    pid = env.agent.pid
    assert to_host_action(env) == "DROP"  # Felix's default DefaultEndpointToHostAction
    restarts = len(log_lines(env, "agent.reexec"))
    assert restarts == 0 and metric(env, "felixpy_config_restarts_total") == 0.0

    # --- a parameter the agent acts on: one restart in place, the data path untouched ---------------
    felixctl_apply(env, "default", {"defaultEndpointToHostAction": "Accept"})
    felixctl_apply(env, "default", {"defaultEndpointToHostAction": "Accept", "routeRefreshInterval": "30s"})
    deadline = time.monotonic() + 45
    samples = 0
    while to_host_action(env) != "ACCEPT" or not log_lines(env, "config.restarted"):
        assert time.monotonic() < deadline, f"no restart with the new action:\n{env.agent_log()[-3000:]}"
        # sampled all through the restart window: the pod's route and veth stay as they were
        assert env.node.run("ip", "route", "show", ip) == route, "the pod's route changed during the restart"
        assert veth_index(env, dev) == index, "the pod's veth was removed during the restart"
        assert env.agent.poll() is None, f"the agent exited:\n{env.agent_log()[-3000:]}"
        samples += 1
        time.sleep(0.05)
    assert samples > 0
    assert env.agent.pid == pid and env.agent.poll() is None
    (changed,) = log_lines(env, "config.changed")  # two edits within the window: one restart
    assert "defaultEndpointToHostAction" in changed and "'DROP'" in changed and "'ACCEPT'" in changed
    assert "routeRefreshInterval" not in changed  # FELIX_ROUTEREFRESHINTERVAL (the fixture's env) wins
    assert len(log_lines(env, "agent.reexec")) == 1
    (restarted,) = log_lines(env, "config.restarted")
    assert f"pid={pid}" in restarted and "applied=True" in restarted
    _wait(env.ready, 30, "readiness after the restart")
    assert env.node.run("ip", "route", "show", ip) == route and veth_index(env, dev) == index
    assert pod.run("ip", "-4", "route", "show", "default").strip()
    assert metric(env, "felixpy_config_restarts_total") == 1.0  # counted, across the exec

    # --- another node's configuration: seen by the agent, no restart -------------------------------
    felixctl_apply(env, "node.other-node", {"defaultEndpointToHostAction": "Return"})
    _wait(
        lambda: any("node.other-node" in line for line in log_lines(env, "config.unchanged")),
        20,
        "the agent to look at node.other-node",
    )
    assert len(log_lines(env, "agent.reexec")) == 1 and len(log_lines(env, "config.changed")) == 1
    assert env.agent.pid == pid and env.agent.poll() is None
    assert to_host_action(env) == "ACCEPT"

    # --- a value that does not validate (written past felixctl): logged, kept running -----------------
    bad = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": {"defaultEndpointToHostAction": "Return", "failsafeInboundHostPorts": [{"port": "ssh"}]},
    }
    env.etcdctl("put", CONFIG_KEY + "default", json.dumps(bad))
    _wait(lambda: log_lines(env, "config.invalid"), 20, "the agent to report the invalid configuration")
    assert "failsafeInboundHostPorts" in log_lines(env, "config.invalid")[0]
    assert len(log_lines(env, "agent.reexec")) == 1
    assert env.agent.pid == pid and env.agent.poll() is None
    # still programming: a later policy shows up, and the running action is kept
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "cfg-probe"},
        "spec": {"selector": "all()", "types": ["Ingress"], "ingress": [{"action": "Allow"}]},
    }
    env.etcdctl("put", PROBE_KEY, json.dumps(policy))
    _wait(
        lambda: ":cali-pi-" in env.node.run("iptables-save", "-t", "filter"), 20, "the probe policy's chain"
    )
    assert to_host_action(env) == "ACCEPT" and env.ready()
