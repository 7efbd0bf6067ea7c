"""Policy benchmark: the pure compiler, then (as root) the compiler driving the real kernel.

Pure part. 20 namespaces, 1,000 workload endpoints (50 apps), 500 Kubernetes
NetworkPolicies (each selects one app, allows ingress from another app and from a namespace
on two ports, and egress to a named port): full compile, one incremental policy change.

Kernel part (``--kernel``, root; everything inside throwaway network namespaces). 1,000 local
endpoints and 500 *mixed* policies (k8s with pod/namespace selectors and named ports, k8s
with ipBlock/except, Calico NetworkPolicy with set and negated selectors and notNets, Calico
GlobalNetworkPolicy with has()/namespaceSelector/named ports), plus two policies that let
the iperf3 flow through. Interfaces need not exist for programming: dispatch is by name.
Per backend (iptables-restore legacy and nft; python-iptables at ``--iptc-local`` endpoints):
time from in-sync (every input known) to applied (compile + ipsets + iptables), the raw
``iptables-restore`` of the final ruleset into an empty namespace (the floor), one policy
change and one endpoint label change through compile+apply, rule and ipset counts. Then
iperf3 between two real pods of the node, before any rule is loaded and with the full set.

Prints one JSON line per figure: {"name", "value", "unit", "reference"}.

    python -m bench.bench_policy [--local N]              # pure part only
    sudo python -m bench.bench_policy --kernel            # pure + kernel part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from policy.compiler import PolicyCompiler
from policy.convert import policy_from_doc
from policy.entities import Endpoint, NamedPort, Policy
from tests.fixtures.conformance_cases import block, calico, knp, peer, port

N_NS, N_EP, N_POL, N_APPS = 20, 1000, 500, 50


def endpoints(local: int) -> list[Endpoint]:
    return [
        Endpoint(
            key=f"ns{i % N_NS}/pod{i}",
            namespace=f"ns{i % N_NS}",
            labels={"app": f"app{i % N_APPS}", "tier": ("web", "db", "cache")[i % 3]},
            ips=(f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}",),
            ports=(NamedPort("http", 6, 8080),),
            iface=f"cali{i:011x}",
            node="node0" if i < local else "node1",
            profiles=(f"kns.ns{i % N_NS}",),
        )
        for i in range(N_EP)
    ]


def policy(i: int, variant: int = 0) -> Policy:
    ns = f"ns{i % N_NS}"
    ingress = [
        {
            "from": [peer({"app": f"app{(i + 1) % N_APPS}"}), peer(ns={"team": f"t{i % 5}"})],
            "ports": [port(80 + variant), port(443)],
        }
    ]
    egress = [{"to": [peer({"app": f"app{(i + 2) % N_APPS}"}, any_ns=True)], "ports": [port("http")]}]
    doc: dict[str, Any] = knp(f"pol{i}", ns, {"app": f"app{i % N_APPS}"}, ingress=ingress, egress=egress)
    return policy_from_doc(doc)


def emit(name: str, value: float, unit: str, reference: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "reference": reference}))


def pure(args: argparse.Namespace) -> None:
    eps = endpoints(args.local)
    pols = [policy(i) for i in range(N_POL)]
    py = f"{platform.python_implementation()} {platform.python_version()}"
    ref = f"{N_EP} endpoints ({args.local} local) x {N_POL} k8s policies, {py}"

    t0 = time.perf_counter()
    c = PolicyCompiler("node0")
    for ns in range(N_NS):
        c.update_namespace_labels(f"ns{ns}", {"team": f"t{ns % 5}"})
    for ep in eps:
        c.update_endpoint(ep)
    for p in pols:
        c.update_policy(p)
    changes = c.dirty()
    full = time.perf_counter() - t0
    emit("policy_full_compile", full, "s", ref)
    emit("policy_full_compile_chains", len(changes.chains), "chains", ref)
    emit("policy_full_compile_ipsets", len(changes.ipsets), "ipsets", ref)

    samples = []
    for k in range(20):
        t0 = time.perf_counter()
        c.update_policy(policy(k * 7, variant=1 + k % 2))
        out = c.dirty()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    emit(
        "policy_one_rule_change_p50",
        samples[len(samples) // 2] * 1000,
        "ms",
        ref + "; rule change, same selector",
    )
    emit("policy_one_rule_change_chains", len(out.chains), "chains", ref)

    relabel = []
    for k in range(10):
        ep = eps[k]
        t0 = time.perf_counter()
        c.update_endpoint(Endpoint(**{**ep.__dict__, "labels": {"app": f"app{7 + k}", "tier": "db"}}))
        c.dirty()
        relabel.append(time.perf_counter() - t0)
    relabel.sort()
    emit("policy_endpoint_relabel_p50", relabel[5] * 1000, "ms", ref + "; one local endpoint relabelled")


# ============================================================================ kernel part


def mixed_policy(i: int, variant: int = 0) -> Any:
    """Four shapes, round robin: k8s selectors + named port, k8s ipBlock, Calico NP, Calico GNP."""
    shape, app, ns = i % 4, f"app{i % N_APPS}", f"ns{i % N_NS}"
    if shape == 0:
        return policy(i, variant)
    if shape == 1:
        net = f"10.{200 + i % 50}.0.0/16"
        ingress = [{"from": [block(net, f"10.{200 + i % 50}.{i % 256}.0/24")], "ports": [port(80 + variant)]}]
        egress = [{"to": [block("0.0.0.0/0", "169.254.0.0/16")], "ports": [port("http"), port(53, "UDP")]}]
        return policy_from_doc(knp(f"pol{i}", ns, {"app": app}, ingress=ingress, egress=egress))
    if shape == 2:
        spec = {
            "order": 100 + i,
            "selector": f"app in {{'{app}', 'app{(i + 3) % N_APPS}'}}",
            "ingress": [
                {"action": "Deny", "source": {"nets": [f"10.{100 + i % 50}.0.0/16"]}},
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": f"tier == 'web' && app != 'app{(i + 1) % N_APPS}'"},
                    "destination": {"ports": [80 + variant, "http"]},
                },
            ],
            "egress": [
                {
                    "action": "Allow",
                    "destination": {"notSelector": "tier == 'cache'", "notNets": ["10.250.0.0/16"]},
                }
            ],
        }
        return policy_from_doc(calico("NetworkPolicy", f"pol{i}", spec, ns=ns))
    spec = {
        "order": 1000 + i,
        "selector": f"has(tier) && app == '{app}'",
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"namespaceSelector": f"team == 't{i % 5}'"},
                "destination": {"ports": ["http", 443 + variant]},
            }
        ],
        "egress": [
            {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
            {"action": "Allow", "destination": {"selector": f"app == 'app{(i + 5) % N_APPS}'"}},
        ],
    }
    return policy_from_doc(calico("GlobalNetworkPolicy", f"pol{i}", spec))


IPERF_PORT = 5201
SERVER, CLIENT = 50, 1  # endpoint indexes backed by real pods: ns10/app0 and ns1/app1


def iperf_policies() -> list[Policy]:
    """Let the iperf3 flow (CLIENT -> SERVER:5201) through the 500 policies that select them."""
    to_srv = peer({"app": "app0"}, any_ns=True)
    from_cli = peer({"app": "app1"}, any_ns=True)
    return [
        policy_from_doc(
            knp(
                "iperf-in",
                "ns10",
                {"app": "app0"},
                ingress=[{"from": [from_cli], "ports": [port(IPERF_PORT)]}],
            )
        ),
        policy_from_doc(
            knp(
                "iperf-out",
                "ns1",
                {"app": "app1"},
                types=["Egress"],
                egress=[{"to": [to_srv], "ports": [port(IPERF_PORT)]}],
            )
        ),
    ]


def _ms(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2] * 1000


def feed(dp: Any, eps: list[Endpoint], pols: list[Policy]) -> None:
    for ns in range(N_NS):
        dp.compiler.update_namespace_labels(f"ns{ns}", {"team": f"t{ns % 5}"})
    for ep in eps:
        dp.compiler.update_endpoint(ep)
    for p in pols:
        dp.compiler.update_policy(p)


def program(netns: str, backend: str, eps: list[Endpoint], pols: list[Policy], ref: str) -> tuple[Any, float]:
    """In-sync -> applied into ``netns``; emits compile/write/total; returns (dataplane, write s).
    Compile: the handlers, then ``dirty()`` (which renders the endpoint chains and dispatch the
    handlers deferred); write: the agent's ``write_changes`` (ipsets, iptables, ipset deletions)."""
    from felixpy.dataplane.policy_driver import write_changes
    from tests.kernel.policy_topology import PolicyDataplane

    dp = PolicyDataplane(netns, backend=backend, node="node0")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    feed(dp, eps, pols)
    out = dp.compiler.dirty()
    compiled = time.perf_counter()
    write_changes(out, dp.iptables, dp.ipsets)
    done = time.perf_counter()
    emit(f"policy_kernel_{backend}_compile", compiled - t0, "s", ref)
    emit(f"policy_kernel_{backend}_write", done - compiled, "s", ref)
    emit(f"policy_kernel_{backend}_in_sync_to_applied", done - t0, "s", ref + "; goal <= 5 s")
    return dp, done - compiled


