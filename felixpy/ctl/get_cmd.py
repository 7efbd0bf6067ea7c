"""felixctl get: list resources of a kind, fetch some by name, or those named in a file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from felixpy.ctl.connect import open_backend
from felixpy.ctl.formats import PREFIXES, check_format, custom_columns, go_template
from felixpy.ctl.output import as_list, print_objects
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
        if args.output == "name" or args.output.startswith(PREFIXES):
            print_scripted(args.output, found, single=len(wanted) == 1, kind=kind, revision=revision,
                           all_namespaces=args.all_namespaces)  # fmt: skip
            return 1 if missing else 0
        print_objects(
            found, fmt, single=len(wanted) == 1, all_namespaces=args.all_namespaces, kind=kind,
            revision=revision, context=context,
        )  # fmt: skip
    return 1 if missing else 0


def print_scripted(fmt: str, found: list[Resource], *, single: bool, kind: type[Resource] | None,
                   revision: int | None, all_namespaces: bool) -> None:  # fmt: skip
    """-o name, custom-columns=..., go-template=... (see felixpy.ctl.formats)."""
    if fmt == "name":
        for obj in found:
            print(f"{obj.namespace}/{obj.name}" if all_namespaces and obj.namespace else obj.name)
        return
    head, _, value = fmt.partition("=")
    if head == "custom-columns":
        print(custom_columns(value, [o.to_dict() for o in found]))
        return
    if head == "go-template-file":
        try:
            with open(value, encoding="utf-8") as f:
                value = f.read(1024 * 1024)
        except OSError as exc:
            raise CommandError(f"cannot read template file {value}: {exc.strerror or exc}") from None
    data = found[0].to_dict() if single and len(found) == 1 else as_list(found, kind=kind, revision=revision)
    sys.stdout.write(go_template(value, data))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("get", help="show resources", description="show resources")
    p.add_argument("kind", nargs="?", help="resource type: kind, plural or short name (ippool, gnp...)")
    p.add_argument("names", nargs="*", help="resource names (default: all)")
    p.add_argument("-f", "--filename", help="get the resources named in this file ('-' for stdin)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="namespaced kinds in every namespace")
    p.add_argument(
        "-o", "--output", type=check_format, default="ps", metavar="FORMAT",
        help="ps (default), wide, yaml, json, name, custom-columns=H:.path,..., go-template=T",
    )  # fmt: skip
    add_common(p)
    p.set_defaults(func=run_get)
