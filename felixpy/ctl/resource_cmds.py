"""felixctl apply / create / replace / delete: resources from files, or by kind and name.

Input is bounded (`felixpy.ctl.limits`: size, document count, nesting) and every document is
parsed and validated before anything is written: one bad document means nothing changes.
Then every write is planned and checked against etcd's limits (`felixpy.ctl.write_plan`):
`create` refuses if any resource exists, `replace` if any is missing or stale, any verb if a
document is larger than one etcd request. The writes are all-or-nothing (`felixpy.ctl.batch`):
one etcd transaction when they fit in one, else consecutive transactions rolled back on a
failure, and the message says which.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from felixpy.ctl import batch, write_plan
from felixpy.ctl.batch import Outcome
from felixpy.ctl.connect import open_backend
from felixpy.ctl.honoured import policy_rule_warnings, unhonoured
from felixpy.ctl.limits import Limits, add_limit_flags
from felixpy.ctl.pool_guard import PoolInUseError, guard_pool_deletes
from felixpy.ctl.sources import read_sources
from felixpy.ctl.tier_guard import check_policy_tiers, guard_tier_deletes
from felixpy.datastore.backend import Backend
from felixpy.datastore.errors import NotFound
from felixpy.datastore.resources import KVBackend, encode
from felixpy.resources.base import Resource, ResourceError
from felixpy.resources.fields import FieldError
from felixpy.resources.ippool import IPPool, check_pool_against
from felixpy.resources.name_rules import check_dns_label
from felixpy.resources.parse import parse_documents
from felixpy.resources.registry import kind_by_name
from felixpy.resources.tier import Tier

PAST = {"apply": "applied", "create": "created", "replace": "replaced", "delete": "deleted"}
DEFAULT_NAMESPACE = "default"
WRITE_ATTEMPTS = 5  # a resource changed between plan and transaction: plan again


class CommandError(Exception):
    """A user-facing failure: printed as ``Failed to execute command: <message>``, exit code 1."""


def label(obj: Resource) -> str:
    where = f"{obj.namespace}/" if type(obj).NAMESPACED and obj.namespace else ""
    return f"{obj.KIND} '{where}{obj.name}'"


def load_objects(args: argparse.Namespace) -> list[Resource]:
    """Parse ``-f`` and give namespaced objects their namespace (-n, else `default`)."""
    limits = Limits.from_args(args)
    objs: list[Resource] = []
    sources = read_sources(
        args.filename, limits, recursive=getattr(args, "recursive", False), skip_empty=_skip_empty(args)
    )
    for path, text in sources:
        try:
            objs += parse_documents(text, max_documents=limits.max_documents)
        except ResourceError as exc:
            if len(sources) == 1:
                raise
            raise CommandError(f"{path}: {exc}") from None
        if len(objs) > limits.max_documents:
            raise CommandError(
                f"more than {limits.max_documents:,} resources in the files of {args.filename}, the limit "
                "(--max-documents or FELIXCTL_MAX_DOCUMENTS)"
            )
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


def check_names(kind: type[Resource], names: list[str], namespace: str | None) -> None:
    """Names (and the namespace) given on the command line obey the kind's rules, before any lookup."""
    if namespace is not None:
        try:
            check_dns_label(namespace, what="namespace")
        except FieldError as exc:
            raise CommandError(f"invalid namespace given with -n: {exc.reason}") from None
    for name in names:
        try:
            kind.check_name(name)
        except FieldError as exc:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise CommandError(f"invalid {kind.KIND} name {shown!r}: {exc.reason}") from None


def summary(verb: str, objs: list[Resource]) -> str:
    kinds = {o.KIND for o in objs}
    what = f"'{next(iter(kinds))}' " if len(kinds) == 1 else ""
    return f"{len(objs)} {what}resource(s)"


def _exists(backend: Backend, obj: Resource) -> Resource | None:
    try:
        return backend.get(type(obj), obj.name, obj.namespace)
    except NotFound:
        return None


def precheck(backend: Backend, objs: list[Resource], verb: str, *, existence: bool = True) -> None:
    """Refuse the whole batch, before any write, when create/replace/delete cannot succeed
    (``existence=False``: the write plan checks existence and revisions itself)."""
    if verb != "delete":
        check_pools(backend, objs)
        check_policy_tiers(backend, objs)
    seen: set[tuple[str, str | None, str]] = set()
    for index, obj in enumerate(objs, start=1):
        key = (obj.KIND, obj.namespace, obj.name)
        if verb == "create" and key in seen:
            raise CommandError(f"document {index}: {label(obj)} appears more than once")
        seen.add(key)
        if verb not in ("create", "replace") or not existence:
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


