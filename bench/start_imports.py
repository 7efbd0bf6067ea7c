"""CPU of the agent's start-up imports: a fresh interpreter importing what ``felixpy node`` imports
before its first commit (the modules ``tests/unit/test_start_imports.py`` names, etcd mode, policy and
BGP on) and validating one WorkloadEndpoint, timed from outside (the child's user+sys from rusage).

    .venv/bin/python -m bench.start_imports [--runs 12] [--python OTHER_TREE/.venv/bin/python]

With ``--python`` the other interpreter (another checkout's venv: its own code) runs interleaved with
this one (A, B, A, B ...), and both are reported. Reference: a bare interpreter (``pass``) in the same
run. Leaves out: the agent's start-up steps (etcd round trips, node address), the snapshot read, the
calc, the dataplane, and the page cache being cold (the .pyc files are warm after the first run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

MODULES = (
    "felixpy.main, felixpy.agent, felixpy.runtime.startup, felixpy.datastore.config, "
    "felixpy.datastore.etcd, bgp.service, felixpy.dataplane.bgp_sink, felixpy.dataplane.ipset_writer, "
    "felixpy.dataplane.iptables, felixpy.dataplane.iptables_backend, felixpy.dataplane.policy_driver, "
    "policy.chains, policy.compiler, felixpy.calc.wireguard, felixpy.dataplane.wireguard_driver, "
    "felixpy.runtime.node_status_reporter, felixpy.cni.handler, ipam.ipam"
)
# With the collector paused as the agent pauses it over its imports and build, and what they built
# frozen (felixpy.interpreter.gc_paused); an older tree without it, given with --python, runs with the
# collector on, as its agent does. The tail allocates as the start goes on: the first collections after.
CODE = (
    "import contextlib, felixpy.interpreter\n"
    "pause = getattr(felixpy.interpreter, 'gc_paused', None)\n"
    "with pause(freeze=True) if pause else contextlib.nullcontext():\n"
    f"    import {MODULES}\n"
    "    from felixpy.resources import WorkloadEndpoint\n"
    "    spec = {'node': 'n', 'interfaceName': 'cali1', 'ipNetworks': ['10.0.0.1/32']}\n"
    "    WorkloadEndpoint.model_validate({'metadata': {'name': 'a', 'namespace': 'b'}, 'spec': spec})\n"
    "tail = [[] for _ in range(5000)]\n"
)


def child_cpu(python: str, code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # -P: the current directory not on sys.path, so each venv imports its own tree's code (its
    # editable install), not the checkout the bench was started from.
    subprocess.run([python, "-P", "-c", code], check=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--python", help="a second interpreter (another tree's venv), run interleaved")
    args = ap.parse_args(argv)
    pythons = {"this": sys.executable, **({"other": args.python} if args.python else {})}
    samples: dict[str, list[float]] = {name: [] for name in pythons}
    bare = [child_cpu(sys.executable, "pass") for _ in range(3)]
    for _ in range(max(1, args.runs)):
        for name, python in pythons.items():
            samples[name].append(child_cpu(python, CODE))
    for name, values in samples.items():
        record = {
            "name": f"start_imports_cpu_{name}",
            "value": round(statistics.median(values), 3),
            "unit": "s",
            "min": round(min(values), 3),
            "max": round(max(values), 3),
            "n": len(values),
            "python": pythons[name],
            "reference": f"bare interpreter {statistics.median(bare):.3f} s",
            "load1": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
