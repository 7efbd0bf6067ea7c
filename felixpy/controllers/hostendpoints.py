"""Auto host endpoints (``spec.controllers.node.hostEndpoint.autoCreate: Enabled``), as Calico makes them.

One HostEndpoint ``<node>-auto-hep`` per Node: ``interfaceName: "*"``, ``expectedIPs`` = the node's BGP
v4/v6 addresses, IPIP and VXLAN tunnel addresses and ``spec.addresses``, ``profiles:
[projectcalico-default-allow]``, the node's labels plus ``projectcalico.org/created-by:
calico-kube-controllers``. Only HostEndpoints with that label are ever changed or deleted, and they
are deleted when their node is gone or the feature is turned off (the sub-controller always runs).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

import structlog

from felixpy.datastore.errors import AlreadyExists, Conflict, NotFound
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.node import Node

log = structlog.get_logger(__name__)

CREATED_BY = "projectcalico.org/created-by"
CREATOR = "calico-kube-controllers"
SUFFIX = "-auto-hep"
DEFAULT_ALLOW = "projectcalico-default-allow"
MAX_NAME = 253


def hep_name(node: str) -> str:
    name = node + SUFFIX
    if len(name) <= MAX_NAME:
        return name
    digest = base64.urlsafe_b64encode(hashlib.sha256(node.encode()).digest()).decode()
    digest = "".join(c for c in digest if c not in "-_.=")
    return (digest + SUFFIX).lower()[:MAX_NAME]


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_interface(str(text)).ip)
    except ValueError:
        return None


def desired(node: Node) -> dict[str, Any]:
    """The wire form of ``node``'s auto host endpoint (pure)."""
    bgp = node.spec.bgp
    candidates = [
        bgp.ipv4_address if bgp else None,
        bgp.ipv6_address if bgp else None,
        bgp.ipv4_ipip_tunnel_addr if bgp else None,
        node.spec.ipv4_vxlan_tunnel_addr,
        node.spec.ipv6_vxlan_tunnel_addr,
        *(a.address for a in node.spec.addresses),
    ]
    ips = sorted({ip for c in candidates if (ip := _ip(str(c) if c else None))})
    return {
        "metadata": {
            "name": hep_name(node.name),
            "labels": dict(node.metadata.labels) | {CREATED_BY: CREATOR},
        },
        "spec": {"node": node.name, "interfaceName": "*", "expectedIPs": ips, "profiles": [DEFAULT_ALLOW]},
    }


def _same(hep: HostEndpoint, want: dict[str, Any]) -> bool:
    have, norm = hep.to_dict(), HostEndpoint.model_validate(want).to_dict()
    return bool(
        have["metadata"].get("labels") == norm["metadata"].get("labels") and have["spec"] == norm["spec"]
    )


def sync(backend: Any, nodes: Iterable[Node], heps: Iterable[HostEndpoint], *, enabled: bool) -> int:
    """Create, update or delete auto host endpoints; returns the writes made. CAS; a lost race waits."""
    mine = {h.name: h for h in heps if h.metadata.labels.get(CREATED_BY) == CREATOR}
    wanted = {w["metadata"]["name"]: w for w in (desired(n) for n in nodes)} if enabled else {}
    n = 0
    for name, want in sorted(wanted.items()):
        have = mine.get(name)
        try:
            if have is None:
                backend.create(HostEndpoint.model_validate(want))
                op = "create"
            elif not _same(have, want):
                obj = HostEndpoint.model_validate(want)
                obj.metadata.resource_version = have.metadata.resource_version
                backend.update(obj)
                op = "update"
            else:
                continue
        except (AlreadyExists, Conflict, NotFound) as err:
            log.info("autohep.write_lost", hostendpoint=name, error=str(err))
            continue
        n += 1
        log.info("autohep.written", hostendpoint=name, op=op, expected_ips=want["spec"]["expectedIPs"])
    for name, have in sorted(mine.items()):
        if name in wanted:
            continue
        try:
            backend.delete(HostEndpoint, name, None, revision=have.metadata.resource_version)
        except (Conflict, NotFound):
            continue
        n += 1
        log.info("autohep.written", hostendpoint=name, op="delete", reason="node gone or autoCreate off")
    return n
