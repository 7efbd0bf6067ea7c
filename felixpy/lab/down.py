"""``felixpy-lab down``: remove every trace of a lab, with or without a state file.

Order: stop processes (state-file pids, then ``ip netns pids`` of every namespace with the
lab's prefix, then anything carrying the lab's environment tag), delete the namespaces
(which deletes every link and route in them), remove the run directory with etcd's data,
then verify that nothing is left and say so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from felixpy.lab import procs, topology
from felixpy.lab.layout import LabNames
from felixpy.lab.shell import Progress, run
from felixpy.lab.state import try_load


@dataclass
class Leftovers:
    netns: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.netns or self.pids or self.paths or self.root_links)


def _all_pids(names: LabNames) -> set[int]:
    pids: set[int] = set()
    state = try_load(names)
    if state is not None:
        pids.update(p.pid for p in state.processes)
    for ns in topology.lab_netns(names):
        pids.update(procs.netns_pids(ns))
    pids.update(procs.tagged_pids(names))
    return pids


def _root_links_of_lab() -> list[str]:
    """Links in the root namespace named like the lab's fabric-side links (there should be none)."""
    out = run(["ip", "-o", "link", "show"], check=False, timeout=10).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            ifname = parts[1].strip().split("@", 1)[0]
            if ifname.startswith("v-node") or ifname.startswith("v-rr") or ifname == "v-etcd":
                found.append(ifname)
    return found


def leftovers(names: LabNames) -> Leftovers:
    """What of this lab still exists."""
    left = Leftovers(
        netns=topology.lab_netns(names),
        pids=[p for p in procs.tagged_pids(names) if procs.alive(p)],
        root_links=_root_links_of_lab(),
    )
    if names.run_dir.exists():
        left.paths.append(str(names.run_dir))
    return left


def down(names: LabNames, progress: Progress) -> Leftovers:
    """Tear the lab down; return what could not be removed (empty on success)."""
    with progress.step(f"stopping processes of lab {names.name}"):
        stopped = procs.stop(_all_pids(names))
        progress.say(f"stopped {len(stopped)} process(es)")
    spaces = topology.lab_netns(names)
    with progress.step(f"deleting {len(spaces)} namespace(s)"):
        for ns in _pods_first(spaces, names):
            procs.stop(procs.netns_pids(ns), grace=1.0)
            topology.delete_netns(ns)
    procs.stop(procs.tagged_pids(names), grace=1.0)
    with progress.step(f"removing {names.run_dir}"):
        shutil.rmtree(names.run_dir, ignore_errors=True)
        names.lock_file.unlink(missing_ok=True)
    left = leftovers(names)
    if left.empty():
        progress.say(f"lab {names.name} is gone: no namespace, process, link or file left")
    else:
        progress.say(f"lab {names.name}: LEFTOVERS {left}")
    return left


def _pods_first(spaces: list[str], names: LabNames) -> list[str]:
    """Pods, then nodes, then etcd, then the fabric (links go away with their namespace)."""

    def rank(ns: str) -> int:
        if ns.startswith(f"{names.prefix}pod-"):
            return 0
        if ns == names.fabric:
            return 3
        if ns == names.etcd:
            return 2
        return 1

    return sorted(spaces, key=rank)
