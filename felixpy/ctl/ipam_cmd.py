"""felixctl ipam show / check / release / gc, and felixctl ippool list / create / enable / disable / delete
(ipam configure and split: felixpy.ctl.ipam_admin).

Output follows calicoctl: `ipam show` prints GROUPING | CIDR | IPS TOTAL | IPS IN USE | IPS FREE
with numbers as ``%.5g`` and ``N (P%)``; `ipam show --ip` prints ``IP <a> is in use`` and its
owner, or ``<a> is not assigned``; `ipam release --ip` prints ``Successfully released IP
address <a>``. Pool changes go through ipam.pools' checks (overlap, immutable cidr/blockSize
while in use, delete only once disabled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from felixpy.ctl import ipam_admin
from felixpy.ctl.connect import open_backend, open_kv
from felixpy.ctl.node_check import find_orphans, local_nodename
from felixpy.ctl.output import print_table
from felixpy.datastore.errors import DatastoreError, NotFound
from felixpy.resources.endpoint import WorkloadEndpoint
from felixpy.resources.ippool import IPPool
from felixpy.resources.node import Node
from ipam import report
from ipam.errors import IPAMError
from ipam.ipam import IPAM
from ipam.pools import check_pool_create, check_pool_delete, check_pool_update, pool_view


@contextlib.contextmanager
def _ipam(args: argparse.Namespace) -> Iterator[IPAM]:
    with open_kv(args) as kv, open_backend(args) as backend:
        yield IPAM(kv, backend, cache_seconds=0)


def _fail(msg: str) -> int:
    print(f"Failed to execute command: {msg}", file=sys.stderr)
    return 1


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except (IPAMError, DatastoreError, ValueError, OSError) as exc:
            return _fail(str(exc) or type(exc).__name__)

    return run


def _n(value: int) -> str:
    return f"{value:.5g}"


def _pct(part: int, total: int) -> str:
    return f"{_n(part)} ({100 * part / total if total else 0:.0f}%)"


# ---- ipam show -----------------------------------------------------------------------------------
def show(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        if args.ip:
            return _show_ip(ipam, args.ip)
        blocks = [b for b, _ in ipam.store.list_blocks()]
        rows = []
        for pool_use, block_rows in report.usage(ipam.pools(fresh=True), blocks):
            rows.append(
                [
                    "IP Pool",
                    pool_use.cidr,
                    _n(pool_use.total),
                    _pct(pool_use.in_use, pool_use.total),
                    _pct(pool_use.free, pool_use.total),
                ]
            )
            if args.show_blocks:
                rows += [
                    ["Block", b.cidr, _n(b.total), _pct(b.in_use, b.total), _pct(b.free, b.total)]
                    for b in block_rows
                ]
        print_table(["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"], rows)
        if args.show_configuration:
            c = ipam.config()
            print_table(
                ["PROPERTY", "VALUE"],
                [
                    ["StrictAffinity", str(c.strict_affinity).lower()],
                    ["AutoAllocateBlocks", str(c.auto_allocate_blocks).lower()],
                    ["MaxBlocksPerHost", c.max_blocks_per_host],
                ],
            )
    return 0


def _show_ip(ipam: IPAM, ip: str) -> int:
    a = ipam.get_assignment(ip)
    held_by = ipam.reservations(fresh=True).reserving(ip)
    reserved = f"{ip} is reserved by IPReservation {held_by.name!r} ({held_by.net})" if held_by else None
    if a is None:
        print(f"{ip} is not assigned")
        if reserved:
            print(f"{reserved}: IPAM never assigns it")
        return 1
    print(f"IP {ip} is in use")
    print(f"Handle ID: {a.handle_id}")
    print(f"Block: {a.block} ({a.affinity or 'no affinity'})")
    print("Active Owner Attributes:")
    for k in sorted(a.attrs):
        print(f"  {k}: {a.attrs[k]}")
    if reserved:
        print(f"{reserved} (allocated before the reservation; kept)")
    return 0


# ---- ipam check / release / gc ---------------------------------------------------------------------
def _check(ipam: IPAM, verbose: bool = True, local_node: str | None = None) -> report.CheckReport:
    say = print if verbose else (lambda *_: None)
    say("Loading all IPAM blocks...")
    blocks = [b for b, _ in ipam.store.list_blocks()]
    say(f"Found {len(blocks)} IPAM blocks.")
    weps, _ = ipam.backend.list(WorkloadEndpoint)
    nodes, _ = ipam.backend.list(Node)
    endpoint_ips = report.endpoint_ip_map(weps)
    say(f"Found {len(endpoint_ips)} workload IPs.")
    rep = report.check(
        blocks,
        [h for h, _ in ipam.store.list_handles()],
        endpoint_ips=endpoint_ips,
        tunnel_ips=report.tunnel_ip_map(nodes),
        nodes={n.metadata.name for n in nodes},
    )
    rep.in_reservation = [
        {"ip": ip, "reservation": name, "handle": handle}
        for ip, name, handle in ipam.reservations(fresh=True).allocated_inside(blocks)
    ]
    say(f"Workloads and nodes are using {rep.in_use} IPs.")
    if local_node is not None and local_node in {n.metadata.name for n in nodes}:
        # Only this host's kernel can tell whether an endpoint's interface is still there.
        say(f"Checking the workload endpoints of this node ({local_node}) for a missing interface...")
        rep.orphaned_endpoints = find_orphans(weps, local_node)
    return rep


def check(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        rep = _check(ipam, local_node=local_nodename(args.node))
    for a in rep.leaked:
        print(f"  {a.ip} leaked: allocated (handle {a.handle}) but used by no workload endpoint or node")
    for m in rep.not_allocated:
        print(f"  {m['ip']} in use by {m['usedBy']} but not allocated")
    for o in rep.orphan_blocks:
        print(f"  block {o['block']} is affine to node {o['node']}, which does not exist")
    for h in rep.handle_problems:
        print(f"  handle {h['handle']} records {h['recorded']} but the blocks hold {h['actual']}")
    for o in rep.orphaned_endpoints:
        print(
            f"  endpoint {o['namespace']}/{o['name']} on node {o['node']} holds {', '.join(o['addresses'])} "
            f"but its {o['problem']}; the pod's CNI DEL (retried by the runtime) releases them"
        )
    for r in rep.in_reservation:
        print(
            f"  {r['ip']} is allocated (handle {r['handle']}) inside IPReservation {r['reservation']!r}: "
            f"kept; no new allocation gets a reserved address"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rep.to_json(), f, indent=2)
        print(f"Report written to {args.output}")
    print(f"Check complete; found {rep.problems} problems.")
    return 0


def release(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        if args.ip:
            if ipam.get_assignment(args.ip) is None:
                return _fail(f"IP address {args.ip} is not assigned")
            ipam.release_ips([args.ip])
            print(f"Successfully released IP address {args.ip}")
            return 0
        with open(args.from_report) as f:
            old = {(a["ip"], a["handle"]) for a in json.load(f).get("leakedIPs", [])}
        now = _check(ipam, verbose=False)
        # Only what is leaked both in the report and now, with the same handle, is released.
        todo = [a.ip for a in now.leaked if (a.ip, a.handle) in old]
        print(f"Releasing {len(todo)} old IPs...")
        done = ipam.release_ips(todo)
        print(f"Released {len(done)} IPs successfully")
    return 0


def gc(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        nodes = {n.metadata.name for n in ipam.backend.list(Node)[0]}
        holders = {a.node for a in ipam.store.list_affinities()}
        holders |= {
            a.attrs.get("node", "") for a in report.allocations(b for b, _ in ipam.store.list_blocks())
        }
        gone = sorted(n for n in holders - nodes if n and (not args.node or n == args.node))
        for node in gone:
            res = ipam.gc_node(node)
            print(f"Node {node}: released {len(res.released)} IPs and {len(res.blocks)} block affinities")
        print(f"Garbage collection complete; {len(gone)} deleted node(s) cleaned up.")
    return 0


# ---- ippool -------------------------------------------------------------------------------------
def pool_list(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        pools, _ = ipam.backend.list(IPPool)
        if args.output == "json":
            print(json.dumps([p.to_dict() for p in pools], indent=2))
            return 0
        rows = []
        for p in sorted(pools, key=lambda p: p.metadata.name):
            v = pool_view(p)
            rows.append(
                [
                    p.metadata.name,
                    str(v.cidr),
                    v.block_size,
                    v.ipip_mode,
                    v.vxlan_mode,
                    str(p.spec.nat_outgoing).lower(),
                    str(p.spec.disabled).lower(),
                    v.node_selector,
                ]
            )
        print_table(
            ["NAME", "CIDR", "BLOCKSIZE", "IPIPMODE", "VXLANMODE", "NAT", "DISABLED", "SELECTOR"], rows
        )
    return 0


def pool_create(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {
        "cidr": args.cidr,
        "ipipMode": args.ipip_mode,
        "vxlanMode": args.vxlan_mode,
        "natOutgoing": args.nat_outgoing,
        "disabled": args.disabled,
        "nodeSelector": args.node_selector,
    }
    if args.block_size:
        spec["blockSize"] = args.block_size
    new = IPPool.model_validate({"metadata": {"name": args.name}, "spec": spec})
    with _ipam(args) as ipam:
        existing, _ = ipam.backend.list(IPPool)
        check_pool_create(existing, new)
        ipam.backend.create(new)
    print("Successfully created 1 'IPPool' resource(s)")
    return 0


def pool_set_disabled(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        try:
            old = ipam.backend.get(IPPool, args.name)
        except NotFound:
            return _fail(f"IPPool {args.name!r} not found")
        new = old.model_copy(deep=True)
        new.spec.disabled = args.disable
        existing, _ = ipam.backend.list(IPPool)
        check_pool_update(existing, old, new, in_use=ipam.pool_usage(old.spec.cidr)[0])
        ipam.backend.update(new)
    print(f"IPPool {args.name} {'disabled' if args.disable else 'enabled'}")
    return 0


def pool_delete(args: argparse.Namespace) -> int:
    with _ipam(args) as ipam:
        try:
            old = ipam.backend.get(IPPool, args.name)
        except NotFound:
            return _fail(f"IPPool {args.name!r} not found")
        check_pool_delete(old, in_use=ipam.pool_usage(old.spec.cidr)[0])
        ipam.backend.delete(IPPool, args.name, revision=old.metadata.resource_version)
    print("Successfully deleted 1 'IPPool' resource(s)")
    return 0


# ---- wiring -------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    ipam = subparsers.add_parser("ipam", help="IP address management: show, check, release, gc")
    sub = ipam.add_subparsers(dest="ipam_command", required=True)
    p = sub.add_parser("show", help="pool and block utilisation, or who holds one address")
    p.add_argument("--show-blocks", action="store_true")
    p.add_argument("--show-configuration", action="store_true")
    p.add_argument("--ip", help="show the owner of this address")
    p.set_defaults(func=_guard(show))
    p = sub.add_parser(
        "check",
        help="find leaked addresses, unallocated in-use addresses, orphan blocks, and this node's "
        "endpoints whose interface is gone",
    )
    p.add_argument("-o", "--output", help="write a JSON report to this file")
    p.add_argument("--node", default=None, help="this node's name, for the interface check ($NODENAME)")
    p.set_defaults(func=_guard(check))
    p = sub.add_parser("release", help="release one address, or the leaks of a check report")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ip")
    g.add_argument("--from-report", metavar="FILE")
    p.set_defaults(func=_guard(release))
    p = sub.add_parser("gc", help="release what deleted nodes still hold")
    p.add_argument("--node", help="only this (deleted) node")
    p.set_defaults(func=_guard(gc))
    ipam_admin.register(sub)
    _register_ippool(subparsers)


def _register_ippool(subparsers: Any) -> None:
    pool = subparsers.add_parser("ippool", help="list, create, enable, disable, delete IP pools")
    sub = pool.add_subparsers(dest="ippool_command", required=True)
    p = sub.add_parser("list")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=_guard(pool_list))
    p = sub.add_parser("create")
    p.add_argument("name")
    p.add_argument("--cidr", required=True)
    p.add_argument("--block-size", type=int)
    p.add_argument("--ipip-mode", choices=["Never", "Always", "CrossSubnet"], default="Never")
    p.add_argument("--vxlan-mode", choices=["Never", "Always", "CrossSubnet"], default="Never")
    p.add_argument("--nat-outgoing", action="store_true")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--node-selector", default="all()")
    p.set_defaults(func=_guard(pool_create))
    for verb, disable in (("disable", True), ("enable", False)):
        p = sub.add_parser(verb)
        p.add_argument("name")
        p.set_defaults(func=_guard(pool_set_disabled), disable=disable)
    p = sub.add_parser("delete")
    p.add_argument("name")
    p.set_defaults(func=_guard(pool_delete))
