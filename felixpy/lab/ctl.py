"""Talking to the lab's datastore: ``felixctl`` run inside the etcd namespace, never in the root one."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from felixpy.lab.manifests import Doc, to_yaml
from felixpy.lab.names import LabNames
from felixpy.lab.procs import lab_env
from felixpy.lab.shell import in_netns, run


def tool(name: str) -> str | None:
    """A console script of this installation (beside our python), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def felixctl_available() -> bool:
    return tool("felixctl") is not None and importlib.util.find_spec("felixpy.ctl.main") is not None


def datastore_env(names: LabNames, endpoint: str) -> dict[str, str]:
    return lab_env(names, {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": endpoint})


def felixctl(
    names: LabNames, endpoint: str, args: list[str], *, input: str | None = None, timeout: float = 30.0,
    netns: str | None = None, check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``felixctl ARGS`` inside ``netns`` (default: the etcd namespace)."""
    binary = tool("felixctl") or "felixctl"
    argv = in_netns(netns or names.etcd, binary, *args)
    return run(argv, input=input, env=datastore_env(names, endpoint), timeout=timeout, check=check)


def apply(names: LabNames, endpoint: str, docs: list[Doc]) -> str:
    """``felixctl apply -f -`` of ``docs`` (the lab's own applier while felixctl is missing)."""
    text = to_yaml(docs)
    if felixctl_available():
        return felixctl(names, endpoint, ["apply", "-f", "-"], input=text).stdout
    argv = in_netns(names.etcd, sys.executable, "-m", "felixpy.lab.applier")
    return run(argv, input=text, env=datastore_env(names, endpoint), timeout=30).stdout
