"""Pure: what to write so etcd mirrors the Kubernetes API (etcd mode). No I/O.

Mirrored objects carry the annotation ``felixpy.io/synced-from: kubernetes``; only those are ever
deleted, so objects an operator stored by hand with other names are left alone (one with a
Kubernetes object's name is adopted: updated and annotated). Comparing the normalised form
(labels, annotations, spec) makes a repeated pass — after a restart, a failed write, a new leader —
write nothing: the mirror is a full list-and-diff every pass, so nothing a broken watch would
have lost can be lost here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SYNCED = "felixpy.io/synced-from"
KUBE_LABELS = "projectcalico.org/kube-labels"  # the node labels last copied, as Calico records them
SOURCE = "kubernetes"
WEP_LABELS = (
    "projectcalico.org/namespace",
    "projectcalico.org/orchestrator",
    "projectcalico.org/serviceaccount",
)

Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True, slots=True)
class Write:
    op: Literal["create", "update", "delete"]
    key: Key
    body: dict[str, Any] | None  # the wire form to store (create/update)
    revision: str | None  # CAS token (update/delete)


def normal(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SYNCED}
    return {"labels": dict(meta.get("labels") or {}), "annotations": ann, "spec": doc.get("spec") or {}}


def mirror(
    desired: Mapping[Key, dict[str, Any]],
    actual: Mapping[Key, tuple[dict[str, Any], str]],
    *,
    may_be_empty: bool = True,
) -> list[Write]:
    """Writes that make ``actual`` (etcd: wire form, revision) equal ``desired`` (Kubernetes' wire form).

    ``may_be_empty=False`` (Namespaces: a cluster always has some): an empty ``desired`` writes nothing.
    """
    if not desired and not may_be_empty:
        return []
    out: list[Write] = []
    for key, doc in sorted(desired.items()):
        body = _owned(doc)
        have = actual.get(key)
        if have is None:
            out.append(Write("create", key, body, None))
        elif normal(have[0]) != normal(body) or SYNCED not in (have[0].get("metadata") or {}).get(
            "annotations", {}
        ):
            out.append(Write("update", key, body, have[1]))
    for key, (doc, rev) in sorted(actual.items()):
        if key not in desired and (doc.get("metadata") or {}).get("annotations", {}).get(SYNCED) == SOURCE:
            out.append(Write("delete", key, None, rev))
    return out


def _owned(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)}
    keep["annotations"] = {**(meta.get("annotations") or {}), SYNCED: SOURCE}
    out: dict[str, Any] = {"apiVersion": doc.get("apiVersion"), "kind": doc.get("kind"), "metadata": keep}
    if "spec" in doc:  # a ServiceAccount has none
        out["spec"] = doc.get("spec") or {}
    return out


def endpoint_labels(
    pod_labels: Mapping[str, str], *, namespace: str, service_account: str, orchestrator: str = "k8s"
) -> dict[str, str]:
    """A WorkloadEndpoint's labels: its pod's, plus the three Calico ones the CNI ADD writes."""
    return dict(pod_labels) | {
        WEP_LABELS[0]: namespace,
        WEP_LABELS[1]: orchestrator,
        WEP_LABELS[2]: service_account or "default",
    }


def node_labels(
    labels: Mapping[str, str], annotations: Mapping[str, str], kube_labels: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]] | None:
    """A Calico Node's (labels, annotations) with its Kubernetes Node's labels copied (syncLabels), or None
    when nothing changes. Labels copied before and since removed from the Kubernetes Node go; labels set
    on the Calico Node itself stay (Calico's rule, recorded in ``projectcalico.org/kube-labels``)."""
    try:
        before = json.loads(annotations.get(KUBE_LABELS) or "{}")
    except ValueError:
        before = {}
    own = {k: v for k, v in labels.items() if k not in (before if isinstance(before, dict) else {})}
    new_labels = own | dict(kube_labels)
    new_ann = dict(annotations) | {KUBE_LABELS: json.dumps(dict(kube_labels), sort_keys=True)}
    if new_labels == dict(labels) and new_ann == dict(annotations):
        return None
    return new_labels, new_ann
