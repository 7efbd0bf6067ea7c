"""Policy compiler benchmark: full compile and one incremental policy change.

Scenario: 20 namespaces, 1,000 workload endpoints (50 apps), 500 Kubernetes
NetworkPolicies (each selects one app, allows ingress from another app and from a namespace
on two ports, and egress to a named port). Prints one JSON line per figure:
{"name", "value", "unit", "reference"}.

    python bench/policy.py [--local N]   # N endpoints on the compiled node (default 1000)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path and its name would hide
# the ``policy`` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from policy.compiler import PolicyCompiler  # noqa: E402
from policy.conformance_cases import knp, peer, port  # noqa: E402
from policy.convert import policy_from_doc  # noqa: E402
from policy.model import Endpoint, NamedPort, Policy  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=N_EP, help="endpoints on the compiled node")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