def write_all(args: argparse.Namespace, verb: str, objs: list[Resource]) -> int:
    """Check, then write every resource or none (see the module docstring)."""
    # delete -s: skip what does not exist; create --skip-exists: skip what exists
    skip_missing = getattr(args, "skip_not_found", False) or getattr(args, "skip_exists", False)
    limits = Limits.from_args(args)
    with open_backend(args) as backend:
        etcd = isinstance(backend, KVBackend)
        precheck(backend, objs, verb, existence=not etcd and not skip_missing)
        if verb == "delete":
            _guard(args, backend, [o for o in objs if isinstance(o, IPPool)])
            guard_tier_deletes(backend, objs)
        if etcd:
            assert isinstance(backend, KVBackend)
            done, outcome = _write_etcd(backend, objs, verb, skip_missing=skip_missing, limits=limits)
        else:
            done, outcome = _write_api(backend, objs, verb, skip_missing=skip_missing, limits=limits)
    how = ""
    if outcome.transactions > 1:  # a failure would have rolled the earlier transactions back
        how = f" ({outcome.how}, all or nothing by rollback)"
    print(f"Successfully {PAST[verb]} {summary(verb, done)}{how}")
    return 0


def _write_etcd(
    backend: KVBackend, objs: list[Resource], verb: str, *, skip_missing: bool, limits: Limits
) -> tuple[list[Resource], Outcome]:
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            writes = write_plan.plan(backend.kv, objs, verb, skip_missing=skip_missing)
            write_plan.check_sizes(writes, limits)
        except write_plan.PlanError as exc:
            raise CommandError(str(exc)) from None
        try:
            outcome = batch.commit(backend.kv, writes, limits)
        except batch.RaceError:
            if attempt == WRITE_ATTEMPTS:
                raise
            continue
        planned = {w.index for w in writes}
        done = (
            [o for i, o in enumerate(objs, start=1) if i in planned] if verb in ("delete", "create") else objs
        )
        return done, outcome
    raise AssertionError("unreachable")


def _write_api(
    backend: Backend, objs: list[Resource], verb: str, *, skip_missing: bool, limits: Limits
) -> tuple[list[Resource], Outcome]:
    """Kubernetes mode: sizes checked, then one resource at a time, undone on a failure."""
    room = limits.etcd_max_request_bytes - write_plan.TXN_OVERHEAD
    steps: list[batch.BackendStep] = []
    for index, obj in enumerate(objs, start=1):
        key, value = encode(obj)
        size = write_plan.request_size(key, value)
        if size > room:
            raise CommandError(
                f"document {index}: {label(obj)} is {size:,} bytes stored; the datastore accepts at most "
                f"{limits.etcd_max_request_bytes:,} bytes in one request"
            )
        before = _exists(backend, obj)
        if before is not None and verb == "create" and skip_missing:
            continue
        if before is None and verb == "delete":
            if skip_missing:
                continue
            raise CommandError(f"document {index}: resource does not exist: {label(obj)}")
        steps.append(batch.BackendStep(obj, before))
    outcome = batch.commit_backend(backend, steps, verb, lambda obj: write_one(backend, obj, verb))
    return [s.obj for s in steps], outcome


def run_file_verb(args: argparse.Namespace) -> int:
    objs = load_objects(args)
    if not objs:
        if _skip_empty(args):
            print(f"Successfully {PAST[args.verb]} 0 resource(s)")
            return 0
        raise CommandError(f"no resources specified in {'stdin' if args.filename == '-' else args.filename}")
    code = write_all(args, args.verb, objs)
    if args.verb != "delete":
        warn_unhonoured(objs)
    return code


def _skip_empty(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "skip_empty", False))


def warn_unhonoured(objs: list[Resource]) -> None:
    """Nothing accepted silently: name each stored field felixpy does not act on (stderr)."""
    for obj in objs:
        fields = unhonoured(obj)
        if fields:
            print(f"Warning: {label(obj)}: stored but not acted on by felixpy: {', '.join(fields)}",
                  file=sys.stderr)  # fmt: skip
        for warning in policy_rule_warnings(obj):
            print(f"Warning: {label(obj)}: {warning}", file=sys.stderr)


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
    check_names(kind, list(args.names), namespace)
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


def add_input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-R", "--recursive", action="store_true", help="with a directory: its sub-directories too"
    )
    parser.add_argument(
        "--skip-empty", action="store_true", help="do not fail when the files or directory hold no resources"
    )


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
        p.add_argument(
            "-f", "--filename", required=True, help="YAML or JSON file or directory, '-' for stdin"
        )
        add_input_flags(p)
        if verb == "create":
            p.add_argument("--skip-exists", action="store_true", help="skip resources that already exist")
        add_common(p)
        add_limit_flags(p)
        p.set_defaults(func=run_file_verb, verb=verb)
    p = subparsers.add_parser("delete", help="delete resources by file or by kind and name")
    p.add_argument("kind", nargs="?", help="resource type, e.g. ippool, bgppeer, gnp")
    p.add_argument("names", nargs="*", help="resource names")
    p.add_argument("-f", "--filename", help="YAML or JSON file or directory, '-' for stdin")
    add_input_flags(p)
    p.add_argument(
        "-s", "--skip-not-exists", "--skip-not-found", dest="skip_not_found", action="store_true",
        help="do not fail on resources that do not exist",
    )  # fmt: skip
    add_common(p)
    add_limit_flags(p)
    p.set_defaults(func=run_delete, verb="delete")
