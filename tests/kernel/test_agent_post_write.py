"""Felix's post-write check in the real agent: when another program clobbers our rules right after we
wrote (a non-atomic save/modify/restore, as kube-proxy or docker can do), the agent re-reads the
tables a few seconds after its write and puts the rules back, long before the periodic refresh
(90 s here: the test environment shortens only the route refresh)."""

from __future__ import annotations

import shlex
import time

import pytest

from tests.kernel.test_agent_cni import NodeEnv, env  # noqa: F401 (module-scoped agent fixture)

pytestmark = pytest.mark.kernel


def forward_hooks(e: NodeEnv) -> list[str]:
    out = e.node.run("iptables-save", "-t", "filter")
    return [line for line in out.splitlines() if line.startswith("-A FORWARD") and "cali-FORWARD" in line]


def test_rules_clobbered_right_after_a_write_come_back_within_seconds(env: NodeEnv) -> None:  # noqa: F811
    pod = env.pod("pw")
    rc, result = env.cni("ADD", pod, "post-write")  # a write: the check is due ~5 s after it
    assert rc == 0, result
    (hook,) = forward_hooks(env)
    env.node.run("iptables", "-D", "FORWARD", *shlex.split(hook)[2:])
    assert forward_hooks(env) == []
    deadline = time.monotonic() + 20
    while not forward_hooks(env) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert forward_hooks(env) == [hook], "the post-write check restores the hook, in place"
    assert "iptables" in env.agent_log()
    assert env.cni("DEL", pod, "post-write")[0] == 0
