"""The static CNI forwarder (``forward.c``) and the static bundle launcher (``bundle_exec.c``): where
the built binaries live and how they are built.

The container runtime runs CNI plugins on the host, whose root has no felixpy and maybe no Python
or another libc; so what ``felixpy install-cni`` puts in the host's CNI bin directory is static
machine code. The image builds both binaries in a builder stage (``gcc -static -Os -s``) and puts
them in ``<venv>/libexec/felixpy/``; scripts/install.sh and the tests build them the same way with
:func:`build` (``python -m felixpy.cni.forwarder``).

Location: env ``FELIXPY_LIBEXEC`` if set, else ``<sys.prefix>/libexec/felixpy``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"felixpy-cni": HERE / "forward.c", "felixpy-bundle-exec": HERE / "bundle_exec.c"}
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra")


class ForwarderMissing(RuntimeError):
    """The static binary is neither built nor buildable here (no source or no C compiler)."""


def libexec_dir() -> Path:
    return Path(os.environ.get("FELIXPY_LIBEXEC") or Path(sys.prefix) / "libexec" / "felixpy")


def build(name: str, out_dir: Path | None = None) -> Path:
    """Compile ``name`` (a key of SOURCES) statically into ``out_dir``; atomic replace."""
    out_dir = out_dir or libexec_dir()
    source = SOURCES[name]
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None or not source.exists():
        why = "no C compiler (gcc)" if cc is None else f"no source {source}"
        raise ForwarderMissing(f"cannot build {name}: {why}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    proc = subprocess.run(
        [cc, *CFLAGS, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ForwarderMissing(f"building {name} failed: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, target)
    return target


def binary(name: str, *, rebuild_stale: bool = True) -> Path:
    """The built binary: rebuilt first when its source is newer and a compiler is at hand (a
    checkout), used as it is when there is no compiler (the image)."""
    target = libexec_dir() / name
    source = SOURCES[name]
    stale = source.exists() and (not target.exists() or source.stat().st_mtime > target.stat().st_mtime)
    if stale and rebuild_stale and shutil.which(os.environ.get("CC", "gcc")):
        return build(name)
    if not target.exists():
        raise ForwarderMissing(
            f"{target} is missing: the image must carry it (built with gcc -static from {source.name})"
        )
    return target


def main() -> int:
    try:
        for name in SOURCES:
            print(f"built {build(name)}")
    except ForwarderMissing as exc:
        print(f"felixpy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