def changes(dp: Any, backend: str, eps: list[Endpoint], ref: str) -> None:
    """One policy change and one relabel, compile + apply, p50 of 10 each; then the periodic
    resync (full re-read and compare) and the bare table read, for scale."""
    reads: list[str] = []
    real_read = dp.iptables.backend.read

    def counting_read(table: str) -> Any:
        reads.append(table)
        return real_read(table)

    dp.iptables.backend.read = counting_read
    pol, relabel = [], []
    for k in range(10):
        t0 = time.perf_counter()
        dp.compiler.update_policy(mixed_policy(k * 7, variant=1 + k % 2))
        dp.apply()
        pol.append(time.perf_counter() - t0)
    for k in range(10):
        ep = eps[len(eps) // 2 + k]
        t0 = time.perf_counter()
        dp.compiler.update_endpoint(replace(ep, labels={"app": f"app{7 + k}", "tier": "db"}))
        dp.apply()
        relabel.append(time.perf_counter() - t0)
    emit(
        f"policy_kernel_{backend}_reads_during_changes",
        len(reads),
        "reads",
        ref + "; iptables-save calls during the 20 changes (cached view: expect 0)",
    )
    goal = "; compile+apply, p50 of 10, goal <= 100 ms"
    emit(f"policy_kernel_{backend}_policy_change_p50", _ms(pol), "ms", ref + goal)
    emit(f"policy_kernel_{backend}_relabel_p50", _ms(relabel), "ms", ref + goal)
    worst = "; compile+apply, worst of 10 (machine noise included)"
    emit(f"policy_kernel_{backend}_policy_change_max", max(pol) * 1000, "ms", ref + worst)
    emit(f"policy_kernel_{backend}_relabel_max", max(relabel) * 1000, "ms", ref + worst)
    t0 = time.perf_counter()
    ops = sum(r.ops for r in dp.iptables.resync())
    emit(
        f"policy_kernel_{backend}_resync",
        (time.perf_counter() - t0) * 1000,
        "ms",
        ref + f"; periodic refresh: re-read + compare every chain, {ops} ops (expect 0)",
    )
    t0 = time.perf_counter()
    real_read("filter")
    emit(
        f"policy_kernel_{backend}_read_filter",
        (time.perf_counter() - t0) * 1000,
        "ms",
        ref + "; one iptables-save -t filter + parse (now only on resync/failure)",
    )
    dp.iptables.backend.read = real_read


def raw_restore(spaces: Any, src: Any, mode: str, write_s: float, ref: str) -> None:
    """The floor: the final ruleset, saved, restored whole into an empty namespace."""
    dump = src.run(f"iptables-{mode}-save")
    sets = src.run("ipset", "save")
    dst = spaces.make(f"raw{mode}")
    t0 = time.perf_counter()
    dst.run("ipset", "restore", input=sets)
    t1 = time.perf_counter()
    dst.run(f"iptables-{mode}-restore", input=dump)
    t2 = time.perf_counter()
    emit(f"policy_kernel_{mode}_raw_ipset_restore", t1 - t0, "s", ref)
    emit(f"policy_kernel_{mode}_raw_iptables_restore", t2 - t1, "s", ref + "; the floor")
    vs = "; writers vs raw ipset+iptables restore, goal <= 3"
    emit(f"policy_kernel_{mode}_write_vs_raw", write_s / (t2 - t0), "x", ref + vs)
    rules = sum(1 for line in dump.splitlines() if line.startswith("-A "))
    emit(f"policy_kernel_{mode}_rules", rules, "rules", ref)


def counts(dp: Any, ref: str) -> None:
    sets = dp.compiler.ipsets()
    emit("policy_kernel_chains", len(dp.compiler.chains()), "chains", ref)
    emit("policy_kernel_ipsets", len(sets), "ipsets", ref)
    emit("policy_kernel_ipset_members", sum(len(s.members) for s in sets.values()), "members", ref)


def no_policies(dp: Any, pols: list[Policy], ref: str) -> None:
    """Remove every policy (one batch): what a node with felixpy and no NetworkPolicy runs."""
    t0 = time.perf_counter()
    for p in pols:
        dp.compiler.remove_policy(p.id)
    dp.apply()
    emit(
        "policy_kernel_legacy_remove_all_policies",
        time.perf_counter() - t0,
        "s",
        ref + "; one batch, compile + apply on the cached view",
    )
    text = subprocess.run(
        ["ip", "netns", "exec", dp.netns, "iptables-legacy-save", "-t", "filter"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    emit("policy_kernel_no_policies_rules", text.count("\n-A "), "rules", f"{N_EP} endpoints, no policies")


def wire_pods(spaces: Any, node: Any, eps: list[Endpoint]) -> tuple[list[Endpoint], dict[int, Any]]:
    """Real pods behind the SERVER and CLIENT endpoints (whose interfaces get the real names)."""
    from felixpy.dataplane.iface_names import veth_name_for_workload
    from felixpy.dataplane.links import VethSpec, WorkloadLinks

    links = WorkloadLinks(host_netns=node.name)
    out, pods = list(eps), {}
    for i in (SERVER, CLIENT):
        ep = eps[i]
        iface = veth_name_for_workload(*ep.key.split("/"))
        pods[i] = spaces.make(f"pod{i}")
        links.create(VethSpec(host_ifname=iface, netns=pods[i].path, addresses=ep.ips))
        node.run("ip", "route", "add", f"{ep.ips[0]}/32", "dev", iface, "scope", "link", "proto", "80")
        out[i] = replace(ep, iface=iface)
    return out, pods


def iperf(server: Any, client: Any, ip: str, seconds: int) -> float:
    """One iperf3 TCP run client -> server; bits/s received."""
    argv = ["ip", "netns", "exec", server.name, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)]
    srv = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # bounded: 5 s for the server to listen
            if f":{IPERF_PORT}" in server.run("ss", "-ltn"):
                break
            time.sleep(0.1)
        out = client.run("iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J")
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        srv.kill()
        srv.wait(timeout=10)


def throughput(pods: dict[int, Any], eps: list[Endpoint], args: argparse.Namespace) -> float:
    """Best of ``--iperf-rounds``: on a shared machine other jobs only ever slow a run down."""
    runs = [
        iperf(pods[SERVER], pods[CLIENT], eps[SERVER].ips[0], args.iperf_seconds)
        for _ in range(args.iperf_rounds)
    ]
    return max(runs)


def kernel_backends(spaces: Any, args: argparse.Namespace) -> None:
    pols = [mixed_policy(i) for i in range(N_POL)] + iperf_policies()
    ref = f"{N_EP} local endpoints x {len(pols)} mixed policies"
    planes = []
    if "legacy" in args.backends:
        planes.append(legacy_and_iperf(spaces, args, pols, ref))
    if "nft" in args.backends:
        nft = spaces.make("nft")
        dp_nft, write_nft = program(nft.name, "nft", endpoints(N_EP), pols, ref)
        raw_restore(spaces, nft, "nft", write_nft, ref)
        changes(dp_nft, "nft", endpoints(N_EP), ref)
        planes.append(dp_nft)
    if "python-iptables" in args.backends:
        small = spaces.make("iptc")
        small_ref = f"SMALLER: {args.iptc_local} local endpoints x {args.iptc_policies} mixed policies"
        small_eps = endpoints(N_EP)[: args.iptc_local]
        dp_iptc, _ = program(small.name, "python-iptables", small_eps, pols[: args.iptc_policies], small_ref)
        changes(dp_iptc, "python-iptables", small_eps, small_ref)
        planes.append(dp_iptc)
    for plane in planes:
        plane.close()


def legacy_and_iperf(spaces: Any, args: argparse.Namespace, pols: list[Policy], ref: str) -> Any:
    """The legacy backend on the node with the two iperf3 pods: throughput before and after."""
    from felixpy.dataplane.sysctl import enable_ip_forwarding
    from tests.kernel.policy_topology import uplink

    node = spaces.make("legacy")
    enable_ip_forwarding(netns=node.name, ipv6=False)
    uplink(node)
    eps, pods = wire_pods(spaces, node, endpoints(N_EP))
    bare = throughput(pods, eps, args)
    dp, write_s = program(node.name, "legacy", eps, pols, ref)
    loaded = throughput(pods, eps, args)
    raw_restore(spaces, node, "legacy", write_s, ref)
    changes(dp, "legacy", eps, ref)
    counts(dp, ref)
    no_policies(dp, pols, ref)
    chains_only = throughput(pods, eps, args)
    iperf_ref = f"iperf3 TCP pod->pod one node, {args.iperf_seconds} s, best of {args.iperf_rounds}"
    emit("policy_kernel_iperf_no_rules", bare / 1e9, "Gbit/s", iperf_ref + "; no iptables rules at all")
    emit(
        "policy_kernel_iperf_chains_no_policies",
        chains_only / 1e9,
        "Gbit/s",
        iperf_ref + f"; felixpy's chains for {N_EP} endpoints, no policies",
    )
    emit("policy_kernel_iperf_policies_loaded", loaded / 1e9, "Gbit/s", iperf_ref + "; " + ref)
    emit("policy_kernel_iperf_ratio_vs_no_rules", loaded / bare, "ratio", iperf_ref + "; goal >= 0.9")
    emit(
        "policy_kernel_iperf_ratio_vs_no_policies",
        loaded / chains_only,
        "ratio",
        iperf_ref + "; the fair baseline; goal >= 0.9",
    )
    return dp


def kernel(args: argparse.Namespace) -> None:
    """The kernel part; every namespace it made is deleted, even on failure."""
    if os.geteuid() != 0:
        print("kernel part skipped: needs root (network namespaces)", file=sys.stderr)
        return
    from tests.kernel.policy_topology import NamespaceSet

    spaces = NamespaceSet()
    try:
        kernel_backends(spaces, args)
    finally:
        spaces.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=N_EP, help="endpoints on the compiled node (pure part)")
    ap.add_argument("--kernel", action="store_true", help="also run the kernel part (root)")
    ap.add_argument("--iptc-local", type=int, default=100, help="local endpoints for python-iptables")
    ap.add_argument("--iptc-policies", type=int, default=50, help="policies for python-iptables")
    ap.add_argument("--iperf-seconds", type=int, default=3)
    ap.add_argument("--iperf-rounds", type=int, default=4)
    ap.add_argument(
        "--backends",
        default="legacy,nft,python-iptables",
        help="comma list of kernel backends to run (legacy also runs the iperf3 part)",
    )
    ap.add_argument(
        "--interpreter-default", action="store_true", help="CPython's GC/switch settings, not the agent's"
    )
    args = ap.parse_args()
    if not args.interpreter_default:
        from felixpy import interpreter

        interpreter.tune()  # the compiler and writers run in this process: settings as the agent's
    args.backends = set(args.backends.split(","))
    if args.backends - {"legacy", "nft", "python-iptables"}:
        ap.error(f"unknown backend in --backends: {sorted(args.backends)}")
    pure(args)
    if args.kernel:
        kernel(args)


if __name__ == "__main__":
    main()
