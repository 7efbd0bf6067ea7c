"""A FelixConfiguration change reaches a running agent: it restarts in place, as Felix does.

Real etcd and the real agent in a node namespace (the harness of test_agent_cni.py). The change is
written to the datastore as `felixctl apply` would; the agent must pick it up by itself, keep its
PID (it execs itself after the graceful shutdown a SIGTERM gets), never take the pod's route or
veth away meanwhile, and show the new behaviour in the kernel. A change to another node's
configuration must not restart it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.kernel.test_agent_cni import NodeEnv, _ip, _wait, running_node

pytestmark = pytest.mark.kernel
CONFIG_KEY = "/calico/resources/v3/projectcalico.org/felixconfigurations/"


@pytest.fixture(scope="module")
def env() -> Iterator[NodeEnv]:
    with running_node("nodecfg") as e:
        yield e


def put_config(env: NodeEnv, name: str, spec: dict[str, object]) -> None:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": name},
        "spec": spec,
    }
    env.etcdctl("put", CONFIG_KEY + name, json.dumps(doc))


def to_host_action(env: NodeEnv) -> str:
    rules = env.node.run("iptables-save", "-t", "filter").splitlines()
    last = [r for r in rules if r.startswith("-A cali-wl-to-host ")][-1:]
    return last[0].split()[-1] if last else ""


def test_config_change_restarts_in_place_and_keeps_the_pods_path(env: NodeEnv) -> None:
    pod = env.pod("pod-cfg")
    rc, res = env.cni("ADD", pod, "cfg")
    assert rc == 0, res
    ip = _ip(res)
    route = env.node.run("ip", "route", "show", ip)
    assert route.strip(), "the pod's route"
    assert env.agent is not None
    pid = env.agent.pid
    assert to_host_action(env) == "DROP"  # Felix's default DefaultEndpointToHostAction

    put_config(env, "default", {"defaultEndpointToHostAction": "Accept"})
    deadline = time.monotonic() + 45
    while to_host_action(env) != "ACCEPT" or "agent.reexec" not in env.agent_log():
        assert time.monotonic() < deadline, f"no restart with the new action:\n{env.agent_log()[-3000:]}"
        # the data path stays while the agent restarts
        assert env.node.run("ip", "route", "show", ip) == route, "the pod's route changed"
        assert env.agent.poll() is None, f"the agent exited:\n{env.agent_log()[-3000:]}"
        time.sleep(0.1)
    assert env.agent.pid == pid
    log = env.agent_log()
    assert '"config.changed"' in log or "config.changed" in log
    assert "defaultEndpointToHostAction" in log
    _wait(env.ready, 30, "readiness after the restart")
    assert env.node.run("ip", "route", "show", ip) == route
    pod.run("ping", "-c", "1", "-W", "2", "169.254.1.1", check=False)  # host still reachable (ARP)
    assert pod.run("ip", "-4", "route", "show", "default").strip()

    # another node's configuration: processed (a later policy shows up) but no restart
    restarts = env.agent_log().count("agent.reexec")
    put_config(env, "node.other-node", {"defaultEndpointToHostAction": "Return"})
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "cfg-probe"},
        "spec": {"selector": "all()", "types": ["Ingress"], "ingress": [{"action": "Allow"}]},
    }
    env.etcdctl(
        "put", "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/cfg-probe", json.dumps(policy)
    )
    _wait(
        lambda: ":cali-pi-" in env.node.run("iptables-save", "-t", "filter"),
        20,
        "the probe policy's chain (the later update was processed)",
    )
    time.sleep(2.5)  # the settle window (1 s) and the agent's 0.5 s check have passed
    assert env.agent_log().count("agent.reexec") == restarts
    assert env.agent.pid == pid and env.agent.poll() is None
    assert to_host_action(env) == "ACCEPT"
