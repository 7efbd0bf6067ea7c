"""felixpy-lab: a cluster of network namespaces running the real felixpy agents.

Exit codes: 0 success, 1 probe blocked (``probe``) or leftovers (``down``), 2 error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from felixpy.lab import cli_more
from felixpy.lab.cli_more import Parser, Subparsers
from felixpy.lab.layout import DEFAULT_NAME, LabError, LabNames, name_arg
from felixpy.lab.plan import Options
from felixpy.lab.shell import Progress

Handler = Callable[[argparse.Namespace], int]


def _cmd_up(args: argparse.Namespace) -> int:
    from felixpy.lab.up import up

    opts = Options(
        name=args.name, nodes=args.nodes, racks=args.racks, tor=args.tor,
        route_reflectors=args.route_reflectors, encap=args.encap, cross_subnet=args.cross_subnet,
        pool=args.pool, block_size=args.block_size, etcd_members=args.etcd_members, bfd=not args.no_bfd,
    )
    try:
        up(opts, Progress(), wait=not args.no_wait, timeout=args.timeout, agents=not args.no_agents)
    except LabError:
        print(f"up failed; logs in {LabNames(args.name).run_dir}; clean up with "
              f"'felixpy-lab down --name {args.name}'", file=sys.stderr)
        raise
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from felixpy.lab.down import down

    left = down(LabNames(args.name), Progress())
    return 0 if left.empty() else 1


def _add_up(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("up", help="build a lab and start the agents", parents=[common])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--racks", type=int, default=1, help="subnets routed by the fabric (1 = one L2 segment)")
    p.add_argument("--tor", choices=["none", "bird"], default="none",
                   help="BIRD top-of-rack router, eBGP, AS per rack")
    p.add_argument("--route-reflectors", type=int, default=0, metavar="K")
    p.add_argument("--encap", choices=["none", "ipip", "vxlan"], default="none")
    p.add_argument("--cross-subnet", action="store_true", help="encapsulate only between subnets")
    p.add_argument("--pool", default="10.244.0.0/16")
    p.add_argument("--block-size", type=int, default=26)
    p.add_argument("--etcd-members", type=int, default=1, choices=[1, 3, 5],
                   help="etcd cluster size; ETCD_ENDPOINTS lists every member")
    p.add_argument("--no-bfd", action="store_true",
                   help="no BFD: node sessions and the BIRD ToR rely on BGP hold timers")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on waiting for convergence")
    p.add_argument("--no-wait", action="store_true", help="do not wait for readiness and BGP")
    p.add_argument("--no-agents", action="store_true", help="network and datastore only (no felixpy node)")
    p.set_defaults(func=_cmd_up)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="felixpy-lab", description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=DEFAULT_NAME, type=name_arg, help="lab name and namespace prefix")
    sub = ap.add_subparsers(dest="command", required=True)
    common = cli_more.common_parser()
    _add_up(sub, common)
    down = sub.add_parser("down", help="remove everything of the lab, even after a crash", parents=[common])
    down.set_defaults(func=_cmd_down)
    cli_more.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        cli_more.euid_check()
        code = args.func(args)
    except LabError as exc:
        print(f"felixpy-lab: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:
        code = 0
    except KeyboardInterrupt:
        print("felixpy-lab: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
