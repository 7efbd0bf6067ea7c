"""`felixpy install-cni`: what the DaemonSet's init container runs on every node.

The container runtime runs CNI plugins on the host, whose root filesystem has no felixpy, maybe no
Python and maybe another libc. So everything written to the host's CNI bin directory is static
machine code, or is started through a loader that install-cni puts beside it:

- ``felixpy`` and ``felixpy-ipam``: the static forwarder (``felixpy/cni/forward.c``, built with
  ``gcc -static``). It hands the request to the agent's unix socket and prints the answer; run as
  ``felixpy-ipam`` it asks the agent for IPAM only.
- every other plugin the network configuration names (``portmap`` for hostPorts; any ``type`` of a
  chained plugin or of an ``ipam`` section): copied from the image's reference plugins
  (``CNI_PLUGIN_SOURCE_DIR``, default ``/usr/lib/cni``, Debian's containernetworking-plugins).
  A statically linked one is copied as it is. A dynamically linked one goes to
  ``felixpy-bundle/<name>`` with the image's loader and the libraries it needs
  (``felixpy-bundle/lib/``), and ``<name>`` is the static bundle launcher
  (``felixpy/cni/bundle_exec.c``) that runs it through that loader: it then needs nothing of the
  host but the kernel.

Then it writes the network configuration list, filling the node name and MTU placeholders. Every
write goes to a temporary file then rename, so the runtime never runs or reads half a file, and a
plugin being executed while it is replaced keeps its old inode.

``launcher()`` still writes the stdlib Python plugin's ``python3 -IS`` launcher: the reference
implementation of the protocol, for hosts that have this venv (tests, ``bench/cni.py --plugin python``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from felixpy.cni import forwarder

# The conflist names our plugins by type; both are the forwarder (its name selects the IPAM mode).
OWN_PLUGINS = ("felixpy", "felixpy-ipam")
BUNDLE_DIR = "felixpy-bundle"
DEFAULT_PLUGIN_SOURCE = "/usr/lib/cni"
PT_INTERP = 3
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


class InstallError(Exception):
    """Something the host would need cannot be installed (one line, naming it)."""


def _atomic_write(path: Path, data: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _atomic_copy(source: Path, target: Path, mode: int = 0o755) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.chmod(mode)
    os.replace(tmp, target)


def launcher(script: str, *, python: str | None = None) -> str:
    """The ``python3 -IS`` launcher of the stdlib plugin (``felixpy-cni``) of this venv; for the
    other console scripts a ``sh`` exec of the venv's entry point. Hosts with this venv only."""
    python = python or sys.executable
    if script == "felixpy-cni":
        import felixpy

        package = Path(felixpy.__file__).resolve().parent
        plugin = str(package / "cni" / "plugin.py")
        return PLUGIN_LAUNCHER.format(python=python, root=str(package.parent), plugin=plugin)
    return f'#!/bin/sh\nexec {Path(python).parent / script} "$@"\n'


