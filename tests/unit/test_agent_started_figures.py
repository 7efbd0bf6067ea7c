"""``agent.started`` says how long the start took from the exec (interpreter start and imports
included, which ``startup_seconds`` leaves out) and the CPU spent by then (issue 15, goal 2)."""

from __future__ import annotations

import subprocess
import sys


def test_since_exec_counts_the_interpreter_and_imports() -> None:
    code = (
        "import time\n"
        "t = time.monotonic()\n"
        "while time.monotonic() - t < 0.3:\n"
        "    pass\n"
        "from felixpy.agent import _since_exec\n"
        "print(_since_exec())\n"
    )
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    seconds = float(out.stdout.strip())
    assert 0.28 <= seconds < 60, seconds  # at least the busy wait (10 ms clock), bounded
