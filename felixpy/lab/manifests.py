"""The resources ``up`` applies through ``felixctl apply``: pool, BGPConfiguration, Nodes, peers.

Pure: plan in, list of resource dicts out (projectcalico.org/v3 YAML shapes).
"""

from __future__ import annotations

from typing import Any

import yaml

from felixpy.lab.plan import DEFAULT_AS, RR_CLUSTER_ID, TOR_AS, NodePlan, Plan

CALICO = "projectcalico.org/v3"
Doc = dict[str, Any]


def _meta(name: str, labels: dict[str, str] | None = None) -> Doc:
    meta: Doc = {"name": name}
    if labels:
        meta["labels"] = labels
    return meta


def ip_pool(plan: Plan) -> Doc:
    opts = plan.options
    mode = "CrossSubnet" if opts.cross_subnet else "Always"
    return {
        "apiVersion": CALICO,
        "kind": "IPPool",
        "metadata": _meta("default-ipv4-ippool"),
        "spec": {
            "cidr": opts.pool,
            "blockSize": opts.block_size,
            "ipipMode": mode if opts.encap == "ipip" else "Never",
            "vxlanMode": mode if opts.encap == "vxlan" else "Never",
            "natOutgoing": False,
            "nodeSelector": "all()",
        },
    }


def mesh_enabled(plan: Plan) -> bool:
    return plan.options.route_reflectors == 0 and plan.options.tor == "none"


def bgp_configuration(plan: Plan) -> Doc:
    return {
        "apiVersion": CALICO,
        "kind": "BGPConfiguration",
        "metadata": _meta("default"),
        "spec": {
            "nodeToNodeMeshEnabled": mesh_enabled(plan),
            "asNumber": DEFAULT_AS,
            "logSeverityScreen": "Info",
            **({} if plan.options.bfd else {"nodePeerFailureDetectionMode": "None"}),
        },
    }


def node_labels(node: NodePlan) -> dict[str, str]:
    labels = {"kubernetes.io/hostname": node.name, "rack": f"rack{node.rack}"}
    if node.role == "route-reflector":
        labels["route-reflector"] = "true"
    return labels


def node_resource(plan: Plan, node: NodePlan) -> Doc:
    bgp: Doc = {"ipv4Address": node.cidr}
    if plan.options.tor == "bird":
        bgp["asNumber"] = node.asn
    if node.role == "route-reflector":
        bgp["routeReflectorClusterID"] = RR_CLUSTER_ID
    return {
        "apiVersion": CALICO,
        "kind": "Node",
        "metadata": _meta(node.name, node_labels(node)),
        "spec": {"bgp": bgp, "addresses": [{"address": node.address, "type": "InternalIP"}]},
    }


def bgp_peers(plan: Plan) -> list[Doc]:
    peers: list[Doc] = []
    if plan.options.route_reflectors:
        peers.append({
            "apiVersion": CALICO,
            "kind": "BGPPeer",
            "metadata": _meta("peer-with-route-reflectors"),
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
        })
    if plan.options.tor == "bird":
        for rack in plan.racks:
            peers.append({
                "apiVersion": CALICO,
                "kind": "BGPPeer",
                "metadata": _meta(f"rack{rack.index}-tor"),
                "spec": {
                    "nodeSelector": f"rack == 'rack{rack.index}'",
                    "peerIP": rack.gateway,
                    "asNumber": TOR_AS,
                    **({"failureDetectionMode": "BFDIfDirectlyConnected"} if plan.options.bfd else {}),
                },
            })
    return peers


def cluster_resources(plan: Plan) -> list[Doc]:
    """Everything ``up`` applies before starting the agents."""
    docs = [ip_pool(plan), bgp_configuration(plan)]
    docs += [node_resource(plan, n) for n in plan.nodes]
    docs += bgp_peers(plan)
    return docs


def namespace(name: str, labels: dict[str, str]) -> Doc:
    """A ``v1 Namespace`` (the labels namespace selectors match on)."""
    labels = {"kubernetes.io/metadata.name": name, **labels}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, labels)}


def to_yaml(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
