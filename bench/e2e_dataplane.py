"""End to end, from outside the agent: a datastore write -> its effect in the node's kernel.

    .venv/bin/python -m bench.e2e_dataplane [--size small|x1|x5|x10] [--samples 20]
                                            [--endpoints N] [--policies M]

Root only. The real ``felixpy node`` (BGP off, policy on) runs in a node namespace against a real
etcd (see bench/e2e_node.py), pre-loaded with N local endpoints (WorkloadEndpoints written to etcd,
each with a host-side ``cali*`` veth made beforehand) and M GlobalNetworkPolicies (one app in ten
selected, one service in twenty admitted on a port of its own). Once the agent is ready and every
endpoint's route is in the kernel, each round times, from a separate process, three writes:

  e2e_policy_put_to_rule   etcd put of a new policy (selects one app in ten, a port of its own)
                           -> that port's rule in ``iptables -S cali-pi-gnp/<name>``
  e2e_label_to_ipset       etcd put of an endpoint with the label a probe policy's source
                           selector wants -> its IP in that selector's ipset (``ipset list``)
  e2e_wep_to_route         etcd put of a new endpoint (its veth made just before, untimed, as a
                           CNI ADD does) -> its /32 route (``ip route show``)

The three kinds alternate within a round, so load hits each alike. Each undoes its change after
the sample and waits (untimed, bounded) until the kernel shows it undone, except new endpoints,
which stay. Each figure is p50 with p99/min/max over ``--samples`` rounds; ``reference`` is the
floor measured in the same run: the etcd put's own round trip and one poll of that kernel table.

Left out: pod creation (no CNI, no pod namespace); IPv6; BGP; the Kubernetes API (etcd is the
datastore); remote endpoints; the time the agent took to start (bench.e2e_startup). The poll
resolution is the poll's own cost (given as the reference), a few ms on an idle machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.e2e_node import (
    Node,
    emit,
    endpoint_ip,
    endpoint_labels,
    outer,
    sh,
    size_of,
    summary,
    wait,
)

SEED_IP, SEED_IFACE = "10.241.0.1", "caliprobe"
TIMEOUT = 30.0  # s: one sample's bound


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e_dataplane", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--size", default="small", help="small (20/10), x1 (100/50), x5 (500/250), x10 (1000/500)"
    )
    ap.add_argument("--endpoints", type=int, help="override the size's endpoint count")
    ap.add_argument("--policies", type=int, help="override the size's policy count")
    ap.add_argument("--samples", type=int, default=20, help="rounds (>= 20 for a p99)")
    ap.add_argument("--in-ns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.n, args.m = size_of(args.size, args.endpoints, args.policies)
    if args.samples < 1:
        raise ValueError("--samples must be >= 1")
    return args


def ipset_with(ip: str) -> str:
    """Name of the one ipset holding ``ip`` (read once, untimed)."""
    name, found = "", []
    for line in sh("ipset", "list").stdout.splitlines():
        if line.startswith("Name:"):
            name = line.split()[1]
        elif line.strip() == ip or line.strip().startswith(ip + " "):
            found.append(name)
    if len(found) != 1:
        raise RuntimeError(f"expected one ipset holding {ip}, found {found}")
    return found[0]


def members(set_name: str) -> str:
    return sh("ipset", "list", set_name, check=False).stdout


def has_route(ip: str) -> bool:
    return "dev cali" in sh("ip", "-4", "route", "show", "exact", f"{ip}/32", check=False).stdout


def poll_cost(fn: object, rounds: int = 20) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def sample_policy(node: Node, ipt: str, k: int) -> tuple[float, float]:
    """A new policy -> its rule (ms), and the put's own round trip (ms); then deleted again."""
    from policy.chain_names import policy_chain
    from policy.convert import policy_id

    name, port = f"new{k}", 30000 + k
    chain = policy_chain(policy_id("gnp", name), "Ingress")
    spec = {
        "order": 50,
        "selector": f"app == 'a{k % 10}'",
        "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}}],
    }

    def listed() -> subprocess.CompletedProcess[str]:
        return sh(ipt, "-t", "filter", "-S", chain, check=False)

    start = time.perf_counter()
    key = node.put_policy(name, spec)
    put_ms = (time.perf_counter() - start) * 1000
    rule_ms = start_to(start, lambda: re.search(rf"\b{port}\b", listed().stdout) is not None, chain)
    node.kv.delete(key)
    wait(lambda: listed().returncode != 0, TIMEOUT, f"{chain} removed")
    return put_ms, rule_ms


