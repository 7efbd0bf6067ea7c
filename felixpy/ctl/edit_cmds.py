"""felixctl patch, label, validate and version, as calicoctl has them.

``patch KIND NAME -p PATCH [--type merge|json]``: a JSON merge patch (RFC 7386, the default) or
a JSON patch (RFC 6902: add, remove, replace, move, copy, test) applied to the stored resource,
validated as a whole document, written compare-and-swap on the resourceVersion it was read at.
``label KIND NAME KEY=VALUE [--overwrite]`` / ``label KIND NAME KEY --remove``: one label.
``validate -f FILE``: parse and validate, write nothing; lists fields stored but not acted on.
``version``: the client's version and the cluster's (ClusterInformation ``default``'s
calicoVersion, else "unknown").
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from importlib import metadata
from typing import Any

from felixpy.ctl.connect import open_backend
from felixpy.ctl.honoured import policy_rule_warnings, unhonoured
from felixpy.ctl.limits import add_limit_flags
from felixpy.ctl.resource_cmds import (
    DEFAULT_NAMESPACE,
    CommandError,
    add_common,
    add_input_flags,
    check_names,
    label,
    load_objects,
    resolve_kind,
)
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.resources.base import Resource, ResourceError
from felixpy.resources.fields import FieldError
from felixpy.resources.name_rules import check_label_key, check_label_value
from felixpy.resources.parse import parse_document
from felixpy.resources.stored import ClusterInformation

MISSING = object()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise CommandError(f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node, parts[-1]


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise CommandError(f"JSON patch path {path!r} does not exist")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = _child(node, part, path)
    return node


def _remove(doc: Any, path: str) -> Any:
    parent, last = _parent(doc, _pointer(path), path)
    value = _child(parent, last, path)
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return value


def _add(doc: Any, path: str, value: Any) -> None:
    parts = _pointer(path)
    if not parts:
        raise CommandError("JSON patch cannot replace the whole document")
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise CommandError(f"JSON patch path {path!r}: index out of range")
    else:
        raise CommandError(f"JSON patch path {path!r} does not exist")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 on a copy of ``doc``."""
    if not isinstance(ops, list):
        raise CommandError("a JSON patch (--type json) must be a list of operations")
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise CommandError(f"JSON patch operation {i}: needs 'op' and 'path'")
        name, path = op.get("op"), op["path"]
        if name in ("add", "replace", "test") and "value" not in op:
            raise CommandError(f"JSON patch operation {i} ({name}): needs 'value'")
        if name == "add":
            _add(out, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            _remove(out, path)
        elif name == "replace":
            _remove(out, path)
            _add(out, path, copy.deepcopy(op["value"]))
        elif name in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise CommandError(f"JSON patch operation {i} ({name}): needs 'from'")
            value = _remove(out, source) if name == "move" else copy.deepcopy(_get(out, source))
            _add(out, path, value)
        elif name == "test":
            if _get(out, path) != op["value"]:
                raise CommandError(f"JSON patch operation {i}: test of {path!r} failed")
        else:
            raise CommandError(f"JSON patch operation {i}: unknown op {name!r}")
    return out


def _target(args: argparse.Namespace) -> tuple[type[Resource], str, str | None]:
    kind = resolve_kind(args.kind)
    namespace = (args.namespace or DEFAULT_NAMESPACE) if kind.NAMESPACED else None
    check_names(kind, [args.name], namespace)
    return kind, args.name, namespace


def _rewrite(backend: Backend, current: Resource, doc: dict[str, Any]) -> Resource:
    """Validate the edited document and write it compare-and-swap on ``current``'s revision."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else None
    if doc.get("kind") != current.KIND or meta is None or meta.get("name") != current.name:
        raise CommandError(f"{label(current)}: a patch cannot change the kind or metadata.name")
    meta["resourceVersion"] = current.metadata.resource_version
    if type(current).NAMESPACED:
        meta["namespace"] = current.namespace
    obj = parse_document(doc)
    backend.update(obj)
    return obj


def run_patch(args: argparse.Namespace) -> int:
    kind, name, namespace = _target(args)
    try:
        patch = json.loads(args.patch)
    except json.JSONDecodeError as exc:
        raise CommandError(f"-p is not valid JSON: {exc.msg} at column {exc.colno}") from None
    with open_backend(args) as backend:
        try:
            current = backend.get(kind, name, namespace)
        except NotFound:
            raise CommandError(f"resource does not exist: {kind.KIND} '{name}'") from None
        doc = current.to_dict()
        if args.type == "json":
            edited = json_patch(doc, patch)
        else:
            if not isinstance(patch, dict):
                raise CommandError("a merge patch (-p) must be a JSON object")
            edited = merge_patch(doc, patch)
        obj = _rewrite(backend, current, edited)
    print(f"Successfully patched 1 '{kind.KIND}' resource")
    for field in unhonoured(obj):
        print(f"Warning: {label(obj)}: stored but not acted on by felixpy: {field}", file=sys.stderr)
    for warning in policy_rule_warnings(obj):
        print(f"Warning: {label(obj)}: {warning}", file=sys.stderr)
    return 0


def run_label(args: argparse.Namespace) -> int:
    kind, name, namespace = _target(args)
    key, eq, value = args.label.partition("=")
    if args.remove and eq:
        raise CommandError("--remove takes a label key, not KEY=VALUE")
    if not args.remove and not eq:
        raise CommandError("give the label as KEY=VALUE (or KEY with --remove)")
    try:
        check_label_key(key)
        if eq:
            check_label_value(key, value)
    except FieldError as exc:
        raise CommandError(f"invalid label {args.label!r}: {exc.reason}") from None
    with open_backend(args) as backend:
        try:
            current = backend.get(kind, name, namespace)
        except NotFound:
            raise CommandError(f"resource does not exist: {kind.KIND} '{name}'") from None
        labels = current.metadata.labels
        if args.remove:
            if key not in labels:
                raise CommandError(f"{label(current)} has no label '{key}'")
            labels.pop(key)
            done = "removed"
        else:
            if key in labels and labels[key] != value and not args.overwrite:
                raise CommandError(
                    f"{label(current)} already has label '{key}' = '{labels[key]}'; "
                    "add --overwrite to change it"
                )
            labels[key] = value
            done = "set"
        backend.update(current)
    print(f"Successfully {done} label '{key}' on {label(current)}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    objs = load_objects(args)
    if not objs and not args.skip_empty:
        raise CommandError("no resources specified")
    for obj in objs:
        for field in unhonoured(obj):
            print(f"{label(obj)}: {field}: stored but not acted on by felixpy")
        for warning in policy_rule_warnings(obj):
            print(f"{label(obj)}: {warning}")
    print(f"Successfully validated {len(objs)} resource(s)")
    return 0


def run_version(args: argparse.Namespace) -> int:
    try:
        client = metadata.version("felixpy")
    except metadata.PackageNotFoundError:
        client = "unknown"
    print(f"Client Version:    {client}")
    cluster = "unknown"
    try:
        with open_backend(args) as backend:
            info = backend.get(ClusterInformation, "default")
            cluster = getattr(getattr(info, "spec", None), "calico_version", None) or "unknown"
    except (NotFound, DatastoreError, ResourceError, OSError):
        pass
    print(f"Cluster Version:   {cluster}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("patch", help="patch a resource (JSON merge patch, or --type json)")
    p.add_argument("kind", help="resource type")
    p.add_argument("name", help="resource name")
    p.add_argument("-p", "--patch", required=True, help="the patch, JSON")
    p.add_argument(
        "-t", "--type", choices=("merge", "json"), default="merge", help="merge (RFC 7386) or json"
    )
    add_common(p)
    p.set_defaults(func=run_patch)
    p = subparsers.add_parser("label", help="set or remove a label of a resource")
    p.add_argument("kind", help="resource type")
    p.add_argument("name", help="resource name")
    p.add_argument("label", help="KEY=VALUE, or KEY with --remove")
    p.add_argument("--overwrite", action="store_true", help="change a label that has another value")
    p.add_argument("--remove", action="store_true", help="remove the label KEY")
    add_common(p)
    p.set_defaults(func=run_label)
    p = subparsers.add_parser("validate", help="check resources in a file; writes nothing")
    p.add_argument("-f", "--filename", required=True, help="YAML or JSON file or directory, '-' for stdin")
    add_input_flags(p)
    add_common(p)
    add_limit_flags(p)
    p.set_defaults(func=run_validate)
    p = subparsers.add_parser("version", help="client and cluster versions")
    add_common(p)
    p.set_defaults(func=run_version)
