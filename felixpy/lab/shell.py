"""Running commands (always with a timeout) and printing progress, one line per step."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from felixpy.lab.layout import LabError

DEFAULT_TIMEOUT = 30.0
# Every command timeout and wait below is multiplied by FELIXPY_TIME_SCALE (default 1): the VM stage
# (scripts/vm-tests.sh) runs labs under QEMU's TCG, ~30x slower than the host.
TIME_SCALE = max(1.0, float(os.environ.get("FELIXPY_TIME_SCALE", "1") or 1))


class GiveUp(LabError):
    """Raised by a ``wait_until`` check to stop waiting at once (the awaited thing died)."""


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; raise :class:`LabError` on failure when ``check``."""
    timeout *= TIME_SCALE
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {argv[0]}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {detail}")
    return proc


def in_netns(netns: str, *argv: str) -> list[str]:
    """The argv that runs ``argv`` inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def ns_run(netns: str, *argv: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> str:
    """Run ``argv`` inside ``netns`` and return its stdout."""
    return run(in_netns(netns, *argv), timeout=timeout, check=check).stdout


class Progress:
    """Prints ``[  1.23s] message`` lines; ``step()`` also reports how long the step took."""

    def __init__(self, out: TextIO | None = None, *, quiet: bool = False) -> None:
        self.start = time.monotonic()
        self.out = out if out is not None else sys.stdout
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():7.2f}s] {message}", file=self.out, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        t0 = time.monotonic()
        self.say(f"{message} ...")
        yield
        self.say(f"{message}: done in {time.monotonic() - t0:.2f}s")


def wait_until(
    check: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str,
) -> None:
    """Call ``check()`` until it returns truthy, at most ``timeout`` seconds; raise on expiry."""
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except GiveUp:
            raise
        except LabError as exc:
            last_error = str(exc)
        time.sleep(interval)
    detail = f": {last_error}" if last_error else ""
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
