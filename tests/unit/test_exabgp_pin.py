"""ExaBGP is pinned to exactly the version whose internals bgp/ patches, and the patches still fit.

bgp/exabgp_launch.py (a cheaper ``Neighbor.remove_self``) and bgp/exabgp_wire.py (UPDATEs as bytes
on route reflectors) replace ExaBGP methods read from one release. On any other release both stay
off and reflectors silently take the slow text path (docs/architecture.md §Departures 12, 13). These
tests make that loud: an upgrade must re-read the patched code, then move the pin and
``PATCHED_VERSIONS`` together.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

from bgp import exabgp_launch, exabgp_wire

ROOT = Path(__file__).resolve().parents[2]


def _pinned() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [d for d in deps if re.match(r"exabgp\b", d)]
    assert len(found) == 1, f"pyproject.toml names exabgp {len(found)} times: {found}"
    match = re.fullmatch(r"exabgp==([0-9][0-9.]*)", found[0].replace(" ", ""))
    assert match, f"pyproject.toml must pin exabgp exactly (exabgp==X.Y.Z), not {found[0]!r}"
    return match.group(1)


def test_pyproject_pins_the_version_the_patches_were_written_for() -> None:
    pinned = _pinned()
    assert (pinned,) == exabgp_launch.PATCHED_VERSIONS == exabgp_wire.PATCHED_VERSIONS, (
        f"exabgp=={pinned} is pinned but the patches are for {exabgp_launch.PATCHED_VERSIONS} "
        f"(exabgp_launch) / {exabgp_wire.PATCHED_VERSIONS} (exabgp_wire)"
    )


def test_installed_exabgp_is_the_patched_version() -> None:
    from exabgp.version import version

    installed = importlib.metadata.version("exabgp")
    assert installed == version, f"exabgp metadata says {installed}, exabgp.version says {version}"
    assert installed in exabgp_launch.PATCHED_VERSIONS, (
        f"ExaBGP {installed} is installed but bgp/ patches only {exabgp_launch.PATCHED_VERSIONS}: "
        "route reflectors would run unpatched (slow text path). Reinstall with `pip install -e .`"
    )


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_methods_replaced_still_have_the_shape_the_patches_assume() -> None:
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.reactor.api import processes
    from exabgp.reactor.api.command.command import Command
    from exabgp.reactor.protocol import Protocol
    from exabgp.rib.outgoing import OutgoingRIB

    replaced = {
        "Neighbor.remove_self": (Neighbor.remove_self, ["self", "changes"]),
        "Protocol.read_message": (Protocol.read_message, ["self"]),
        "Protocol.new_update": (Protocol.new_update, ["self", "include_withdraw"]),
        "OutgoingRIB.pending": (OutgoingRIB.pending, ["self"]),
    }
    for name, (fn, params) in replaced.items():
        if fn.__module__.startswith("bgp."):  # patched in this process by another test
            continue
        assert _params(fn) == params, f"ExaBGP's {name}{inspect.signature(fn)} is not what bgp/ replaces"
    assert hasattr(processes, "os") and callable(processes.os.read), "exabgp.reactor.api.processes.os.read"
    assert callable(getattr(Command, "register", None)), "exabgp Command.register"
