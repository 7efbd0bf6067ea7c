"""A restarted agent on the kernel state its predecessor left: its first commit plans on the reads
it started while the datastore snapshot was digested (``felixpy.dataplane.prefetch``), writes
nothing because nothing differs, and still looks at its tables again a few seconds later, so a
change made by someone else around the start is repaired by the post-write check rather than by
the refresh 90 s later.

The real agent and etcd in a node namespace (test_agent_cni's harness), two pods through the
installed plugin.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.fixtures import waiting
from tests.kernel.test_agent_cni import _ip, running_node

pytestmark = pytest.mark.kernel
CHANGES = ("iptables.committed", "ipset.written", "ipset.destroyed", "route.replaced", "route.deleted")


def test_a_restart_on_its_own_state_writes_nothing_and_checks_its_tables_soon_after() -> None:
    with running_node("rpf") as env:
        a, b = env.pod("pod-pa"), env.pod("pod-pb")
        rc_a, ra = env.cni("ADD", a, "pa")
        rc_b, rb = env.cni("ADD", b, "pb")
        assert rc_a == rc_b == 0, (ra, rb)
        ip_b = _ip(rb)
        assert env.agent is not None
        env.agent.send_signal(signal.SIGTERM)
        assert env.agent.wait(30) == 0
        mark = len(env.agent_log())

        env.start_agent()  # waits for readiness (bounded)
        log = env.agent_log()[mark:]
        first = [line for line in log.splitlines() if "dataplane.first_commit" in line]
        assert len(first) == 1 and "ok=True" in first[0], first
        assert "prefetch.unused" not in log, log[-3000:]
        assert not [line for line in log.splitlines() if any(c in line for c in CHANGES)], log[-3000:]
        a.run("ping", "-c", "2", "-W", "2", ip_b)

        # someone flushes a pod's chain just after the start: the post-write check (5 s after a
        # first commit planned on an early read) puts it back, long before the 90 s refresh
        saved = env.node.run("iptables-save", "-t", "filter")
        chain = sorted(set(re.findall(r"^:(cali-tw-\S+)", saved, re.M)))[0]
        want = [line for line in saved.splitlines() if line.startswith(f"-A {chain} ")]
        assert want
        env.node.run("iptables", "-F", chain)

        def repaired() -> bool:
            now = env.node.run("iptables-save", "-t", "filter")
            return [line for line in now.splitlines() if line.startswith(f"-A {chain} ")] == want

        waiting.wait_for(repaired, f"{chain} repaired", 30, every=0.5)
        assert "iptables.committed" in env.agent_log()[mark:]
