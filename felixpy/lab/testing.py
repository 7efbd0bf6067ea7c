"""Helpers for tests that drive ``felixpy-lab`` as a user would (through its CLI).

::

    with LabCLI.unique("e2e") as lab:        # down in finally, even when the test fails
        lab.ok("up", "--nodes", "2")
        status = lab.status()                # validated against status_schema.json
        lab.ok("pod", "add", "x/a", "--node", "node1", "--serve", "80")
        assert lab.run("probe", "x/a", "x/b", "80").returncode == 0

``root_snapshot()`` records what of the root namespace a lab could conceivably touch, so a
test can assert that ``up`` + ``down`` changed nothing there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from felixpy.lab.layout import LabNames

# The VM stage runs labs under QEMU's TCG (~30x slower): the fixed waits below scale as the lab's own do.
TIME_SCALE = max(1.0, float(os.environ.get("FELIXPY_TIME_SCALE", "1") or 1))
# FELIXPY_LAB_TRACE=1 (set by the VM stage): every felixpy-lab command and its time printed (pytest -s).
TRACE = os.environ.get("FELIXPY_LAB_TRACE") == "1"

# Substrings marking lines of root-namespace state that would belong to a lab.
_MARKERS = ("10.99.", "10.98.", "10.244.", "cali", "v-node", "v-rr", "v-etcd", "tunl0", "vxlan.calico")


def missing_prerequisites(*extra: str) -> str | None:
    """Why a lab test cannot run here (not root, a binary missing), or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for binary in ("ip", "etcd", "etcdctl", *extra):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    if not (Path(sys.executable).parent / "felixpy-lab").exists():
        return "felixpy-lab console script is not installed"
    return None


def root_snapshot() -> set[str]:
    """Lines of root links, routes and iptables rules that look like a lab's."""
    lines: set[str] = set()
    for argv in (["ip", "-o", "link"], ["ip", "route", "show", "table", "all"], ["iptables-save"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in out.splitlines():
            if line.startswith("#") or line.startswith(":"):
                continue
            if any(m in line for m in _MARKERS):
                lines.add(line.split("\\", 1)[0].strip())
    return lines


class LabCLI:
    """One named lab driven through ``felixpy-lab``; a context manager that always tears down."""

    def __init__(self, name: str, *, timeout: float = 240.0) -> None:
        self.name = name
        self.names = LabNames(name)
        self.timeout = timeout
        self.binary = str(Path(sys.executable).parent / "felixpy-lab")

    @classmethod
    def unique(cls, tag: str, **kw: Any) -> LabCLI:
        return cls(f"{tag[:3]}{os.getpid() % 100000}", **kw)

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--name", self.name, *args]
        limit = timeout or self.timeout
        started = time.monotonic()
        # The VM stage (TRACE): where a slow lab spends its time, live in the console log; up's and
        # down's own progress lines (each step and its time) go straight there as they happen.
        live = TRACE and bool(args) and args[0] in ("up", "down")
        proc = subprocess.run(argv, stdout=None if live else subprocess.PIPE, stderr=subprocess.STDOUT if live
                              else subprocess.PIPE, text=True, timeout=limit, check=False)
        if TRACE:
            took = time.monotonic() - started
            cmd = " ".join(args)[:90]
            print(f"[lab-trace] felixpy-lab {cmd} -> {proc.returncode} in {took:.1f}s", flush=True)
        if live:
            proc.stdout, proc.stderr = "", ""
        return proc

    def ok(self, *args: str, timeout: float | None = None) -> str:
        proc = self.run(*args, timeout=timeout)
        if proc.returncode != 0:
            cmd = " ".join(args)
            raise AssertionError(f"felixpy-lab {cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def status(self) -> dict[str, Any]:
        import jsonschema

        from felixpy.lab.status import schema

        doc: dict[str, Any] = json.loads(self.ok("status", "-o", "json", timeout=60 * TIME_SCALE))
        jsonschema.validate(doc, schema())
        return doc

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", timeout=120 * TIME_SCALE)

    def __enter__(self) -> LabCLI:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()
