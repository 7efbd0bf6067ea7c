"""A stored policy whose rule felixpy cannot enforce (``http``) does not take the agent down, and fails
closed in the kernel: a pod whose only allowing rule has an ``http`` match is denied; the same rule
without it (plain L3/L4) allows. (The agent used to exit with ``writer.crashed`` on such a policy, on
every node, at every sync.)"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.netns import Netns
from tests.kernel.test_agent_cni import NodeEnv, _ip, _wait, env  # noqa: F401 (module-scoped agent fixture)

pytestmark = pytest.mark.kernel
KEY = "/calico/resources/v3/projectcalico.org/networkpolicies/default/uweb-ingress"


def policy(rules: list[dict[str, object]]) -> str:
    return json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "uweb-ingress", "namespace": "default"},
            "spec": {"selector": "role == 'uweb'", "types": ["Ingress"], "ingress": rules},
        }
    )


def pings(src: Netns, ip: str) -> bool:
    return " 1 received" in src.run("ping", "-c", "1", "-W", "1", ip, check=False)


METRICS = (
    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9091/metrics', timeout=2).read().decode())"
)


def unenforced_metric(node_env: NodeEnv) -> str:
    out = node_env.node.run("python3", "-c", METRICS)
    return "\n".join(x for x in out.splitlines() if x.startswith("felixpy_policy_rules_unenforced{"))


def test_allow_with_http_denies_and_the_agent_stays_up(env: NodeEnv) -> None:  # noqa: F811
    client, web = env.pod("pod-ucl"), env.pod("pod-uweb")
    assert env.cni("ADD", client, "ucl")[0] == 0
    rc, res = env.cni("ADD", web, "uweb", extra_args=";K8S_POD_LABELS=role=uweb")
    assert rc == 0, res
    ip = _ip(res)
    assert pings(client, ip), "open before any policy"
    http_allow = {"action": "Allow", "protocol": "ICMP", "http": {"methods": ["GET"]}}
    env.etcdctl("put", KEY, policy([http_allow]))
    try:
        _wait(lambda: not pings(client, ip), 15, "the Allow + http policy to close the pod")
        for _ in range(3):  # it stays closed, and the agent stays up and ready
            assert not pings(client, ip)
            assert env.ready()
        assert "policy.rule_unenforced" in env.agent_log() and "writer.crashed" not in env.agent_log()
        assert 'reason="http_match"} 1.0' in unenforced_metric(env)
        l4_allow = {"action": "Allow", "protocol": "ICMP"}
        env.etcdctl("put", KEY, policy([http_allow, l4_allow]))
        _wait(lambda: pings(client, ip), 15, "the same rule without http to open the pod")
        assert env.ready()
    finally:
        env.etcdctl("del", KEY)
    _wait(lambda: 'reason="http_match"} 0.0' in unenforced_metric(env), 15, "the metric to drop")
