"""The real ``felixpy node`` in every node namespace: start, readiness, BGP convergence."""

from __future__ import annotations

import json
import re
import sys

from felixpy.lab import ctl
from felixpy.lab.names import LabError, LabNames
from felixpy.lab.plan import NodePlan, Plan
from felixpy.lab.procs import alive, spawn
from felixpy.lab.shell import GiveUp, Progress, in_netns, run, wait_until
from felixpy.lab.state import ProcRecord
from felixpy.private_files import private_dir

HEALTH_PORT = 9099
METRICS_PORT = 9091
_HTTP_PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    urllib.request.urlopen(sys.argv[1], timeout=1).read()\n"
    "except Exception as exc:\n"
    "    sys.exit(f'not ready: {exc}')\n"
)


def agent_env(names: LabNames, plan: Plan, node: NodePlan) -> dict[str, str]:
    env = {
        "NODENAME": node.name,
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": plan.etcd_endpoint,
        "IP": node.cidr,
        "FELIXPY_RUN_DIR": str(names.node_dir(node.name)),
        # The nodename file for the CNI plugins goes in the node's own directory: the lab's nodes share
        # the host's filesystem, and /var/lib/felixpy/nodename there would name a lab node to every
        # felixctl run on the host (`ipam check` would then look for that node's interfaces here).
        "FELIXPY_STATE_DIR": str(names.node_dir(node.name)),
        "CALICO_NETWORKING_BACKEND": "bird",
        "NO_DEFAULT_POOLS": "true",
        # Set here, not left to defaults: readiness is probed on 127.0.0.1 inside the node's namespace,
        # and metrics are there for whoever runs `felixpy-lab exec NODE -- curl 127.0.0.1:9091/metrics`.
        "FELIX_HEALTHENABLED": "true",
        "FELIX_HEALTHHOST": "127.0.0.1",
        "FELIX_HEALTHPORT": str(HEALTH_PORT),
        "FELIX_PROMETHEUSMETRICSENABLED": "true",
        "FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1",
        "FELIX_PROMETHEUSMETRICSPORT": str(METRICS_PORT),
        "FELIXPY_LOG_LEVEL": "info",
    }
    if plan.options.tor == "bird":
        env["AS"] = str(node.asn)
    return env


def start(names: LabNames, plan: Plan, node: NodePlan) -> ProcRecord:
    binary = ctl.tool("felixpy")
    if binary is None:
        raise LabError("felixpy console script not found (pip install -e .)")
    argv = [binary, "node"] + (["--route-reflector"] if node.role == "route-reflector" else [])
    run_dir = names.node_dir(node.name)
    private_dir(run_dir)  # the agent's run dir: exabgp.conf (MD5 passwords), cni.sock, logs
    return spawn(
        names, role="agent", netns=node.netns, argv=argv, log=run_dir / "agent.log",
        env=agent_env(names, plan, node), cwd=run_dir,
    )


def agent_ready(node: NodePlan) -> bool:
    """True when the agent's readiness endpoint, inside the node's namespace, answers 2xx."""
    url = f"http://127.0.0.1:{HEALTH_PORT}/readiness"
    proc = run(in_netns(node.netns, sys.executable, "-c", _HTTP_PROBE, url), check=False, timeout=10)
    return proc.returncode == 0


def expected_sessions(plan: Plan, node: NodePlan) -> int:
    """How many BGP sessions ``node`` has once the lab has converged."""
    opts = plan.options
    if opts.tor == "bird":
        return 1
    if opts.route_reflectors:
        if node.role == "route-reflector":
            return len(plan.nodes) - 1
        return opts.route_reflectors
    return len(plan.nodes) - 1


_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*([^|]+?)\s*\|\s*(\S+)\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|$")


def parse_node_status(text: str) -> list[dict[str, str]]:
    """Rows of ``felixctl node status`` (calicoctl's table): peer, type, state, since, info."""
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m and m.group(1).upper() != "PEER":
            peer, ptype, state, since, info = m.groups()
            rows.append({"peer": peer, "type": ptype, "state": state, "since": since, "info": info})
    return rows


def status_rows(names: LabNames, node: NodePlan) -> list[dict[str, str]]:
    """BGP sessions from the agent's ``bgp-status.json`` in its run dir (what felixctl reads)."""
    path = names.node_dir(node.name) / "bgp-status.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not doc.get("running", True):
        return []
    return [
        {"peer": str(p.get("address", "")), "type": str(p.get("type", "")), "state": str(p.get("state", "")),
         "since": str(p.get("since", "")), "info": str(p.get("info", ""))}
        for p in doc.get("peers", [])
    ]


def node_status(names: LabNames, plan: Plan, node: NodePlan) -> tuple[str, list[dict[str, str]]]:
    """``felixctl node status`` inside the node's namespace: (its text, session rows).

    The rows come from the status file the command itself reads, so they do not depend on
    the table's layout; the text is felixctl's when it has ``node status``.
    """
    env = ctl.datastore_env(names, plan.etcd_endpoint)
    env.update({"FELIXPY_RUN_DIR": str(names.node_dir(node.name)), "NODENAME": node.name})
    argv = in_netns(node.netns, ctl.tool("felixctl") or "felixctl", "node", "status")
    proc = run(argv, env=env, check=False, timeout=15)
    rows = status_rows(names, node)
    text = proc.stdout if proc.returncode == 0 else _fallback_table(rows)
    return text, rows


def _fallback_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "No IPv4 peers found."
    lines = ["(felixctl node status unavailable; from bgp-status.json)"]
    lines += [f"  {r['peer']:<16} {r['type']:<28} {r['state']:<6} {r['info']}" for r in rows]
    return "\n".join(lines)


def established(rows: list[dict[str, str]]) -> int:
    return sum(1 for r in rows if r["info"].startswith("Established"))


def wait_converged(
    names: LabNames, plan: Plan, records: dict[str, ProcRecord], progress: Progress, *, timeout: float
) -> None:
    """Every agent ready, then every node's BGP sessions Established (bounded)."""
    for node in plan.nodes:
        rec = records[node.name]

        def ready(node: NodePlan = node, rec: ProcRecord = rec) -> bool:
            if not alive(rec.pid):
                raise GiveUp(f"agent on {node.name} exited; see {rec.log}")
            return agent_ready(node)

        wait_until(ready, timeout=timeout, interval=0.3, what=f"agent {node.name} readiness")
        progress.say(f"agent {node.name} ready")
    for node in plan.nodes:
        want = expected_sessions(plan, node)

        def sessions_up(node: NodePlan = node, want: int = want) -> bool:
            return established(status_rows(names, node)) >= want

        wait_until(sessions_up, timeout=timeout, interval=0.5, what=f"{want} BGP session(s) on {node.name}")
        progress.say(f"{node.name}: {want} BGP session(s) Established")
