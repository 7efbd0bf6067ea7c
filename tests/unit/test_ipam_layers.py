"""ipam's pure modules do no I/O, and the CNI plugin stays light until it needs the datastore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBS = ("pyetcd", "grpc", "pyroute2", "kubernetes", "felixpy.datastore.etcd")


def _loaded(module: str) -> set[str]:
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    ["ipam.block", "ipam.allocator", "ipam.report", "ipam.pool_selectors", "ipam.errors", "ipam.pools"],
)
def test_pure_ipam_module_loads_no_io_library(module: str) -> None:
    bad = sorted(m for m in _loaded(module) for lib in IO_LIBS if m == lib or m.startswith(lib + "."))
    assert not bad, f"{module} loads {bad}"


def test_plugin_import_is_light() -> None:
    loaded = _loaded("ipam.plugin")
    heavy = sorted(
        m for m in loaded for lib in (*IO_LIBS, "pydantic", "yaml") if m == lib or m.startswith(lib + ".")
    )
    assert not heavy, f"ipam.plugin loads {heavy} before it needs them"


def test_plugin_version_without_datastore() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ipam.plugin"],
        cwd=ROOT,
        input="",
        capture_output=True,
        text=True,
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0
    assert json.loads(out.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
