"""Subcommands that work on a running lab: pod, ns, exec, ctl, status, probe, demo."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

from felixpy.lab import pods, ports, state
from felixpy.lab.names import DEFAULT_NAME, LabError, LabNames, name_arg

Parser = argparse.ArgumentParser
Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]


def _names(args: argparse.Namespace) -> LabNames:
    return LabNames(args.name)


def _cmd_pod_add(args: argparse.Namespace) -> int:
    serve = [int(p) for p in args.serve.split(",") if p] if args.serve else []
    named = ports.parse_ports(args.ports)
    if args.named_serve:
        named = ports.merge(named, ports.serve_names(serve))
    pod = pods.add(_names(args), args.pod, node=args.node, labels=pods.parse_labels(args.labels), serve=serve,
                   named_ports=named)
    print(json.dumps({"namespace": pod.namespace, "name": pod.name, "node": pod.node, "ip": pod.ip,
                      "netns": pod.netns, "labels": pod.labels, "serve": pod.serve, "ports": pod.ports}))
    return 0


def _cmd_pod_del(args: argparse.Namespace) -> int:
    pods.delete(_names(args), args.pod)
    return 0


def _cmd_ns_add(args: argparse.Namespace) -> int:
    pods.add_namespace(_names(args), args.namespace, pods.parse_labels(args.labels))
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    from felixpy.lab.probe import find_pod

    st = state.load(_names(args))
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        raise LabError("exec needs a command after --")
    target = args.target
    if "/" not in target and _is_node(st, target):
        netns = st.plan.node(target).netns
    else:
        netns = find_pod(st, target).netns
    return subprocess.call(["ip", "netns", "exec", netns, *cmd])


def _is_node(st: state.LabState, name: str) -> bool:
    return any(n.name == name for n in st.plan.nodes)


def _cmd_ctl(args: argparse.Namespace) -> int:
    from felixpy.lab import ctl

    names = _names(args)
    st = state.load(names)
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    binary = ctl.tool("felixctl") or "felixctl"
    env = ctl.datastore_env(names, st.plan.etcd_endpoint)
    if args.node:
        node = st.plan.node(args.node)
        env.update({"FELIXPY_RUN_DIR": str(names.node_dir(node.name)), "NODENAME": node.name})
    netns = st.plan.node(args.node).netns if args.node else names.etcd
    return subprocess.call(["ip", "netns", "exec", netns, binary, *cmd], env=env)


def _cmd_status(args: argparse.Namespace) -> int:
    from felixpy.lab import status

    names = _names(args)
    st = state.load(names)
    if args.output == "json":
        print(json.dumps(status.to_json(names, st), indent=2))
    else:
        print(status.to_text(names, st, bgp=not args.no_bgp))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from felixpy.lab import probe

    st = state.load(_names(args))
    protos = [p.strip().lower() for p in args.proto.split(",") if p.strip()]
    if any(p not in ("tcp", "udp") for p in protos):
        raise LabError("--proto takes tcp, udp or tcp,udp")
    if args.matrix:
        ports = [int(p) for p in args.ports.split(",") if p]
        results = probe.matrix(st, ports, protos, timeout=args.timeout, parallel=args.parallel)
        keys = [probe.pod_key(p) for p in st.pods if p.ip]
        if args.output == "json":
            print(json.dumps(probe.matrix_json(results, keys)))
        else:
            print(probe.format_tables(results, keys))
        return 0
    if not (args.src and args.dst and args.port):
        raise LabError("probe needs SRC DST PORT (or --matrix)")
    src, dst = probe.find_pod(st, args.src), probe.find_pod(st, args.dst)
    [result] = probe.probe_from(src, [dst], [int(args.port)], protos[:1], args.timeout)
    print(json.dumps(result.to_json()))
    return 0 if result.connected else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from felixpy.lab.demo import demo

    return demo(_names(args), keep=args.keep, timeout=args.timeout)


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--name", default=argparse.SUPPRESS, type=name_arg,
                   help=f"lab name (default {DEFAULT_NAME})")
    return p


def _add_pod(sub: Subparsers, common: Parser) -> None:
    pod = sub.add_parser("pod", help="add or delete pods (through the real CNI plugin)", parents=[common])
    psub = pod.add_subparsers(dest="pod_command", required=True)
    add = psub.add_parser("add", help="create a pod: namespace + felixpy-cni ADD", parents=[common])
    add.add_argument("pod", metavar="NS/NAME")
    add.add_argument("--node", required=True)
    add.add_argument("--labels", default="", help="k=v,k2=v2")
    add.add_argument("--serve", default="", help="ports for TCP+UDP responders, e.g. 80,81")
    add.add_argument("--ports", default="", metavar="NAME=PORT/PROTO,...",
                     help="named container ports on the pod's WorkloadEndpoint, e.g. http=80/tcp,dns=53/udp")
    add.add_argument("--named-serve", action="store_true",
                     help="also name every --serve port serve-<port>-<tcp|udp> (the netpol e2e names)")
    add.set_defaults(func=_cmd_pod_add)
    dele = psub.add_parser("del", help="felixpy-cni DEL and delete the pod", parents=[common])
    dele.add_argument("pod", metavar="NS/NAME")
    dele.set_defaults(func=_cmd_pod_del)
    ns = sub.add_parser("ns", help="namespaces (v1 Namespace resources)", parents=[common])
    nsub = ns.add_subparsers(dest="ns_command", required=True)
    nsa = nsub.add_parser("add", help="write a v1 Namespace with labels", parents=[common])
    nsa.add_argument("namespace")
    nsa.add_argument("--labels", default="")
    nsa.set_defaults(func=_cmd_ns_add)


def _add_probe(sub: Subparsers, common: Parser) -> None:
    p = sub.add_parser("probe", help="connect SRC -> DST:PORT (exit 0 connected, 1 blocked)",
                       parents=[common])
    p.add_argument("src", nargs="?", metavar="SRC")
    p.add_argument("dst", nargs="?", metavar="DST")
    p.add_argument("port", nargs="?", metavar="PORT")
    p.add_argument("--proto", default="tcp", help="tcp | udp (matrix: tcp,udp)")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--matrix", action="store_true", help="every pod pair, as truth tables")
    p.add_argument("--ports", default="80", help="matrix ports, e.g. 80,81")
    p.add_argument("--parallel", type=int, default=2, help="source pods probed at once (max 4)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=_cmd_probe)


def add_commands(sub: Subparsers) -> None:
    common = common_parser()
    _add_pod(sub, common)
    _add_probe(sub, common)
    ex = sub.add_parser("exec", help="run a command in a pod's (NS/NAME) or node's namespace",
                        parents=[common])
    ex.add_argument("target", metavar="NS/NAME|NODE")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=_cmd_exec)
    c = sub.add_parser("ctl", help="felixctl against the lab's datastore", parents=[common])
    c.add_argument("--node", help="run inside this node's namespace (for 'node status')")
    c.add_argument("cmd", nargs=argparse.REMAINDER)
    c.set_defaults(func=_cmd_ctl)
    st = sub.add_parser("status", help="the lab's nodes and pods", parents=[common])
    st.add_argument("-o", "--output", choices=["table", "json"], default="table")
    st.add_argument("--no-bgp", action="store_true", help="skip querying BGP sessions")
    st.set_defaults(func=_cmd_status)
    d = sub.add_parser("demo", help="3 nodes, 2 racks, 6 pods, BGP, routes, policy, matrix", parents=[common])
    d.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    d.add_argument("--timeout", type=float, default=120.0)
    d.set_defaults(func=_cmd_demo)


def euid_check() -> None:
    if os.geteuid() != 0:
        raise LabError("felixpy-lab needs root")
