"""felixctl apply / create / replace / delete: resources from files, or by kind and name.

Every document of a file is parsed and validated before anything is written: one bad
document means nothing changes. `create` first checks that none of the resources exist,
and `replace` that all of them do (with the given resourceVersion, when one is given), so a
refusal there also writes nothing. A datastore failure part-way through a batch (a race)
reports how many were written before it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from felixpy.ctl.connect import open_backend
from felixpy.ctl.pool_guard import PoolInUseError, guard_pool_deletes
from felixpy.ctl.tier_guard import check_policy_tiers, guard_tier_deletes
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import AlreadyExists, Conflict, DatastoreError, NotFound
from felixpy.resources.base import Resource, ResourceError
from felixpy.resources.fields import FieldError
from felixpy.resources.ippool import IPPool, check_pool_against
from felixpy.resources.parse import parse_documents
from felixpy.resources.registry import kind_by_name
from felixpy.resources.tier import Tier

PAST = {"apply": "applied", "create": "created", "replace": "replaced", "delete": "deleted"}
DEFAULT_NAMESPACE = "default"


class CommandError(Exception):
    """A user-facing failure: printed as ``Failed to execute command: <message>``, exit code 1."""


def read_source(filename: str) -> str:
    """The text of ``filename``, or of stdin for ``-``."""
    if filename == "-":
        return sys.stdin.read()
    try:
        with open(filename, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"cannot read {filename}: {exc.strerror or exc}") from None


def label(obj: Resource) -> str:
    where = f"{obj.namespace}/" if type(obj).NAMESPACED and obj.namespace else ""
    return f"{obj.KIND} '{where}{obj.name}'"


def load_objects(args: argparse.Namespace) -> list[Resource]:
    """Parse ``-f`` and give namespaced objects their namespace (-n, else `default`)."""
    objs = parse_documents(read_source(args.filename))
    wanted = getattr(args, "namespace", None)
    for index, obj in enumerate(objs, start=1):
        if not type(obj).NAMESPACED:
            continue
        if obj.namespace and wanted and obj.namespace != wanted:
            raise ResourceError(
                f"namespace '{obj.namespace}' does not match the namespace '{wanted}' given with -n",
                field="metadata.namespace", kind=obj.KIND, name=obj.name, index=index,
            )  # fmt: skip
        obj.metadata.namespace = obj.namespace or wanted or DEFAULT_NAMESPACE
    return objs


def resolve_kind(name: str) -> type[Resource]:
    kind = kind_by_name(name)
    if kind is None:
        raise CommandError(f"resource type '{name}' is not supported")
    return kind


def summary(verb: str, objs: list[Resource]) -> str:
    kinds = {o.KIND for o in objs}
    what = f"'{next(iter(kinds))}' " if len(kinds) == 1 else ""
    return f"{len(objs)} {what}resource(s)"


def _exists(backend: Backend, obj: Resource) -> Resource | None:
    try:
        return backend.get(type(obj), obj.name, obj.namespace)
    except NotFound:
        return None


def precheck(backend: Backend, objs: list[Resource], verb: str) -> None:
    """Refuse the whole batch, before any write, when create/replace/delete cannot succeed."""
    if verb != "delete":
        check_pools(backend, objs)
        check_policy_tiers(backend, objs)
    seen: set[tuple[str, str | None, str]] = set()
    for index, obj in enumerate(objs, start=1):
        key = (obj.KIND, obj.namespace, obj.name)
        if verb == "create" and key in seen:
            raise CommandError(f"document {index}: {label(obj)} appears more than once")
        seen.add(key)
        if verb not in ("create", "replace"):
            continue
        current = _exists(backend, obj)
        if verb == "create" and current is not None:
            raise CommandError(f"document {index}: resource already exists: {label(obj)}")
        if verb == "replace":
            if current is None:
                raise CommandError(f"document {index}: resource does not exist: {label(obj)}")
            wanted = obj.metadata.resource_version
            if wanted and wanted != current.metadata.resource_version:
                raise CommandError(f"document {index}: {stale(obj, current)}")


def check_pools(backend: Backend, objs: list[Resource]) -> None:
    """IP pools in the batch must not overlap each other or stored pools, nor change cidr/blockSize."""
    if not any(isinstance(o, IPPool) for o in objs):
        return
    pools: dict[str, IPPool] = {p.name: p for p in backend.list(IPPool)[0] if isinstance(p, IPPool)}
    for index, obj in enumerate(objs, start=1):
        if not isinstance(obj, IPPool):
            continue
        try:
            check_pool_against(obj, pools.values())
        except FieldError as exc:
            error = ResourceError(exc.reason, field=exc.field, kind=obj.KIND, name=obj.name)
            raise error.located(index=index) from None
        pools[obj.name] = obj


def stale(obj: Resource, current: Resource | None) -> str:
    now = f" (now {current.metadata.resource_version})" if current is not None else ""
    return (
        f"update conflict: {label(obj)} was modified since resourceVersion "
        f"{obj.metadata.resource_version} was read{now}; get it again and retry"
    )


def write_one(backend: Backend, obj: Resource, verb: str) -> None:
    kind = type(obj)
    if verb == "apply":
        backend.apply(obj)
    elif verb == "create":
        obj.metadata.resource_version = None
        backend.create(obj)
    elif verb == "delete":
        backend.delete(kind, obj.name, obj.namespace)
    else:
        if not obj.metadata.resource_version:
            current = backend.get(kind, obj.name, obj.namespace)
            obj.metadata.resource_version = current.metadata.resource_version
            obj.metadata.uid = obj.metadata.uid or current.metadata.uid
            meta, old = obj.metadata, current.metadata
            meta.creation_timestamp = meta.creation_timestamp or old.creation_timestamp
        backend.update(obj)


def explain(exc: DatastoreError, obj: Resource, backend: Backend) -> str:
    if isinstance(exc, AlreadyExists):
        return f"resource already exists: {label(obj)}"
    if isinstance(exc, NotFound):
        return f"resource does not exist: {label(obj)}"
    if isinstance(exc, Conflict) and obj.metadata.resource_version:
        return stale(obj, _exists(backend, obj))
    return f"{label(obj)}: {exc}"


def write_all(args: argparse.Namespace, verb: str, objs: list[Resource]) -> int:
    skip_missing = getattr(args, "skip_not_found", False)
    with open_backend(args) as backend:
        precheck(backend, objs, verb)
        if verb == "delete":
            _guard(args, backend, [o for o in objs if isinstance(o, IPPool)])
            guard_tier_deletes(backend, objs)
        done: list[Resource] = []
        for obj in objs:
            try:
                write_one(backend, obj, verb)
            except NotFound:
                if verb == "delete" and skip_missing:
                    continue
                if not done:
                    raise CommandError(explain(NotFound(), obj, backend)) from None
                return partial(verb, done, objs, explain(NotFound(), obj, backend))
            except (DatastoreError, ValueError) as exc:
                if isinstance(exc, DatastoreError):
                    reason = explain(exc, obj, backend)
                else:
                    reason = f"{label(obj)}: {exc}"
                if not done:
                    raise CommandError(reason) from None
                return partial(verb, done, objs, reason)
            done.append(obj)
    print(f"Successfully {PAST[verb]} {summary(verb, done)}")
    return 0


def partial(verb: str, done: list[Resource], objs: list[Resource], reason: str) -> int:
    print(f"Partial success: {PAST[verb]} the first {len(done)} out of {summary(verb, objs)}:")
    print(f"Hit error: {reason}", file=sys.stderr)
    return 1


def run_file_verb(args: argparse.Namespace) -> int:
    objs = load_objects(args)
    if not objs:
        raise CommandError(f"no resources specified in {'stdin' if args.filename == '-' else args.filename}")
    return write_all(args, args.verb, objs)


def _guard(args: argparse.Namespace, backend: Backend, targets: list[Any]) -> None:
    try:
        guard_pool_deletes(args, backend, targets)
    except PoolInUseError as err:
        raise CommandError(str(err)) from None


def run_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind:
            raise CommandError("give either -f FILE or KIND NAME..., not both")
        return run_file_verb(args)
    if not args.kind or not args.names:
        raise CommandError("delete needs -f FILE, or a resource type and at least one name")
    kind = resolve_kind(args.kind)
    namespace = (args.namespace or DEFAULT_NAMESPACE) if kind.NAMESPACED else None
    deleted = 0
    with open_backend(args) as backend:
        if kind is IPPool:
            _guard(args, backend, list(args.names))
        if kind is Tier:
            guard_tier_deletes(backend, list(args.names))
        for name in args.names:
            where = f"{namespace}/{name}" if namespace else name
            try:
                backend.delete(kind, name, namespace)
            except NotFound:
                if args.skip_not_found:
                    continue
                reason = f"resource does not exist: {kind.KIND} '{where}'"
                if not deleted:
                    raise CommandError(reason) from None
                print(f"Partial success: deleted the first {deleted} out of {len(args.names)} "
                      f"'{kind.KIND}' resource(s):")  # fmt: skip
                print(f"Hit error: {reason}", file=sys.stderr)
                return 1
            deleted += 1
    print(f"Successfully deleted {deleted} '{kind.KIND}' resource(s)")
    return 0


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=argparse.SUPPRESS, help="datastore config file (calicoctl.cfg form)"
    )
    parser.add_argument("-n", "--namespace", help="namespace of namespaced resources (default: default)")


def register(subparsers: Any) -> None:
    """Add apply, create, replace and delete (get lives in get_cmd)."""
    helps = {
        "apply": "create or replace resources from a file",
        "create": "create resources from a file; fails if any exists",
        "replace": "replace existing resources from a file (compare-and-swap on resourceVersion)",
    }
    for verb, text in helps.items():
        p = subparsers.add_parser(verb, help=text, description=text)
        p.add_argument("-f", "--filename", required=True, help="YAML or JSON file, '-' for stdin")
        add_common(p)
        p.set_defaults(func=run_file_verb, verb=verb)
    p = subparsers.add_parser("delete", help="delete resources by file or by kind and name")
    p.add_argument("kind", nargs="?", help="resource type, e.g. ippool, bgppeer, gnp")
    p.add_argument("names", nargs="*", help="resource names")
    p.add_argument("-f", "--filename", help="YAML or JSON file, '-' for stdin")
    p.add_argument("--skip-not-found", action="store_true", help="do not fail on resources that do not exist")
    add_common(p)
    p.set_defaults(func=run_delete, verb="delete")
