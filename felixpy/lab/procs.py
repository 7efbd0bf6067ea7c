"""Background processes inside the lab's namespaces: start, find, stop.

Every process is started with ``ip netns exec <ns>`` (which execs in place, so the pid we
get is the daemon's), in its own session (so it outlives ``up`` and a Ctrl-C of it), with
its output in a log file, and with ``FELIXPY_LAB_NAME=<lab>`` in its environment. ``down``
kills by the pids of the state file, by ``ip netns pids`` of every namespace of the lab,
and finally by that environment tag, which also catches a process whose namespace is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from felixpy.lab.names import TAG_ENV, LabError, LabNames
from felixpy.lab.shell import in_netns, run
from felixpy.lab.state import ProcRecord
from felixpy.private_files import log_file, private_dir


def lab_env(names: LabNames, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a lab process: ours, tagged, plus ``extra``."""
    env = dict(os.environ)
    env[TAG_ENV] = names.name
    env.update(extra or {})
    return env


def spawn(
    names: LabNames,
    *,
    role: str,
    netns: str,
    argv: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcRecord:
    """Start ``argv`` in the background inside ``netns``; return its record."""
    private_dir(log.parent)
    full = in_netns(netns, *argv)
    with log_file(log) as out:  # 0640; umask 027: what the child creates itself is not world-readable
        try:
            proc = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=lab_env(names, env), cwd=cwd, start_new_session=True, umask=0o027,
            )
        except FileNotFoundError as exc:
            raise LabError(f"cannot start {role}: {exc}") from exc
    return ProcRecord(role=role, netns=netns, pid=proc.pid, argv=list(argv), log=str(log))


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False, timeout=10)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def tagged_pids(names: LabNames) -> list[int]:
    """Pids whose environment carries this lab's tag (any namespace, even a deleted one)."""
    needle = f"{TAG_ENV}={names.name}".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(pids: Iterable[int], *, grace: float = 3.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; return the pids that were alive."""
    pids = sorted({p for p in pids if p > 1 and p != os.getpid() and alive(p)})
    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    _signal_all([p for p in pids if alive(p)], signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return pids
