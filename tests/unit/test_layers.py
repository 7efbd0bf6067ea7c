"""The layers hold: the pure ones import nothing that does I/O, and every module keeps the layer contract.

The contract (``LAYERS`` below, read from the source): plain data and the selector language, then
resources, the datastore, pure logic, kernel I/O, the drivers, the agent runtime and the programs on
top; a module imports only from its own layer or below, and no modules import each other in a circle.

Each module is imported in a fresh interpreter and the set of loaded modules is checked, so an
indirect import (a pure module importing a helper that imports pyroute2) is caught too.
"""

from __future__ import annotations

import ast
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
    "ipam.reservations",
    "bgp.topology",
    "bgp.bestpath",
    "bgp.rib",
    "bgp.reflect",
    "bgp.filters",
    "bgp.exabgp_api",
    "bgp.command_errors",
    "bgp.exabgp_config",
    "bgp.bfd_packet",
    "bgp.bfd_session",
    "bgp.bfd_config",
    "bgp.bfd_gate",
    "bgp.bfd_status",
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


# --------------------------------------------------------------------------- the layer contract
# Every module of every package sits in one layer; a module imports only from its own layer or
# below (every import counts: module level, inside functions, under TYPE_CHECKING), and no
# modules import each other in a circle. A new module must be placed here before it can land.
# An entry names a module, or a package and everything under it; the longest entry wins. The
# packages' own __init__ modules are at the floor and must import nothing of the project.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "plain data and the selector language",
        (
            "felixpy.logs",
            "felixpy.private_files",  # explicit file modes (a leaf: imports nothing of the project)
            "felixpy.servers",  # socketserver loops with a long poll (a leaf: imports nothing of the project)
            "felixpy.dataplane.kernel_objects",  # Chain, Rule, IpSet, RouteTarget: written by policy and calc
            "felixpy.dataplane.iface_names",  # interface names (kube.convert, policy, the drivers)
            "policy.tokens",
            "policy.selector",
        ),
    ),
    ("resources", ("felixpy.resources",)),
    ("datastore", ("felixpy.datastore", "felixpy.kube")),
    (
        "pure logic",
        (
            "felixpy.calc",
            "felixpy.controllers.gc_plan",
            "felixpy.controllers.sync_plan",
            "policy",
            *(f"ipam.{m}" for m in ("block", "allocator", "pools", "report", "pool_selectors", "errors")),
            "ipam.reservations",  # IPReservation: which ordinals no allocation may take
            *(
                f"bgp.{m}"
                for m in (
                    "topology",
                    "route",
                    "rib",
                    "bestpath",
                    "reflect",
                    "filters",
                    "peer_filters",
                    "advertiser",
                    "command_errors",
                    "exabgp_config",
                    "exabgp_api",
                    "engine",
                    "peer_selectors",
                    "status",
                    "node_status",
                    "fib",
                    "wire",
                    "limits",
                    "bfd_packet",
                    "bfd_session",
                    "bfd_config",
                    "bfd_gate",
                    "bfd_status",
                )
            ),
        ),
    ),
    ("kernel I/O", ("felixpy.netlinkio", "bgp.rtnl")),
    (
        "drivers",
        (
            "felixpy.dataplane",
            "felixpy.cni",
            "felixpy.controllers",  # the passes, the lease, the cluster reader
            *(f"ipam.{m}" for m in ("store", "ipam", "tunnel", "release")),
            "ipam.plugin",  # the IPAM commands; the agent serves them too (felixpy.cni.ipam_service)
            *(
                f"bgp.{m}"
                for m in (
                    "fib_netlink",
                    "nexthop_iface",
                    "metrics",
                    "channel",
                    "speaker",
                    "service",
                    "bridge",
                    "exabgp_launch",
                    "exabgp_wire",
                    "bfd_daemon",
                    "bfd_client",
                    "bfd_metrics",
                )
            ),
        ),
    ),
    (
        "agent runtime",
        (
            "felixpy.runtime",  # the writer loop, sync sources, settings, start-up, config watch, health
            "felixpy.cni.handler",  # the agent's CNI handler: hands its writes to the writer loop
        ),
    ),
    (
        "programs",
        (
            "felixpy.agent",
            "felixpy.main",
            "felixpy.interpreter",
            "felixpy.ctl",
            "felixpy.controllers.runner",
            "felixpy.lab",
            "felixpy.kube.install_cni",
        ),
    ),
    ("benchmarks", ("bench",)),  # run as python -m bench.<name>; nothing in a package imports them
)
PROJECT = ("felixpy", "bgp", "policy", "ipam", "bench")
PACKAGES = ("felixpy", "bgp", "policy", "ipam")  # what ships: no test or benchmark code in them


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PROJECT:
        for path in ROOT.joinpath(pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _layer(module: str) -> int | None:
    if module in PROJECT:
        return 0
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for rank, (_name, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > best[0]):
                best = (len(entry), rank)
    return None if best is None else best[1]


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Project modules each module imports (``from a import b`` counts a.b when it is a module)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base])
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.split(".")[0] in PROJECT else None
                # a module importing its own package's __init__ is how Python loads it, not an arrow
                if target and target != module and not module.startswith(target + "."):
                    found.add(target)
        graph[module] = found
    return graph


