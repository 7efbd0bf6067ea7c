"""felixctl datastore migrate export | import | lock | unlock, with calicoctl's semantics.

- ``lock`` sets ClusterInformation ``default`` ``spec.datastoreReady`` to false (creating the
  resource if absent) and prints ``Datastore locked.``; ``unlock`` sets it back to true
  (``Datastore unlocked.``). felixpy's IPAM refuses new allocations while the datastore is locked
  (ipam.ipam), and ``ipam split`` and ``export`` refuse to run unless it is locked.
- ``export`` (locked datastore only) writes, on stdout, the YAML of every stored resource of the
  kinds calicoctl exports (workload endpoints, profiles and the ``knp.default.*`` policies mirrored
  from Kubernetes are left out, as calicoctl leaves them), a line ``===``, the ClusterInformation
  as JSON, a line ``===``, then the IPAM data as JSON in calicoctl's shape: ``block_affinities``,
  ``blocks``, ``handles`` (lists of ``{"Key": <etcd path>, "Value": <stored JSON>, "TTL": 0}``) and
  ``config`` (one such entry); empty ones left out, as calicoctl leaves them out. felixpy stores
  IPAM at Calico's paths with Calico's values, so the two tools read each other's exports.
  Server-side metadata (resourceVersion, uid, creationTimestamp) is dropped.
- ``import -f FILE`` refuses a datastore that already holds any of those resources, a
  ClusterInformation (a locked datastore has one) or any IPAM key, as calicoctl refuses a non-empty
  target; otherwise it writes the ClusterInformation locked (clusterGUID and calicoVersion from
  the file), creates every resource (all or nothing, as ``create``), then the IPAM keys (affinities,
  blocks, handles, config: calicoctl's order), and leaves the datastore locked for the operator to
  check and ``unlock``. An export in felixpy's earlier shape (``{"keys": {path: value}}``) still
  imports.

The order of kinds is calicoctl's (tiers before policies, nodes before what names nodes).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from felixpy.ctl.connect import open_backend, open_kv
from felixpy.ctl.limits import Limits, read_source
from felixpy.ctl.resource_cmds import CommandError, write_all
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import Conflict, NotFound
from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration, BGPFilter, BGPPeer
from felixpy.resources.endpoint import HostEndpoint
from felixpy.resources.felixconfig import FelixConfiguration
from felixpy.resources.ippool import IPPool
from felixpy.resources.kubecontrollers import KubeControllersConfiguration
from felixpy.resources.node import Node
from felixpy.resources.parse import parse_document, parse_documents
from felixpy.resources.policy import GlobalNetworkPolicy, NetworkPolicy
from felixpy.resources.stored import (
    ClusterInformation,
    GlobalNetworkSet,
    IPAMConfiguration,
    IPReservation,
    NetworkSet,
)
from felixpy.resources.tier import Tier

SEPARATOR = "===\n"
IPAM_PREFIX = "/calico/ipam/v2/"
# calicoctl's IPAM export: JSON name -> the key paths it holds (checked on import), in import order.
IPAM_PARTS: tuple[tuple[str, str], ...] = (
    ("block_affinities", IPAM_PREFIX + "host/"),
    ("blocks", IPAM_PREFIX + "assignment/"),
    ("handles", IPAM_PREFIX + "handle/"),
)
IPAM_CONFIG_KEY = IPAM_PREFIX + "config"
K8S_POLICY_PREFIX = "knp.default."
# calicoctl's export order, plus IPAMConfiguration (felixpy keeps it as a resource too).
EXPORTED: tuple[type[Resource], ...] = (
    IPPool,
    BGPPeer,
    Tier,
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    KubeControllersConfiguration,
    NetworkPolicy,
    NetworkSet,
    Node,
    BGPConfiguration,
    FelixConfiguration,
    IPReservation,
    BGPFilter,
    IPAMConfiguration,
)
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")


class LockError(CommandError):
    """The datastore is (not) locked when the command needs the other state."""


# ---- the lock --------------------------------------------------------------------------------------
def is_locked(backend: Backend) -> bool:
    """Locked = ClusterInformation ``default`` says ``datastoreReady: false`` (absent = not locked)."""
    try:
        info = backend.get(ClusterInformation, "default")
    except NotFound:
        return False
    return isinstance(info, ClusterInformation) and info.spec.datastore_ready is False


def require_locked(backend: Backend, what: str) -> None:
    if not is_locked(backend):
        raise LockError(
            f"datastore is not locked. Run the `felixctl datastore migrate lock` command in order to {what}"
        )


def _info_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "ClusterInformation",
        "metadata": {"name": "default"},
        "spec": spec,
    }


def set_ready(backend: Backend, ready: bool) -> None:
    """Set ClusterInformation ``default`` ``spec.datastoreReady`` (compare-and-swap, bounded retries)."""
    for _ in range(20):
        try:
            cur: Resource | None = backend.get(ClusterInformation, "default")
        except NotFound:
            cur = None
        doc = cur.to_dict() if cur is not None else _info_doc({})
        doc.setdefault("spec", {})["datastoreReady"] = ready
        new = parse_document(doc)
        try:
            if cur is None:
                backend.create(new)
            else:
                backend.update(new)
            return
        except Conflict:
            continue
    raise CommandError("ClusterInformation default: changed by another writer 20 times in a row; try again")


def run_lock(args: argparse.Namespace) -> int:
    with open_backend(args) as backend:
        set_ready(backend, False)
    print("Datastore locked.")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    with open_backend(args) as backend:
        set_ready(backend, True)
    print("Datastore unlocked.")
    return 0


# ---- export ----------------------------------------------------------------------------------------
def _clean(obj: Resource) -> dict[str, Any]:
    doc = obj.to_dict()
    meta = doc.get("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    return doc


def exported(backend: Backend) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in EXPORTED:
        items, _ = backend.list(kind)
        for obj in sorted(items, key=lambda o: (o.namespace or "", o.name)):
            if kind is NetworkPolicy and obj.name.startswith(K8S_POLICY_PREFIX):
                continue  # mirrored from Kubernetes; the target cluster mirrors its own
            out.append(_clean(obj))
    return out


def run_export(args: argparse.Namespace) -> int:
    with open_backend(args) as backend, open_kv(args) as kv:
        require_locked(backend, "begin migration")
        docs = exported(backend)
        info = _clean(backend.get(ClusterInformation, "default"))
        items, _ = kv.list(IPAM_PREFIX)
        ipam = {i.key: json.loads(i.value) if i.value else None for i in items}
    out = sys.stdout
    if docs:
        out.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))
    out.write(SEPARATOR)
    out.write(json.dumps(info, indent=2) + "\n")
    out.write(SEPARATOR)
    out.write(json.dumps(ipam_export(ipam), indent=2) + "\n")
    print(f"Exported {len(docs)} resource(s) and {len(ipam)} IPAM key(s).", file=sys.stderr)
    return 0


def ipam_export(keys: dict[str, Any]) -> dict[str, Any]:
    """IPAM's stored keys in calicoctl's export shape (``migrateIPAM``'s JSON)."""
    out: dict[str, Any] = {}
    for name, prefix in IPAM_PARTS:
        entries = [{"Key": k, "Value": keys[k], "TTL": 0} for k in sorted(keys) if k.startswith(prefix)]
        if entries:
            out[name] = entries
    if IPAM_CONFIG_KEY in keys:
        out["config"] = {"Key": IPAM_CONFIG_KEY, "Value": keys[IPAM_CONFIG_KEY], "TTL": 0}
    other = sorted(
        k for k in keys if k != IPAM_CONFIG_KEY and not any(k.startswith(p) for _, p in IPAM_PARTS)
    )
    if other:
        raise CommandError(
            f"IPAM key {other[0]!r} is none of calicoctl's kinds (affinity, block, handle, config)"
        )
    return out


def ipam_import(doc: Any, source: str) -> dict[str, Any]:
    """The keys to write from an export's IPAM part: calicoctl's shape, or felixpy's earlier one."""
    if not isinstance(doc, dict):
        raise CommandError(f"{source}: the IPAM part must be a JSON object")
    if "keys" in doc and isinstance(doc["keys"], dict):  # felixpy's earlier export
        return dict(doc["keys"])
    unknown = sorted(set(doc) - {name for name, _ in IPAM_PARTS} - {"config"})
    if unknown:
        raise CommandError(
            f"{source}: unknown IPAM part {unknown[0]!r} (block_affinities, blocks, handles, config)"
        )
    keys: dict[str, Any] = {}
    parts = [(name, prefix, doc.get(name) or []) for name, prefix in IPAM_PARTS]
    if doc.get("config") is not None:
        parts.append(("config", IPAM_CONFIG_KEY, [doc["config"]]))
    for name, prefix, entries in parts:
        if not isinstance(entries, list):
            raise CommandError(f"{source}: IPAM part {name!r} must be a list")
        for i, entry in enumerate(entries):
            key = entry.get("Key") if isinstance(entry, dict) else None
            if not isinstance(key, str) or not key.startswith(prefix) or "Value" not in entry:
                raise CommandError(
                    f"{source}: IPAM {name}[{i}] needs a Key under {prefix} and a Value, "
                    "as calicoctl writes them"
                )
            keys[key] = entry["Value"]
    return keys


# ---- import ----------------------------------------------------------------------------------------
def split_export(text: str, source: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    parts = text.split(SEPARATOR)
    if len(parts) != 3:
        raise CommandError(
            f"{source} is not an export: it needs three parts separated by lines '==='; "
            "create it with `felixctl datastore migrate export`"
        )
    try:
        info = json.loads(parts[1])
        ipam = json.loads(parts[2])
    except ValueError as exc:
        raise CommandError(f"{source}: the ClusterInformation or IPAM part is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise CommandError(f"{source}: the ClusterInformation part must be a JSON object")
    keys = ipam_import(ipam, source)
    bad = [k for k in keys if not isinstance(k, str) or not k.startswith(IPAM_PREFIX)]
    if bad:
        raise CommandError(f"{source}: IPAM key {bad[0]!r} is not under {IPAM_PREFIX}")
    return parts[0], info, keys


def not_empty(backend: Backend, kv: Any) -> str | None:
    """What makes the target non-empty (calicoctl refuses to import into it), or None."""
    kinds: tuple[type[Resource], ...] = (*EXPORTED, ClusterInformation)
    for kind in kinds:
        items, _ = backend.list(kind)
        items = [o for o in items if not (kind is NetworkPolicy and o.name.startswith(K8S_POLICY_PREFIX))]
        if items:
            return f"found existing {kind.KIND} resource {items[0].name!r}"
    items, _ = kv.list(IPAM_PREFIX)
    if items:
        return f"found existing IPAM data ({items[0].key})"
    return None


def run_import(args: argparse.Namespace) -> int:
    source = "stdin" if args.filename == "-" else args.filename
    text = read_source(args.filename, Limits.from_args(args))
    v3_text, info_doc, ipam_keys = split_export(text, source)
    objs = parse_documents(v3_text) if v3_text.strip() else []
    info_spec = info_doc.get("spec") or {}
    with open_backend(args) as backend, open_kv(args) as kv:
        why = not_empty(backend, kv)
        if why:
            raise CommandError(
                f"datastore already has Calico resources: {why}. Import only into an empty datastore"
            )
        kept = {k: v for k, v in info_spec.items() if k in ("clusterGUID", "calicoVersion", "clusterType")}
        info = parse_document(_info_doc({**kept, "datastoreReady": False}))
        backend.create(info)  # locked from the start: agents wait until the operator unlocks
    if objs:
        write_all(args, "create", objs)
    print("Importing IPAM resources")
    with open_kv(args) as kv:
        for key in ipam_keys:  # calicoctl's order: affinities, blocks, handles, config
            value = ipam_keys[key]
            kv.put(key, json.dumps(value, separators=(",", ":")).encode())
    print(f"Successfully applied {len(ipam_keys)} IPAM resource(s)")
    print(
        "Datastore information successfully imported. The datastore stays locked: check it, then run "
        "`felixctl datastore migrate unlock`."
    )
    return 0


def register(subparsers: Any) -> None:
    ds = subparsers.add_parser("datastore", help="datastore migration: export, import, lock, unlock")
    ds_sub = ds.add_subparsers(dest="datastore_command", metavar="SUBCOMMAND")
    ds_sub.required = True
    migrate = ds_sub.add_parser("migrate", help="move every resource and IPAM record to another datastore")
    sub = migrate.add_subparsers(dest="migrate_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("export", help="print every resource (YAML), ClusterInformation and IPAM (JSON)")
    p.set_defaults(func=run_export)
    p = sub.add_parser("import", help="load an export into an empty datastore (left locked)")
    p.add_argument("-f", "--filename", required=True, help="the export file, or - for stdin")
    p.set_defaults(func=run_import)
    p = sub.add_parser("lock", help="set ClusterInformation datastoreReady=false")
    p.set_defaults(func=run_lock)
    p = sub.add_parser("unlock", help="set ClusterInformation datastoreReady=true")
    p.set_defaults(func=run_unlock)
