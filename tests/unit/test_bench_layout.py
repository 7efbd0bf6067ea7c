"""Benchmarks live in bench/, run as ``python -m bench.<name>``, and never hide a package.

A script ``bench/policy.py`` run by path puts bench/ first on sys.path, where its own name hides the
``policy`` package; the old cure was to patch sys.path. Now no bench module is named like a package
and none touches sys.path, and no package ships benchmark or test-case code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("felixpy", "bgp", "policy", "ipam", "tests")


def _bench_modules() -> list[Path]:
    return sorted((ROOT / "bench").glob("*.py"))


def test_no_bench_module_is_named_like_a_package() -> None:
    clashes = [p.name for p in _bench_modules() if p.stem in PACKAGES]
    assert not clashes, f"bench modules named like a package (rename to bench_<name>.py): {clashes}"


def test_no_bench_module_patches_sys_path() -> None:
    patched = []
    for path in _bench_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            sys_path = isinstance(node, ast.Attribute) and node.attr == "path"
            if sys_path and getattr(node.value, "id", "") == "sys":
                patched.append(path.name)
                break
    assert not patched, f"bench modules that change sys.path: {patched}"


def test_packages_hold_no_benchmark_or_test_cases() -> None:
    found = [
        str(p.relative_to(ROOT))
        for pkg in ("felixpy", "bgp", "policy", "ipam")
        for p in (ROOT / pkg).rglob("*.py")
        if p.stem in ("bench", "conftest")
        or p.stem.endswith(("_cases", "_bench"))
        or p.stem.startswith("test_")
    ]
    assert not found, f"test or benchmark code inside a package: {found}"
