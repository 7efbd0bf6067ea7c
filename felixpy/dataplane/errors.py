"""Exceptions of the dataplane drivers (the one place they are declared).

DataplaneError
├── LinkNotFound      an interface a route or setting refers to does not exist (yet): retry later
├── CommandFailed     an external tool (iptables-restore, ipset, ethtool, nsenter) exited non-zero
└── NetnsNotFound     a CNI_NETNS path does not exist (the container is gone)
"""

from __future__ import annotations


class DataplaneError(Exception):
    """Base of every error raised by felixpy.dataplane."""


class LinkNotFound(DataplaneError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no such interface: {name}")
        self.name = name


class NetnsNotFound(DataplaneError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no such network namespace: {path}")
        self.path = path


class CommandFailed(DataplaneError):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv[:3])}... exited {returncode}: {stderr.strip()[:500]}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
