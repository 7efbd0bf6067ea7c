"""felixctl get: list resources of a kind, fetch some by name, or those named in a file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from felixpy.ctl.connect import open_backend
from felixpy.ctl.output import print_objects
from felixpy.ctl.resource_cmds import (
    DEFAULT_NAMESPACE,
    CommandError,
    add_common,
    check_names,
    load_objects,
    resolve_kind,
)
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import NotFound
from felixpy.resources.base import Resource
from felixpy.resources.bgp import BGPConfiguration
from felixpy.resources.node import Node

OUTPUTS = ("ps", "table", "wide", "yaml", "json")
Target = tuple[type[Resource], str, str | None]


def targets(args: argparse.Namespace) -> tuple[type[Resource] | None, list[Target]]:
    """The kind asked for and the (kind, name, namespace) of each resource asked for by name."""
    if args.filename:
        if args.kind:
            raise CommandError("give either -f FILE or KIND [NAME...], not both")
        objs = load_objects(args)
        kinds = {type(o) for o in objs}
        return (kinds.pop() if len(kinds) == 1 else None), [(type(o), o.name, o.namespace) for o in objs]
    if not args.kind:
        raise CommandError("get needs a resource type (e.g. ippool, bgppeer, node, gnp) or -f FILE")
    kind = resolve_kind(args.kind)
    if args.all_namespaces and args.names:
        raise CommandError("a resource cannot be fetched by name across all namespaces (-A); use -n")
    namespace = (args.namespace or DEFAULT_NAMESPACE) if kind.NAMESPACED else None
    check_names(kind, list(args.names), namespace if args.namespace else None)
    return kind, [(kind, name, namespace) for name in args.names]


def context_for(backend: Backend, kind: type[Resource] | None, fmt: str) -> dict[str, Any]:
    """Facts some tables show: the cluster AS number, inherited by Nodes without their own."""
    if kind is not Node or fmt != "wide":
        return {}
    try:
        config = backend.get(BGPConfiguration, "default")
    except NotFound:
        return {}
    asn = getattr(getattr(config, "spec", None), "as_number", None)
    return {"default_asn": asn} if asn is not None else {}


def run_get(args: argparse.Namespace) -> int:
    kind, wanted = targets(args)
    fmt = "table" if args.output == "ps" else args.output
    found: list[Resource] = []
    missing = 0
    revision: int | None = None
    with open_backend(args) as backend:
        if wanted:
            for k, name, namespace in wanted:
                try:
                    found.append(backend.get(k, name, namespace))
                except NotFound:
                    where = f"{namespace}/{name}" if namespace else name
                    print(f"resource does not exist: {k.KIND} '{where}'", file=sys.stderr)
                    missing += 1
        else:
            assert kind is not None
            scope = None
            if kind.NAMESPACED and not args.all_namespaces:
                scope = args.namespace or DEFAULT_NAMESPACE
            found, revision = backend.list(kind, scope)
            found.sort(key=lambda o: (o.namespace or "", o.name))
        context = context_for(backend, kind, fmt)
    if found or not wanted:
        print_objects(
            found, fmt, single=len(wanted) == 1, all_namespaces=args.all_namespaces, kind=kind,
            revision=revision, context=context,
        )  # fmt: skip
    return 1 if missing else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("get", help="show resources", description="show resources")
    p.add_argument("kind", nargs="?", help="resource type: kind, plural or short name (ippool, gnp...)")
    p.add_argument("names", nargs="*", help="resource names (default: all)")
    p.add_argument("-f", "--filename", help="get the resources named in this file ('-' for stdin)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="namespaced kinds in every namespace")
    p.add_argument("-o", "--output", choices=OUTPUTS, default="ps", help="ps (default), wide, yaml, json")
    add_common(p)
    p.set_defaults(func=run_get)
