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


def test_the_agent_and_what_its_start_builds_do_not_import_yaml() -> None:
    """PyYAML (~0.9 MB, ~25 ms) is for felixctl and config files; the agent parses none at start."""
    code = (
        "import sys, felixpy.main, felixpy.agent, felixpy.runtime.startup, felixpy.datastore.etcd\n"
        "import felixpy.datastore.config, felixpy.cni.handler, felixpy.dataplane.linux\n"
        "import bgp.service, ipam.ipam\n"
        "print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('yaml.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
