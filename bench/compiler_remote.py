"""One IP version's policy compiler fed the x10 start-up's endpoints, with and without leaving out
the other nodes' endpoints that have no address of that version (``PolicyCompiler._inert``).

    .venv/bin/python -m bench.compiler_remote [--local 1000] [--remote 10000] [--policies 500] [--repeat 3]

Pure, in-process (no kernel, no datastore): endpoints and policies shaped like bench.e2e_startup's
(IPv4 only; each policy selects one app in ten and admits one service in twenty on a port of its
own), fed in the etcd snapshot's order (policies, then endpoints), then one full ``dirty()``.
Prints, for the IPv6 and the IPv4 compiler, CPU seconds (min of ``--repeat``) and the Python heap
the compiler holds afterwards (tracemalloc, one extra run), as ``leave_out`` (the agent's
behaviour) against ``index_all`` (every endpoint indexed: the reference, same output asserted).
Leaves out: conversion from resources (done once for both compilers in the agent), the kernel.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable

from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler
from policy.entities import Endpoint, EntityMatch, Policy, PolicyRule, PortRange
from policy.selector import parse


def workload(i: int, *, local: bool) -> Endpoint:
    name = f"e{i}" if local else f"rm{i}"
    ip = f"10.242.{i // 250}.{i % 250 + 1}" if local else f"10.243.{i // 250}.{i % 250 + 1}"
    return Endpoint(
        key=f"bench/{name}", namespace="bench", labels={"app": f"a{i % 10}", "svc": f"s{i % 20}"},
        ips=(ip,), iface=f"calie{i:05d}" if local else f"calirm{i:05d}",
        node="e2e-node" if local else f"remote-{i % 50}", profiles=("kns.bench",),
    )  # fmt: skip


def policy(j: int) -> Policy:
    rule = PolicyRule(
        "Allow", protocol=6, source=EntityMatch(selector=parse(f"svc == 's{j % 20}'")),
        destination=EntityMatch(ports=(PortRange(10000 + j, 10000 + j),)),
    )  # fmt: skip
    return Policy(id=f"gnp/p{j}", selector=parse(f"app == 'a{j % 10}'"), types=frozenset({"Ingress"}),
                  ingress=(rule,))  # fmt: skip


def run(
    version: int, endpoints: list[Endpoint], policies: list[Policy], *, leave_out: bool
) -> PolicyCompiler:
    c = PolicyCompiler("e2e-node", config=ChainConfig(version=version))
    if not leave_out:
        c._inert = lambda ep: False  # type: ignore[method-assign]
    for p in policies:
        c.update_policy(p)
    for ep in endpoints:
        c.update_endpoint(ep)
    c.dirty()
    return c


def measure(fn: Callable[[], PolicyCompiler], repeat: int) -> tuple[float, float, PolicyCompiler]:
    best = float("inf")
    out = None
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
        del out
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = fn()
    held = (tracemalloc.get_traced_memory()[0] - base) / 1e6
    tracemalloc.stop()
    return best, held, kept


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.compiler_remote", description=__doc__.split("\n")[0])
    ap.add_argument("--local", type=int, default=1000)
    ap.add_argument("--remote", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    endpoints = [workload(i, local=True) for i in range(args.local)]
    endpoints += [workload(i, local=False) for i in range(args.remote)]
    policies = [policy(j) for j in range(args.policies)]
    for version in (6, 4):
        figures = {}
        for leave_out in (True, False):

            def once(v: int = version, lo: bool = leave_out) -> PolicyCompiler:
                return run(v, endpoints, policies, leave_out=lo)

            cpu, held, c = measure(once, args.repeat)
            figures[leave_out] = (cpu, held, c.chains(), c.ipsets())
        assert figures[True][2:] == figures[False][2:], "the two ways must emit the same chains and ipsets"
        common = {"version": version, "local": args.local, "remote": args.remote, "policies": args.policies}
        for key, label in ((True, "leave_out"), (False, "index_all")):
            cpu, held, *_ = figures[key]
            for name, value, unit, ref in (
                ("cpu", round(cpu, 3), "s", "index_all = every endpoint indexed (min of --repeat)"),
                ("heap", round(held, 1), "MB", "tracemalloc, held after the run"),
            ):
                line = {"name": f"compiler_v{version}_{name}", "value": value, "unit": unit, "mode": label}
                print(json.dumps({**line, "reference": ref, **common}))


if __name__ == "__main__":
    main()
