"""felixctl benchmark: large applies, and refusing a file over the document limit (issue 12).

    .venv/bin/python bench/felixctl.py [--policies 10000] [--oversized 335357]

Starts its own etcd on loopback (temp dir, removed at the end) and prints one JSON line per
figure: {"name", "value", "unit", "reference": {...}}. Each felixctl runs as the real command in
a child of a small wrapper that reports the child's wall time and peak RSS.

1. `felixctl apply` of N GlobalNetworkPolicies into an empty etcd, then again (all updates).
2. `felixctl apply` of a file of M policies (over the 10,000-document limit): refused, nothing
   written. Reference: the issue's run of the same shape before the limits (50 MB, 335,357
   policies: 240 s, 2.1 GB RSS, 8,575 written when killed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from felixpy.datastore.etcd import EtcdKV
from felixpy.datastore.resources import ROOT

FELIXCTL = str(Path(sys.executable).parent / "felixctl")
POLICY = (
    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: gnp-{i:06d}\n"
    "spec:\n  selector: app == 'x{i}'\n  ingress:\n  - action: Allow\n"
    "    source: {{selector: role == 'frontend'}}\n---\n"
)
WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'rc': p.returncode, 'seconds': time.monotonic() - t, 'out': p.stdout + p.stderr,\n"
    "                  'rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)


def write_policies(path: Path, count: int) -> int:
    with open(path, "w") as f:
        for i in range(count):
            f.write(POLICY.format(i=i))
    return path.stat().st_size


def felixctl(endpoints: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "ETCD_ENDPOINTS": endpoints}
    env.pop("DATASTORE_TYPE", None)
    argv = [sys.executable, "-c", WRAPPER, FELIXCTL, *args]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def emit(name: str, value: float, unit: str, **reference: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 2), "unit": unit, "reference": reference}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--oversized", type=int, default=335_357)
    args = parser.parse_args()
    from tests.fixtures.etcd import EtcdProcess

    base = Path(tempfile.mkdtemp(prefix="felixpy-bench-felixctl-"))
    etcd = EtcdProcess(base)
    try:
        etcd.start()
        kv = EtcdKV(etcd.endpoints, timeout=60)
        path = base / "policies.yaml"
        size = write_policies(path, args.policies)
        for phase in ("create", "update"):
            r = felixctl(etcd.endpoints, "apply", "-f", str(path))
            assert r["rc"] == 0, r["out"]
            emit(f"apply {args.policies} policies ({phase})", r["seconds"], "s", rss_mib=round(r["rss_mib"]),
                 file_mb=round(size / 1e6, 1), output=r["out"].strip())  # fmt: skip
        kv.delete_prefix(ROOT)
        size = write_policies(path, args.oversized)
        r = felixctl(etcd.endpoints, "apply", "-f", str(path))
        written = len(kv.list(ROOT)[0])
        assert r["rc"] == 1 and written == 0, (r, written)
        emit(f"refuse {args.oversized} policies ({size / 1e6:.0f} MB)", r["seconds"], "s",
             rss_mib=round(r["rss_mib"]), written=written, output=r["out"].strip(),
             before_limits={"seconds": 240, "rss_mib": 2100, "written": 8575, "file_mb": 50})  # fmt: skip
        kv.close()
    finally:
        etcd.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"machine": {"nproc": os.cpu_count(), "uname_r": os.uname().release}}), file=sys.stderr)


if __name__ == "__main__":
    main()