def test_every_module_is_placed_in_a_layer() -> None:
    modules = _modules()
    unplaced = sorted(m for m in modules if _layer(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"
    graph = _imports(modules)
    assert not {root: graph[root] for root in PROJECT if graph[root]}, "a package __init__ imports"


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    modules = _modules()
    upward = [
        f"{module} ({LAYERS[_layer(module) or 0][0]}) imports {target} ({LAYERS[_layer(target) or 0][0]})"
        for module, targets in sorted(_imports(modules).items())
        for target in sorted(targets)
        if (_layer(target) or 0) > (_layer(module) or 0)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


# Names issue 14 found on several modules of different jobs (names.py x4, model.py x3, ...): each was
# renamed by its role, and none may come back as a bare name shared by two packages. Session 8 renamed
# four more pairs (runtime.node_status, dataplane.procs, netlinkio.writer, dataplane.wireguard).
AMBIGUOUS = (
    *("names", "model", "encap", "netlink", "ipsets", "selectors"),
    *("node_status", "procs", "writer", "wireguard"),
)


def test_modules_are_named_by_role_not_by_a_shared_generic_name() -> None:
    found: dict[str, list[str]] = {}
    for module in _modules():
        found.setdefault(module.rsplit(".", 1)[-1], []).append(module)
    shared = {name: sorted(found[name]) for name in AMBIGUOUS if len(found.get(name, ())) > 1}
    assert not shared, f"modules sharing a generic name (name them by role): {shared}"


def test_shipped_packages_hold_no_test_or_benchmark_code() -> None:
    """Test fakes, recorders and cases live under tests/, benchmarks under bench/ (issue 14): no
    shipped module imports either, and none is named as a fake or a test aid."""
    bad = []
    for module, path in _modules().items():
        if module.split(".")[0] not in PACKAGES:
            continue
        stem = module.rsplit(".", 1)[-1]
        if stem.endswith(("_fake", "_cases")) or stem in ("recorder", "fakes", "conftest") or "bench" in stem:
            bad.append(f"{module}: named as test or benchmark code")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad += [f"{module} imports {n}" for n in names if n.split(".")[0] in ("tests", "bench")]
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    graph = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"modules importing each other in a circle: {circles}"


def test_the_contract_catches_an_upward_import() -> None:
    """The checker itself: a pure module importing a driver would be reported."""
    assert (_layer("policy.compiler") or 0) < (_layer("felixpy.dataplane.iptables") or 0)
    assert (_layer("felixpy.resources.fields") or 0) < (_layer("felixpy.cni.request") or 0)
    assert _layer("policy.selector") == 0 and _layer("felixpy.dataplane.kernel_objects") == 0
    assert _layer("bgp.brand_new_module") is None, "a new bgp module must be placed by hand"
