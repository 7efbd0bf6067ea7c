"""`felixpy install-cni`: what the DaemonSet's init container runs on every node.

Copies the CNI plugins into the host's CNI bin directory (as small launchers that run the image's
interpreter, since the host has no felixpy installed) and writes the network configuration list,
filling the node name and MTU placeholders. Writes go to a temporary file then rename, so the
container runtime never reads half a file.

The CNI plugin (type ``felixpy``) is standard-library only, and its start-up is most of what a
CNI call costs, so its launcher is a Python script run as ``python3 -IS``: no ``site`` (no .pth
files, no editable-install finder), isolated (no PYTHON* variables, no user site, no script
directory on ``sys.path``). It loads the plugin module straight from its file with the import
system's own ``SourceFileLoader`` (already loaded at start-up; bytecode cached next to the source as
for any import), so neither ``felixpy/__init__`` (it imports ``os``) nor ``importlib.util`` (~3 ms)
is imported; on an interpreter without ``_frozen_importlib_external`` it imports the plugin the
ordinary way. ~9 ms for a VERSION call here against ~2 ms for a Go plugin and ~40 ms for the
console-script entry point. ``felixpy-ipam`` needs the whole library: it execs the venv's entry
point.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PLUGINS = ("felixpy-cni", "felixpy-ipam")
# The conflist names the plugin by type "felixpy"; the binary of that name is the CNI plugin.
BINARY_NAMES = {"felixpy": "felixpy-cni", "felixpy-ipam": "felixpy-ipam"}
PLUGIN_LAUNCHER = """#!{python} -IS
# felixpy CNI plugin, written by `felixpy install-cni`: stdlib only, so no site (-S), isolated (-I).
# The plugin file is loaded alone (not through the felixpy package): see felixpy/kube/install_cni.py.
import sys

try:
    from _frozen_importlib_external import SourceFileLoader
except ImportError:
    sys.path.insert(0, {root!r})
    from felixpy.cni.plugin import main
else:
    plugin = type(sys)("felixpy_cni_plugin")
    SourceFileLoader(plugin.__name__, {plugin!r}).exec_module(plugin)
    main = plugin.main

main()
"""


def _atomic_write(path: Path, data: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def launcher(script: str, *, python: str | None = None) -> str:
    """The text of the launcher for ``script`` (a console script of this venv)."""
    python = python or sys.executable
    if script == "felixpy-cni":
        import felixpy

        package = Path(felixpy.__file__).resolve().parent
        plugin = str(package / "cni" / "plugin.py")
        return PLUGIN_LAUNCHER.format(python=python, root=str(package.parent), plugin=plugin)
    return f'#!/bin/sh\nexec {Path(python).parent / script} "$@"\n'


def render_conflist(template: str, *, node_name: str, mtu: int) -> str:
    text = template.replace("__KUBERNETES_NODE_NAME__", node_name).replace("__CNI_MTU__", str(mtu))
    json.loads(text)  # refuse to install a configuration the runtime could not parse
    return text


def install(
    *, bin_dir: Path, conf_dir: Path, conf_name: str, template: str, node_name: str, mtu: int
) -> list[Path]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, script in BINARY_NAMES.items():
        target = bin_dir / name
        _atomic_write(target, launcher(script), 0o755)
        written.append(target)
    conf = conf_dir / conf_name
    _atomic_write(conf, render_conflist(template, node_name=node_name, mtu=mtu), 0o644)
    written.append(conf)
    return written


def main() -> int:
    env = os.environ
    try:
        paths = install(
            bin_dir=Path(env.get("CNI_BIN_DIR", "/host/opt/cni/bin")),
            conf_dir=Path(env.get("CNI_CONF_DIR", "/host/etc/cni/net.d")),
            conf_name=env.get("CNI_CONF_NAME", "10-felixpy.conflist"),
            template=env["CNI_NETWORK_CONFIG"],
            node_name=env["KUBERNETES_NODE_NAME"],
            mtu=int(env.get("CNI_MTU", "0") or 0) or 1440,
        )
    except KeyError as missing:
        print(f"install-cni: environment variable {missing} is required", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"install-cni: CNI_NETWORK_CONFIG is not valid JSON once filled in: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"install-cni: wrote {p}")
    return 0
