"""``status``: the lab as JSON (the tests' contract, see status_schema.json) or as tables."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from felixpy.lab import agents
from felixpy.lab.names import LabNames
from felixpy.lab.state import LabState


def schema() -> dict[str, Any]:
    return dict(json.loads(resources.files("felixpy.lab").joinpath("status_schema.json").read_text()))


def to_json(names: LabNames, st: LabState) -> dict[str, Any]:
    plan = st.plan
    return {
        "name": st.name,
        "phase": st.phase,
        "datastore": {
            "type": "etcdv3", "endpoints": plan.etcd_endpoints, "netns": names.etcd,
            "members": [{"role": p.role, "pid": p.pid} for p in st.processes if p.role.startswith("etcd")],
        },
        "fabric": names.fabric,
        "options": plan.to_json()["options"],
        "nodes": [
            {"name": n.name, "netns": n.netns, "address": n.address, "prefixlen": n.prefixlen, "rack": n.rack,
             "asn": n.asn, "role": n.role, "run_dir": str(names.node_dir(n.name)),
             "bgp": agents.status_rows(names, n)}
            for n in plan.nodes
        ],
        "pods": [
            {"namespace": p.namespace, "name": p.name, "labels": p.labels, "node": p.node, "netns": p.netns,
             "ip": p.ip, "serve": p.serve, "ports": p.ports, "deleting": p.deleting}
            for p in st.pods
        ],
        "namespaces": st.namespaces,
    }


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    return "\n".join([line, fmt(headers), line, *(fmt(r) for r in rows), line])


def _bgp_summary(names: LabNames, st: LabState, node_name: str) -> str:
    node = st.plan.node(node_name)
    try:
        _, rows = agents.node_status(names, st.plan, node)
    except Exception as exc:  # status must print even when a node is broken
        return f"error: {exc}"
    if not rows:
        return "no sessions"
    return ", ".join(f"{r['peer']} {r['info'] or r['state']}" for r in rows)


def _ports_text(ports: list[dict[str, Any]]) -> str:
    return ",".join(f"{p['name']}={p['port']}/{str(p['protocol']).lower()}" for p in ports) or "-"


def to_text(names: LabNames, st: LabState, *, bgp: bool = True) -> str:
    plan = st.plan
    out = [f"lab {st.name} ({st.phase}); etcd {plan.etcd_endpoint} in {names.etcd}; fabric {names.fabric}"]
    node_rows = [
        [n.name, n.role, n.netns, n.cidr, str(n.rack), str(n.asn),
         _bgp_summary(names, st, n.name) if bgp else "-"]
        for n in plan.nodes
    ]
    out.append(_table(["NODE", "ROLE", "NETNS", "ADDRESS", "RACK", "AS", "BGP SESSIONS"], node_rows))
    pod_rows = [
        [f"{p.namespace}/{p.name}" + (" (deleting)" if p.deleting else ""), p.node, p.ip or "-",
         ",".join(f"{k}={v}" for k, v in p.labels.items()),
         ",".join(map(str, p.serve)) or "-", _ports_text(p.ports)]
        for p in st.pods
    ]
    headers = ["POD", "NODE", "IP", "LABELS", "SERVES", "PORTS"]
    out.append(_table(headers, pod_rows) if pod_rows else "no pods")
    return "\n".join(out)
