"""A lab agent keeps its files in its node's directory: the lab's nodes share the host's filesystem.

Seen in CI: every lab agent wrote /var/lib/felixpy/nodename on the host, so `felixctl ipam check` run on
the host took a lab node for "this node" and reported that node's (namespaced) interfaces as gone.
"""

from __future__ import annotations

from felixpy.lab.agents import agent_env
from felixpy.lab.layout import LabNames
from felixpy.lab.plan import Options, make_plan


def test_each_lab_agent_writes_its_node_files_under_its_own_node_dir() -> None:
    names = LabNames("t")
    plan = make_plan(Options(name="t", nodes=2))
    dirs = set()
    for node in plan.nodes:
        env = agent_env(names, plan, node)
        assert env["FELIXPY_STATE_DIR"] == str(names.node_dir(node.name))
        assert env["FELIXPY_STATE_DIR"].startswith(str(names.run_dir))
        dirs.add(env["FELIXPY_STATE_DIR"])
    assert len(dirs) == 2
