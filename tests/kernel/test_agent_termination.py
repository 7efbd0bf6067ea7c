"""Termination as the DaemonSet's kubelet does it keeps pods forwarding: SIGTERM, the agent exits
(code 0) well within the chart's terminationGracePeriodSeconds, every pod route, veth and policy
chain stays, pods keep talking while no agent runs, a CNI ADD meanwhile fails at once with code 11
naming the socket (the runtime retries), and the next agent takes over without a gap.

The real agent and etcd in a node namespace (test_agent_cni's harness), pods through the installed
plugin (the static forwarder).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.kernel.test_agent_cni import _ip, running_node

pytestmark = pytest.mark.kernel


def _grace_seconds() -> int:
    try:
        from tests.fixtures import chart

        return int(chart.pod_spec(chart.render({}))["terminationGracePeriodSeconds"])
    except pytest.skip.Exception:
        print("helm-python-sdk missing: using the chart's value as written, 30 s")
        return 30


def test_sigterm_keeps_routes_and_the_next_agent_takes_over() -> None:
    grace = _grace_seconds()
    with running_node("term") as env:
        a, b = env.pod("pod-ta"), env.pod("pod-tb")
        rc_a, ra = env.cni("ADD", a, "ta")
        rc_b, rb = env.cni("ADD", b, "tb")
        assert rc_a == rc_b == 0, (ra, rb)
        ip_a, ip_b = _ip(ra), _ip(rb)
        before = env.node.run("ip", "route", "show", "proto", "80")
        chains = sorted(
            line
            for line in env.node.run("iptables-save", "-t", "filter").splitlines()
            if line.startswith(":cali-")
        )
        assert env.agent is not None
        started = time.monotonic()
        env.agent.send_signal(signal.SIGTERM)
        code = env.agent.wait(grace)
        took = time.monotonic() - started
        assert code == 0 and took < grace / 2, f"exit {code} after {took:.1f}s (grace {grace}s)"
        assert "agent.stopping" in env.agent_log()
        # no agent: the kernel keeps everything and forwards
        assert env.node.run("ip", "route", "show", "proto", "80") == before
        after = sorted(
            line
            for line in env.node.run("iptables-save", "-t", "filter").splitlines()
            if line.startswith(":cali-")
        )
        assert [c.split()[0] for c in after] == [c.split()[0] for c in chains]
        a.run("ping", "-c", "2", "-W", "2", ip_b)
        c = env.pod("pod-tc")
        t0 = time.monotonic()
        rc, out = env.cni("ADD", c, "tc")
        assert rc == 1 and out is not None and out["code"] == 11 and "cni.sock" in out["msg"]
        assert time.monotonic() - t0 < 5
        # the next agent: same routes, pods still talking, new pods served
        env.start_agent()
        b.run("ping", "-c", "2", "-W", "2", ip_a)
        rc, rc_out = env.cni("ADD", c, "tc")
        assert rc == 0, rc_out
        routes = env.node.run("ip", "route", "show", "proto", "80")
        assert f"{ip_a} dev" in routes and f"{ip_b} dev" in routes
