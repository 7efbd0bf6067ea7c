"""Benchmark: write N chains x M rules through each iptables backend, in a throwaway namespace.

``python -m bench.bench_iptables [--chains 200] [--rules 10] [--repeat 3]`` (root). Prints one JSON
line per figure: the first full write (all chains new), a no-op apply (read + plan, nothing to
write), and a one-chain change. Creates ``fpt-bench-<pid>-<backend>`` namespaces and deletes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable

from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_backend import make_backend
from felixpy.dataplane.iptables_render import default_hooks
from felixpy.dataplane.kernel_objects import Chain, Rule

BACKENDS = ("legacy", "nft", "python-iptables")


def make_chains(n_chains: int, n_rules: int, *, salt: str = "") -> list[Chain]:
    chains = []
    for c in range(n_chains):
        rules = tuple(
            Rule(match=f"-s 10.{c % 250}.{r}.0/24 -p tcp -m tcp --dport {1000 + r}{salt}",
                 action="--jump ACCEPT")
            for r in range(n_rules)
        )
        chains.append(Chain(f"cali-pi-bench{c}", rules))
    jumps = tuple(Rule(action=f"--jump cali-pi-bench{c}") for c in range(n_chains))
    chains.append(Chain("cali-FORWARD", jumps))
    chains += [Chain("cali-INPUT"), Chain("cali-OUTPUT")]
    return chains


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_backend(kind: str, n_chains: int, n_rules: int, repeat: int) -> dict[str, float]:
    ns = f"fpt-bench-{os.getpid()}-{kind}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    backend = make_backend(kind, netns=ns)  # type: ignore[arg-type]
    hooks = [h for h in default_hooks() if h.table == "filter"]
    try:
        full, noop, one = [], [], []
        for i in range(repeat):
            writer = IptablesWriter(backend, hooks=hooks)
            chains = make_chains(n_chains, n_rules, salt="" if i % 2 == 0 else " ")
            writer.set_chains(chains)
            full.append(_timed(writer.apply))
            noop.append(_timed(writer.resync))
            writer.update_chain(Chain("cali-pi-bench0", (Rule(action=f"--jump DROP{'' if i else ' '}"),)))
            one.append(_timed(writer.apply))
            writer.set_chains([])
            writer.apply()
        return {"full_write_s": min(full), "noop_resync_s": min(noop), "one_chain_s": min(one)}
    finally:
        if hasattr(backend, "close"):
            backend.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for kind in BACKENDS:
        figures = bench_backend(kind, args.chains, args.rules, args.repeat)
        print(json.dumps({"bench": "iptables_write", "backend": kind, "chains": args.chains,
                          "rules_per_chain": args.rules, "cpus": os.cpu_count(),
                          "kernel": platform.release(), **{k: round(v, 4) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
