"""The lab's state file: what ``up`` planned and started, and the pods added since.

Written before each thing is created (intent first), so that ``down`` after a crash or a
``kill -9`` of ``up`` still knows the pids; ``down`` also finds leftovers by name prefix and
by process tag, so a lost or corrupt state file never leaks anything.
Read-modify-write goes through :func:`locked`, an ``flock`` on a per-lab lock file, because
several ``pod add`` may run at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from felixpy.lab.layout import RUN_ROOT, LabError, LabNames
from felixpy.lab.plan import Plan
from felixpy.private_files import PRIVATE, SECRET, open_log, private_dir, write_file


@dataclass
class ProcRecord:
    role: str  # "etcd", "agent", "bird", "responder"
    netns: str
    pid: int
    argv: list[str]
    log: str


@dataclass
class PodRecord:
    namespace: str
    name: str
    node: str
    netns: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    container_id: str = ""
    serve: list[int] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)  # named ports: {name, protocol, port}
    deleting: bool = False  # its CNI DEL failed: kept (with its namespace) until a `pod del` succeeds


@dataclass
class LabState:
    name: str
    plan: Plan
    phase: str = "building"  # building | up
    created: float = field(default_factory=time.time)
    processes: list[ProcRecord] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_json()
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> LabState:
        return LabState(
            name=data["name"],
            plan=Plan.from_json(data["plan"]),
            phase=data.get("phase", "building"),
            created=data.get("created", 0.0),
            processes=[ProcRecord(**p) for p in data.get("processes", [])],
            pods=[PodRecord(**p) for p in data.get("pods", [])],
            namespaces=data.get("namespaces", {}),
        )

    def pod(self, namespace: str, name: str) -> PodRecord | None:
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        return None


def save(names: LabNames, state: LabState) -> None:
    """Atomically replace the state file."""
    private_dir(names.run_dir)
    write_file(names.state_file, json.dumps(state.to_json(), indent=1), PRIVATE)


def load(names: LabNames) -> LabState:
    """Read the state file; :class:`LabError` if the lab does not exist."""
    try:
        data = json.loads(names.state_file.read_text())
    except FileNotFoundError as exc:
        raise LabError(f"no lab named {names.name!r} (no {names.state_file}); run 'felixpy-lab up'") from exc
    except json.JSONDecodeError as exc:
        raise LabError(f"corrupt state file {names.state_file}: {exc}") from exc
    return LabState.from_json(data)


def try_load(names: LabNames) -> LabState | None:
    try:
        return load(names)
    except LabError:
        return None


@contextmanager
def locked(names: LabNames, timeout: float = 60.0) -> Iterator[None]:
    """Hold the lab's lock (bounded wait)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_log(names.lock_file, SECRET), "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"lab {names.name!r} is locked by another felixpy-lab command") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
