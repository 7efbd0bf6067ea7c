"""Names and paths of one lab: every namespace, directory and process tag derives from ``--name``.

A lab named ``fxl`` owns exactly the namespaces whose name starts with ``fxl-`` and the
directory ``/var/run/felixpy-lab/fxl``. Lab names are short and free of ``-`` so that one
lab's prefix can never be a prefix of another lab's (``fxl`` vs ``fxl-a``), which is what
lets ``down`` find leftovers by prefix alone.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/var/run/felixpy-lab")
NETNS_DIR = Path("/var/run/netns")
DEFAULT_NAME = "fxl"
#: environment variable set on every process the lab starts; ``down`` finds strays by it.
TAG_ENV = "FELIXPY_LAB_NAME"

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_RESERVED = frozenset({"fpt"})  # the kernel-test fixture's prefix


class LabError(Exception):
    """A lab operation failed in a way the user must hear about (exit code 2)."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid lab name, else raise :class:`LabError`."""
    if not _NAME_RE.match(name) or name in _RESERVED:
        raise LabError(f"invalid lab name {name!r}: 1-8 chars [a-z0-9], starting with a letter, not 'fpt'")
    return name


def name_arg(name: str) -> str:
    """``check_name`` for argparse: a bad name is a usage error (one line, exit 2), not a traceback."""
    try:
        return check_name(name)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class LabNames:
    """Derived names for one lab."""

    name: str

    @property
    def prefix(self) -> str:
        return f"{self.name}-"

    @property
    def fabric(self) -> str:
        return f"{self.name}-fabric"

    @property
    def etcd(self) -> str:
        return f"{self.name}-etcd"

    def node(self, node: str) -> str:
        return f"{self.name}-{node}"

    def pod(self, namespace: str, pod: str) -> str:
        return f"{self.name}-pod-{namespace}-{pod}"

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def lock_file(self) -> Path:
        return RUN_ROOT / f"{self.name}.lock"

    @property
    def etcd_dir(self) -> Path:
        return self.run_dir / "etcd"

    def node_dir(self, node: str) -> Path:
        return self.run_dir / node

    def pod_dir(self, namespace: str, pod: str) -> Path:
        return self.run_dir / "pods" / f"{namespace}.{pod}"

    def owns_netns(self, netns: str) -> bool:
        return netns.startswith(self.prefix)