def sample_label(node: Node, set_name: str, i: int) -> float:
    """Endpoint ``i`` gains the probe label -> its IP in the probe selector's ipset (ms); undone."""
    ip, labels, iface = endpoint_ip(i), endpoint_labels(i), f"calie{i:05d}"
    start = time.perf_counter()
    node.put_wep(f"ep{i}", iface, ip, {**labels, "probe": "on"})
    took = start_to(start, lambda: ip in members(set_name), f"{ip} in {set_name}")
    node.put_wep(f"ep{i}", iface, ip, labels)
    wait(lambda: ip not in members(set_name), TIMEOUT, f"{ip} out of {set_name}")
    return took


def sample_route(node: Node, k: int) -> float:
    """A new endpoint (its veth made just before, untimed) -> its /32 route (ms); the endpoint stays."""
    ip, iface = f"10.242.{k // 250}.{k % 250 + 1}", f"calin{k:05d}"
    node.links([iface])  # as a CNI ADD does: the veth first (untimed), then the endpoint
    start = time.perf_counter()
    node.put_wep(f"new{k}", iface, ip, {"app": "new"})
    return start_to(start, lambda: has_route(ip), f"route {ip}")


def start_to(start: float, pred: Callable[[], bool], what: str) -> float:
    """ms from ``start`` until ``pred`` holds (polled without pause; bounded by TIMEOUT)."""
    wait(pred, TIMEOUT - (time.perf_counter() - start), what, interval=0.0)
    return (time.perf_counter() - start) * 1000


def inner(args: argparse.Namespace) -> int:
    from policy.chain_names import policy_chain
    from policy.convert import policy_id

    with tempfile.TemporaryDirectory(prefix="fpe-dp-") as tmp:
        node = Node(Path(tmp))
        try:
            node.start_etcd()
            node.load(args.n, args.m)
            node.links([SEED_IFACE])
            node.put_wep("probe-seed", SEED_IFACE, SEED_IP, {"app": "seed", "probe": "on"})
            probe = {
                "order": 10,
                "selector": "app == 'a0'",
                "ingress": [{"action": "Allow", "source": {"selector": "probe == 'on'"}}],
            }
            node.put_policy("probe", probe)
            node.exec_agent()
            wait(node.ready, 300, "agent readiness", interval=0.05)
            wait(lambda: all(has_route(endpoint_ip(i)) for i in range(args.n)), 300, "every route", 0.2)
            ipt = node.iptables()
            set_name = wait_value(lambda: ipset_with(SEED_IP), 60)
            rule, label, route, put = [], [], [], []
            for k in range(args.samples):
                put_ms, rule_ms = sample_policy(node, ipt, k)
                put.append(put_ms)
                rule.append(rule_ms)
                label.append(sample_label(node, set_name, k % args.n))
                route.append(sample_route(node, k))
            chain = policy_chain(policy_id("gnp", "new0"), "Ingress")
            size = {"endpoints": args.n, "policies": args.m, "size": args.size}
            floor = sorted(put)[len(put) // 2]
            cost_ipt = sorted(poll_cost(lambda: sh(ipt, "-t", "filter", "-S", chain, check=False)))[10]
            cost_set = sorted(poll_cost(lambda: members(set_name)))[10]
            cost_route = sorted(poll_cost(lambda: has_route(SEED_IP)))[10]
            goal = f"goal p50 <= 50, p99 <= 150; etcd put {floor:.1f} ms"
            emit(summary("e2e_policy_put_to_rule", rule, "ms", f"{goal}, one {ipt} -S {cost_ipt:.1f} ms",
                         backend=ipt, **size))  # fmt: skip
            emit(
                summary(
                    "e2e_label_to_ipset", label, "ms", f"{goal}, one ipset list {cost_set:.1f} ms", **size
                )
            )
            emit(
                summary("e2e_wep_to_route", route, "ms", f"{goal}, one ip route {cost_route:.1f} ms", **size)
            )
            emit(summary("e2e_etcd_put", put, "ms", "the put alone (policy), from the same process", **size))
        finally:
            node.close()
    return 0


def wait_value(fn: object, timeout: float) -> str:
    """``fn()``'s first value that does not raise, within ``timeout`` s."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            return str(fn())  # type: ignore[operator]
        except RuntimeError as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"timed out: {last}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"bench.e2e_dataplane: {exc}", file=sys.stderr)
        return 2
    if args.in_ns:
        return inner(args)
    return outer("e2e_dataplane", argv)


if __name__ == "__main__":
    sys.exit(main())