def elf_interpreter(path: Path) -> str | None:
    """The ELF program interpreter (PT_INTERP) of ``path``; None for a static ELF or a non-ELF."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return None
        is64, order = head[4] == 2, "<" if head[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        else:
            (phoff,) = struct.unpack_from(order + "I", head, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            entry = table[i * phentsize : (i + 1) * phentsize]
            if struct.unpack_from(order + "I", entry, 0)[0] != PT_INTERP:
                continue
            if is64:
                (offset,) = struct.unpack_from(order + "Q", entry, 8)
                (size,) = struct.unpack_from(order + "Q", entry, 32)
            else:
                (offset,) = struct.unpack_from(order + "I", entry, 4)
                (size,) = struct.unpack_from(order + "I", entry, 16)
            f.seek(offset)
            return f.read(size).rstrip(b"\0").decode()
    return None


_LIB_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def shared_libraries(binary: Path, interpreter: str) -> dict[str, Path]:
    """soname -> file for what ``binary`` loads, as its own loader resolves them (``ld.so --list``)."""
    proc = subprocess.run(
        [interpreter, "--list", str(binary)], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise InstallError(
            f"cannot list the libraries of {binary}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    libs = {}
    for line in proc.stdout.splitlines():
        m = _LIB_LINE.match(line)
        if m:
            libs[m.group(1)] = Path(m.group(2))
    return libs


def install_reference_plugin(name: str, *, source_dir: Path, bin_dir: Path) -> list[Path]:
    """Copy reference plugin ``name`` to the host, bundled with its loader when it is dynamic."""
    source = source_dir / name
    if not source.is_file():
        raise InstallError(
            f"the network configuration chains plugin {name!r}, but {source} is not in the image"
        )
    interpreter = elf_interpreter(source)
    target = bin_dir / name
    if interpreter is None:
        _atomic_copy(source, target)
        return [target]
    bundle = bin_dir / BUNDLE_DIR
    written = [bundle / name, bundle / "lib" / "ld.so"]
    _atomic_copy(source, bundle / name)
    _atomic_copy(Path(interpreter), bundle / "lib" / "ld.so")
    for soname, path in shared_libraries(source, interpreter).items():
        _atomic_copy(path, bundle / "lib" / soname, 0o644)
        written.append(bundle / "lib" / soname)
    _atomic_copy(forwarder.binary("felixpy-bundle-exec"), target)
    return [target, *written]


def install_own_plugins(bin_dir: Path) -> list[Path]:
    """``felixpy`` and ``felixpy-ipam``: the static forwarder under both names."""
    fwd = forwarder.binary("felixpy-cni")
    for name in OWN_PLUGINS:
        _atomic_copy(fwd, bin_dir / name)
    return [bin_dir / name for name in OWN_PLUGINS]


def chained_types(conflist: dict) -> list[str]:
    """Every plugin type the configuration names (plugins and their ipam sections), in order."""
    plugins = conflist.get("plugins") if "plugins" in conflist else [conflist]
    names: list[str] = []
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, dict):
            continue
        ipam = plugin.get("ipam")
        for name in (plugin.get("type"), ipam.get("type") if isinstance(ipam, dict) else None):
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def render_conflist(template: str, *, node_name: str, mtu: int) -> str:
    text = template.replace("__KUBERNETES_NODE_NAME__", node_name).replace("__CNI_MTU__", str(mtu))
    json.loads(text)  # refuse to install a configuration the runtime could not parse
    return text


def install(
    *,
    bin_dir: Path,
    conf_dir: Path,
    conf_name: str,
    template: str,
    node_name: str,
    mtu: int,
    plugin_source: Path = Path(DEFAULT_PLUGIN_SOURCE),
) -> list[Path]:
    """Install the plugins the configuration names, then the configuration (last: the runtime
    starts using the network once it sees the file, so the binaries must already be there)."""
    conflist = render_conflist(template, node_name=node_name, mtu=mtu)
    for name in chained_types(json.loads(conflist)):
        if "/" in name or name in (".", ".."):
            raise InstallError(f"plugin type {name!r} is not a file name")
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    written = install_own_plugins(bin_dir)
    for name in chained_types(json.loads(conflist)):
        if name not in OWN_PLUGINS:
            written += install_reference_plugin(name, source_dir=plugin_source, bin_dir=bin_dir)
    conf = conf_dir / conf_name
    _atomic_write(conf, conflist, 0o644)
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
            plugin_source=Path(env.get("CNI_PLUGIN_SOURCE_DIR", DEFAULT_PLUGIN_SOURCE)),
        )
    except KeyError as missing:
        print(f"install-cni: environment variable {missing} is required", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"install-cni: CNI_NETWORK_CONFIG is not valid JSON once filled in: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"install-cni: CNI_MTU is not a number: {err}", file=sys.stderr)
        return 2
    except (InstallError, forwarder.ForwarderMissing, OSError) as err:
        print(f"install-cni: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(f"install-cni: wrote {p}")
    return 0
