"""Calico's interface names, so operators find the interfaces they expect.

Kubernetes: ``<prefix>`` + first 11 hex chars of sha1("<namespace>.<pod>") (15 chars = IFNAMSIZ-1);
plain CNI: ``<prefix>`` + first 11 chars of the container ID. The CNI plugin and the agent both call
this, so they agree on the name without storing it.
"""

from __future__ import annotations

import hashlib

DEFAULT_PREFIX = "cali"
IFNAMSIZ = 15


def veth_name_for_workload(namespace: str, pod: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return (prefix + digest[:11])[:IFNAMSIZ]


def veth_name_for_container(container_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return (prefix + container_id[:11])[:IFNAMSIZ]
