"""Running the dataplane's external tools (iptables-restore, ipset, ethtool), optionally in a netns.

Another namespace is entered with ``nsenter --net=<path>`` (no mount namespace games, unlike
``ip netns exec``), so the tools see that namespace's tables, sets and links.
"""

from __future__ import annotations

import subprocess

from felixpy.dataplane.errors import CommandFailed
from felixpy.dataplane.sysctl import netns_path


def run(argv: list[str], *, netns: str | None = None, input: str | None = None, timeout: float = 60) -> str:
    """Run ``argv`` (in ``netns`` if given); return stdout; raise CommandFailed on non-zero exit."""
    if netns is not None:
        argv = ["nsenter", f"--net={netns_path(netns)}", *argv]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return proc.stdout
