"""``felixpy-lab up``: namespaces, etcd, resources, ToR, agents, then wait for convergence.

Each step is recorded in the state file before it runs, so a failed or killed ``up`` can
always be undone by ``down``. A failed ``up`` leaves what it built for inspection (logs in
the run directory) and says how to remove it.
"""

from __future__ import annotations

import os
import shutil

from felixpy.lab import agents as agent_procs
from felixpy.lab import bird, ctl, etcd, manifests, state, topology
from felixpy.lab.layout import LabError, LabNames
from felixpy.lab.plan import Options, Plan, make_plan
from felixpy.lab.shell import Progress
from felixpy.lab.state import LabState, ProcRecord

REQUIRED = ("ip", "etcd", "etcdctl")


def preflight(opts: Options, *, agents: bool = True) -> None:
    """Root, the binaries, and no lab of that name already."""
    if os.geteuid() != 0:
        raise LabError("felixpy-lab needs root (it creates network namespaces)")
    missing = [b for b in REQUIRED + (("bird", "birdc") if opts.tor == "bird" else ()) if not shutil.which(b)]
    if missing:
        raise LabError(f"missing binaries: {', '.join(missing)}")
    if agents and ctl.tool("felixpy") is None:
        raise LabError("the felixpy console script is missing (pip install -e .)")
    names = LabNames(opts.name)
    if names.state_file.exists() or topology.lab_netns(names):
        raise LabError(f"lab {opts.name!r} already exists; 'felixpy-lab down --name {opts.name}' first")


def _record(names: LabNames, st: LabState, rec: ProcRecord) -> ProcRecord:
    st.processes.append(rec)
    state.save(names, st)
    return rec


def _check_etcd_from_nodes(names: LabNames, plan: Plan) -> None:
    for node in plan.nodes:
        if not etcd.healthy_from(node.netns, plan.etcd_endpoint):
            raise LabError(f"etcd {plan.etcd_endpoint} is not reachable from {node.netns}")


def _datastore(names: LabNames, plan: Plan, st: LabState, progress: Progress) -> None:
    with progress.step(f"etcd in {names.etcd} ({plan.etcd_endpoint})"):
        recs = [_record(names, st, rec) for rec in etcd.start(names, plan)]
        etcd.wait_ready(names, plan, recs)
    with progress.step("etcd reachable from every node namespace"):
        _check_etcd_from_nodes(names, plan)
    docs = manifests.cluster_resources(plan)
    how = "felixctl apply" if ctl.felixctl_available() else "lab applier (felixctl not installed)"
    with progress.step(f"{how}: IPPool {plan.options.pool}, BGPConfiguration, {len(docs) - 2} more"):
        ctl.apply(names, plan.etcd_endpoint, docs)


def _tor(names: LabNames, plan: Plan, st: LabState, progress: Progress) -> None:
    with progress.step(f"BIRD top-of-rack in {names.fabric} (AS 65000, {len(plan.nodes)} eBGP peers)"):
        rec = _record(names, st, bird.start(names, plan))
        bird.wait_ready(names, rec)


def _agents(names: LabNames, plan: Plan, st: LabState, progress: Progress) -> dict[str, ProcRecord]:
    records = {}
    with progress.step(f"starting felixpy node on {len(plan.nodes)} node(s)"):
        for node in plan.nodes:
            records[node.name] = _record(names, st, agent_procs.start(names, plan, node))
            progress.say(f"  {node.name}: pid {records[node.name].pid}, log {records[node.name].log}")
    return records


def up(
    opts: Options, progress: Progress, *, wait: bool = True, timeout: float = 120.0, agents: bool = True
) -> LabState:
    """Build the lab of ``opts``; return its state (phase ``up``)."""
    plan = make_plan(opts)
    preflight(opts, agents=agents)
    names = LabNames(opts.name)
    progress.say(
        f"lab {opts.name}: {opts.nodes} node(s), {opts.racks} rack(s), {opts.route_reflectors} RR(s), "
        f"tor={opts.tor}, encap={opts.encap}{' cross-subnet' if opts.cross_subnet else ''}, pool {opts.pool}"
    )
    st = LabState(name=opts.name, plan=plan)
    state.save(names, st)
    topology.build(names, plan, progress)
    _datastore(names, plan, st, progress)
    if opts.tor == "bird":
        _tor(names, plan, st, progress)
    if agents:
        records = _agents(names, plan, st, progress)
        if wait:
            with progress.step("waiting for agents ready and BGP sessions Established"):
                agent_procs.wait_converged(names, plan, records, progress, timeout=timeout)
    st.phase = "up"
    state.save(names, st)
    progress.say(f"lab {opts.name} is up")
    return st
