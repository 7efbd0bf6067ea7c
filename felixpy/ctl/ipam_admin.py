"""felixctl ipam configure and ipam split, as calicoctl has them.

``ipam configure [--strictaffinity=true|false] [--max-blocks-per-host=N]``: changes IPAMConfiguration
``default`` (at least one option; validated as the resource is: maxBlocksPerHost > 0 needs strict
affinity) and prints ``Successfully set StrictAffinity to: true`` / ``MaxBlocksPerHost to: N``.

``ipam split NUMBER (--cidr=CIDR | --name=POOL)``: replaces a pool by NUMBER equal pools named
``split-<pool>-<i>`` with the same settings. Preconditions, as calicoctl's: the datastore is locked
(``felixctl datastore migrate lock``), NUMBER is a power of two and the pool is large enough; and,
beyond calicoctl, each child must hold at least one block, so every existing block lies inside
exactly one new pool and no allocation is left outside a pool. The old pool is disabled, the children
created, the old pool deleted; a failure part-way removes the children and restores the old pool.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
from typing import Any

from felixpy.ctl.connect import open_backend, open_kv
from felixpy.ctl.datastore_cmd import require_locked
from felixpy.ctl.resource_cmds import CommandError
from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.resources.base import Resource
from felixpy.resources.ippool import IPPool
from felixpy.resources.parse import parse_document
from ipam.errors import IPAMError
from ipam.ipam import IPAM
from ipam.pools import pool_view, split_cidr

MAX_NAME = 253


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "t", "1", "yes"):
        return True
    if lowered in ("false", "f", "0", "no"):
        return False
    raise CommandError(f"invalid value {text!r} for --strictaffinity: use true or false")


def _ipam_errors(fn: Any) -> Any:
    """IPAM's refusals (a pool check, lost races) as one line, like every felixctl failure."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except IPAMError as exc:
            raise CommandError(str(exc)) from None

    return run


@_ipam_errors
def run_configure(args: argparse.Namespace) -> int:
    strict = None if args.strictaffinity is None else _bool(args.strictaffinity)
    max_blocks = None
    if args.max_blocks_per_host is not None:
        try:
            max_blocks = int(args.max_blocks_per_host)
        except ValueError:
            raise CommandError(
                f"invalid value {args.max_blocks_per_host!r} for --max-blocks-per-host. Use a valid number"
            ) from None
    if strict is None and max_blocks is None:
        raise CommandError("at least one configuration option must be specified "
                           "(--strictaffinity, --max-blocks-per-host)")  # fmt: skip
    with open_kv(args) as kv, open_backend(args) as backend:
        IPAM(kv, backend, cache_seconds=0).set_config(strict_affinity=strict, max_blocks_per_host=max_blocks)
    if strict is not None:
        print(f"Successfully set StrictAffinity to: {str(strict).lower()}")
    if max_blocks is not None:
        print(f"Successfully set MaxBlocksPerHost to: {max_blocks}")
    return 0


def _find_pool(backend: Any, name: str | None, cidr: str | None) -> IPPool:
    if name:
        try:
            pool = backend.get(IPPool, name)
        except NotFound:
            raise CommandError(f"unable to find IP pool with name {name}") from None
        assert isinstance(pool, IPPool)
        return pool
    assert cidr is not None
    try:
        wanted = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise CommandError(f"--cidr {cidr!r} is not a CIDR") from None
    for p in backend.list(IPPool)[0]:
        if ipaddress.ip_network(p.spec.cidr, strict=False) == wanted:
            return p
    raise CommandError(f"unable to find IP pool covering the specified CIDR {cidr}")


def _child_name(parent: str, index: int) -> str:
    name = f"split-{parent}-{index}"
    return name if len(name) <= MAX_NAME else f"split-{parent[:245]}-{index}"


@_ipam_errors
def run_split(args: argparse.Namespace) -> int:
    if not args.cidr and not args.name:
        raise CommandError("no name or CIDR provided: give --name or --cidr of the IP pool to split")
    try:
        parts = int(args.number)
    except ValueError:
        raise CommandError(f"{args.number!r} is not a valid number to split the IP pool into") from None
    with open_backend(args) as backend:
        require_locked(backend, "split the IP pools")
        old = _find_pool(backend, args.name, args.cidr)
        cidrs = split_cidr(old.spec.cidr, parts, pool_view(old).block_size)
        children = []
        for i, child_cidr in enumerate(cidrs):
            doc = old.to_dict()
            doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k in ("labels", "annotations")} | {
                "name": _child_name(old.name, i)
            }
            doc["spec"] = {**doc["spec"], "cidr": child_cidr, "disabled": False}
            children.append(parse_document(doc))
        taken = [c.name for c in children if _exists(backend, c.name)]
        if taken:
            raise CommandError(f"IPPool {taken[0]!r} already exists; delete it or split another pool")
        _replace(backend, old, children)
    print(f"IP Pool {old.name} was successfully split into {parts} smaller pools.")
    for c in children:
        assert isinstance(c, IPPool)
        print(f"Created {c.name} with CIDR {c.spec.cidr}.")
    return 0


def _exists(backend: Any, name: str) -> bool:
    try:
        backend.get(IPPool, name)
    except NotFound:
        return False
    return True


def _replace(backend: Any, old: IPPool, children: list[Resource]) -> None:
    disabled = old.model_copy(deep=True)
    disabled.spec.disabled = True
    current = backend.update(disabled)
    made: list[str] = []
    try:
        for c in children:
            backend.create(c)
            made.append(c.name)
        backend.delete(IPPool, old.name, revision=current.metadata.resource_version)
    except DatastoreError as exc:
        for name in reversed(made):
            with contextlib.suppress(DatastoreError):
                backend.delete(IPPool, name)
        restore = backend.get(IPPool, old.name)
        restore.spec.disabled = old.spec.disabled
        backend.update(restore)
        raise CommandError(f"splitting IPPool {old.name!r} failed and was undone: {exc}") from None


def register(sub: Any) -> None:
    p = sub.add_parser("configure", help="set strictAffinity / maxBlocksPerHost (IPAMConfiguration default)")
    p.add_argument("--strictaffinity", metavar="true|false", help="true: no borrowing from other nodes")
    p.add_argument("--max-blocks-per-host", metavar="N", help="blocks one node may claim (strict affinity)")
    p.set_defaults(func=run_configure)
    p = sub.add_parser("split", help="split an IP pool into NUMBER equal pools (datastore locked)")
    p.add_argument("number", metavar="NUMBER", help="how many pools: a power of 2")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cidr", help="CIDR of the IP pool to split")
    g.add_argument("--name", help="name of the IP pool to split")
    p.set_defaults(func=run_split)
