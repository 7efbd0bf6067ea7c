"""What the agent's start pays in imports: pyroute2 (~0.4 s of CPU, ~21 MB of RSS) is not among
them; the start-up questions it answered go over raw rtnetlink (felixpy.netlinkio.query)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_agent_does_not_import_pyroute2() -> None:
    code = (
        "import sys, felixpy.main, felixpy.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
