"""The pure layers stay pure: calc, policy and the pure parts of ipam and bgp import nothing that does I/O.

Each module is imported in a fresh interpreter and the set of loaded modules is checked, so an
indirect import (a pure module importing a helper that imports pyroute2) is caught too.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Libraries that talk to the kernel, a datastore, a process or the network.
FORBIDDEN = ("pyroute2", "pyetcd", "grpc", "iptc", "kubernetes", "exabgp", "prometheus_client")

PURE_PACKAGES = ("policy", "felixpy.calc")
PURE_MODULES = (
    "ipam.block",
    "ipam.allocator",
    "bgp.topology",
    "bgp.bestpath",
    "bgp.rib",
    "bgp.reflect",
    "bgp.filters",
    "bgp.exabgp_api",
    "bgp.exabgp_config",
    "felixpy.controllers.gc_plan",
    "felixpy.controllers.sync_plan",
)


def _pure_modules() -> list[str]:
    names: list[str] = []
    for pkg in PURE_PACKAGES:
        path = ROOT.joinpath(*pkg.split("."))
        names.append(pkg)
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules([str(path)])]
    names += [m for m in PURE_MODULES if ROOT.joinpath(*m.split(".")).with_suffix(".py").exists()]
    return names


def _loaded_after_import(module: str) -> list[str]:
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", _pure_modules())
def test_pure_module_imports_no_io_library(module: str) -> None:
    loaded = _loaded_after_import(module)
    bad = sorted({m for m in loaded for f in FORBIDDEN if m == f or m.startswith(f + ".")})
    assert not bad, f"{module} is a pure module but loads {bad}"
