"""``felixctl node check``: WorkloadEndpoints of this node whose host interface (and with it the pod's
network namespace) is gone — "orphans", left when a pod's CNI DEL never reached the agent.

Run on the node (in its network namespace): the endpoints come from the datastore, the interfaces
from this host's kernel, so the report holds even while the agent is down. The agent finds the same
endpoints itself (``endpoint.orphaned`` in its log, ``felixpy_orphaned_endpoints``); the
runtime's retried DEL cleans them, and ``felixctl ipam check`` lists them too.

This node is ``--node``, else ``$NODENAME``, else ``$FELIX_FELIXHOSTNAME``, else
/var/lib/calico/nodename, else the host name — the agent's order.

Exit code: 0 when nothing is orphaned, 1 when something is (so a script can act on it).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from felixpy.ctl.connect import open_backend
from felixpy.ctl.output import dump_json, dump_yaml, print_table
from felixpy.resources.endpoint import WorkloadEndpoint
from ipam.plugin import NODENAME_FILES, nodename_from_files


def local_nodename(explicit: str | None = None, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    for name in (explicit, env.get("NODENAME"), env.get("FELIX_FELIXHOSTNAME")):
        if name:
            return name
    return nodename_from_files(NODENAME_FILES)


def iface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def find_orphans(
    weps: Iterable[Any], node: str, exists: Callable[[str], bool] = iface_exists
) -> list[dict[str, Any]]:
    """This node's endpoints whose interface is missing, sorted by namespace and name."""
    found = []
    for wep in weps:
        spec = wep.spec
        if spec.node != node or not spec.interface_name:
            continue
        if exists(spec.interface_name):
            continue
        found.append(
            {
                "namespace": wep.namespace or "",
                "name": wep.name,
                "node": node,
                "pod": spec.pod,
                "containerID": spec.container_id,
                "interface": spec.interface_name,
                "addresses": list(spec.ip_networks),
                "problem": f"host interface {spec.interface_name} is gone (pod network namespace removed)",
            }
        )
    return sorted(found, key=lambda o: (o["namespace"], o["name"]))


def local_orphans(args: argparse.Namespace, node: str) -> list[dict[str, Any]]:
    with open_backend(args) as backend:
        weps, _ = backend.list(WorkloadEndpoint)
    return find_orphans(weps, node)


def check_command(args: argparse.Namespace) -> int:
    node = local_nodename(args.node)
    orphans = local_orphans(args, node)
    if args.output == "json":
        print(dump_json({"node": node, "orphanedEndpoints": orphans}))
    elif args.output == "yaml":
        print(dump_yaml({"node": node, "orphanedEndpoints": orphans}), end="")
    elif not orphans:
        print(f"Node {node}: every workload endpoint has its interface.")
    else:
        headers = ["NAMESPACE", "NAME", "INTERFACE", "ADDRESSES"]
        if args.output == "wide":
            headers += ["CONTAINER", "PROBLEM"]
        rows = []
        for o in orphans:
            row = [o["namespace"], o["name"], o["interface"], ",".join(o["addresses"])]
            if args.output == "wide":
                row += [o["containerID"] or "", o["problem"]]
            rows.append(row)
        print_table(headers, rows)
        print(
            f"Node {node}: {len(orphans)} workload endpoint(s) whose interface or network namespace is gone; "
            "the runtime's CNI DEL (retried) cleans them."
        )
    return 1 if orphans else 0


def register(node_sub: Any) -> None:
    p = node_sub.add_parser(
        "check", help="list this node's workload endpoints whose interface or network namespace is gone"
    )
    p.add_argument("--node", default=None, help="the node (default: $NODENAME, then the host name)")
    p.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    p.set_defaults(func=check_command)
