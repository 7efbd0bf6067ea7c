"""CustomResourceDefinitions for the Calico kinds felixpy stores in Kubernetes, generated from the models.

The CRDs in charts/felixpy/crds/ are this module's output (`python -m felixpy.kube.crds charts/felixpy/crds`),
and a test checks that they are current, so the OpenAPI schema the API server enforces and the pydantic
model felixpy validates with cannot drift apart. Pydantic's JSON Schema is turned into a *structural*
schema as apiextensions.k8s.io/v1 requires: references inlined, every node typed, `Optional[X]` as
`nullable`, `int | str` as `x-kubernetes-int-or-string`, models that accept unknown fields marked
`x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.ippool import IPPool
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.stored import STORED_KINDS, ClusterInformation
from felixpy.resources.tier import Tier

GROUP = "crd.projectcalico.org"
VERSION = "v1"

# Kinds stored as CRDs. Nodes, Pods (workload endpoints), Namespaces and Kubernetes NetworkPolicies
# are native Kubernetes objects in this mode, as in Calico's Kubernetes datastore.
CRD_KINDS: tuple[type[Resource], ...] = (
    IPPool,
    BGPPeer,
    BGPFilter,
    BGPConfiguration,
    NetworkPolicy,
    GlobalNetworkPolicy,
    Tier,
    HostEndpoint,
    FelixConfiguration,
    KubeControllersConfiguration,
    # ClusterInformation keeps the schemaless CRD of IPAM_KINDS below (the agent's IPAM writes it too).
    *(k for k in STORED_KINDS if k is not ClusterInformation),
)

# IPAM objects: schemaless specs (their JSON is IPAM's own, see ipam/), CAS on resourceVersion.
IPAM_KINDS: tuple[tuple[str, str], ...] = (
    ("IPAMBlock", "ipamblocks"),
    ("BlockAffinity", "blockaffinities"),
    ("IPAMHandle", "ipamhandles"),
    ("IPAMConfig", "ipamconfigs"),
    ("ClusterInformation", "clusterinformations"),
)

_DROP = {"title", "default", "description", "examples"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-Schema node into a structural OpenAPI v3 node."""
    if "$ref" in node:
        return _structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return _any_of(node["anyOf"], defs)
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    if out.get("type") == "object":
        _object(out, defs)
    elif out.get("type") == "array":
        out["items"] = _structural(out.get("items", {}), defs) if out.get("items") else {"type": "string"}
    elif "type" not in out:
        out = {"x-kubernetes-preserve-unknown-fields": True}
    return out


def _object(out: dict[str, Any], defs: dict[str, Any]) -> None:
    props = out.get("properties")
    if props is not None:
        out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
    extra = out.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = _structural(extra, defs)
    elif extra is True or (props is None and extra is None):
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    else:
        out.pop("additionalProperties", None)


def _any_of(branches: list[dict[str, Any]], defs: dict[str, Any]) -> dict[str, Any]:
    nullable = any(b.get("type") == "null" for b in branches)
    rest = [b for b in branches if b.get("type") != "null"]
    types = {b.get("type") for b in rest}
    if types == {"integer", "string"}:
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
    elif len(rest) == 1:
        out = _structural(rest[0], defs)
    elif types == {"integer", "number"}:
        out = {"type": "number"}
    else:
        out = {"x-kubernetes-preserve-unknown-fields": True}
    if nullable:
        out["nullable"] = True
    return out


def openapi_schema(kind: type[Resource]) -> dict[str, Any]:
    schema = kind.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    out: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        },
    }
    for field in ("spec", "status"):
        if field in props:
            out["properties"][field] = _structural(props[field], defs)
    if "spec" in schema.get("required", []):
        out["required"] = ["spec"]
    return out


def _crd(kind: str, plural: str, namespaced: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": kind + "List"},
            "versions": [
                {"name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    crds = [_crd(k.KIND, k.PLURAL, k.NAMESPACED, openapi_schema(k)) for k in CRD_KINDS]
    loose = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    crds += [_crd(kind, plural, False, loose) for kind, plural in IPAM_KINDS]
    return crds


def render_files() -> dict[str, str]:
    """File name → YAML text, one CRD per file (Helm installs everything under crds/)."""
    files = {}
    for crd in all_crds():
        text = "# Generated by `python -m felixpy.kube.crds`; do not edit.\n" + yaml.safe_dump(
            crd, sort_keys=False
        )
        files[crd["metadata"]["name"] + ".yaml"] = text
    return files


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else "charts/felixpy/crds")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_files().items():
        (out_dir / name).write_text(text)
    print(f"wrote {len(render_files())} CRDs to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
