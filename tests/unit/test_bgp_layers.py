"""The pure half of bgp/ imports nothing that does I/O (checked on the source, transitively within bgp/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BGP = Path(__file__).resolve().parents[2] / "bgp"
PURE = [
    "topology",
    "route",
    "rib",
    "bestpath",
    "reflect",
    "filters",
    "advertiser",
    "exabgp_config",
    "exabgp_api",
    "engine",
    "peer_selectors",
    "status",
    "rtnl",
    "limits",
]
IO_MODULES = {
    "subprocess",
    "socket",
    "pyroute2",
    "threading",
    "bgp.fib_netlink",
    "bgp.channel",
    "bgp.speaker",
    "bgp.service",
    "bgp.bridge",
    "etcd",
    "pyetcd",
    "kubernetes",
}


def imports(module: str) -> set[str]:
    tree = ast.parse((BGP / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports(current):
            assert not any(name == io or name.startswith(io + ".") for io in IO_MODULES), (
                f"{current} imports {name}"
            )
            if name.startswith("bgp.") and name != "bgp":
                todo.append(name.split(".", 1)[1])
