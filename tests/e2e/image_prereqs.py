"""Whether the node image can be built and run here, and the image the emulated-node test uses.

``missing_build_tools`` says why not (not root, buildah or debootstrap missing) or None;
``network_failure`` finds, in a failed build's output, the line that shows it failed for lack of
network (then the test skips, printing it) rather than for a fault of the image (then it fails).
``node_image`` returns the tag to run: ``FELIXPY_E2E_IMAGE`` when CI has just built it
(.ci/run), else it runs scripts/build-image.sh itself (the debootstrap base cached between runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
IMAGE_ENV = "FELIXPY_E2E_IMAGE"
TEST_TAG = "localhost/felixpy-e2e:latest"
BUILD_TIMEOUT = 2700.0
TOOLS = (("buildah", "buildah"), ("debootstrap", "debootstrap"), ("unshare", "util-linux"),
         ("nsenter", "util-linux"), ("chroot", "coreutils"))

# What debootstrap, apt, pip and buildah print when they cannot reach a mirror or an index.
_NETWORK = re.compile(
    r"Temporary failure (in name resolution|resolving)|Could not resolve|Name or service not known"
    r"|Network is unreachable|No route to host|Connection timed out|Failed to establish a new connection"
    r"|Failed getting release file|Couldn't download|Unable to fetch some archives|Could not connect to"
    r"|Failed to fetch|ConnectTimeoutError|Max retries exceeded|proxy error|certificate verify failed",
    re.IGNORECASE,
)


def missing_build_tools(*, path: str | None = None, euid: int | None = None) -> str | None:
    """Why the image cannot be built and run here, or None (``path``: a PATH to search instead)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return "building and running the node image needs root (debootstrap, buildah, mount namespaces)"
    for tool, package in TOOLS:
        if shutil.which(tool, path=path) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def network_failure(output: str) -> str | None:
    """The first line of a failed build's output that says the network was missing, or None."""
    for line in output.splitlines():
        if _NETWORK.search(line):
            return line.strip()
    return None


@dataclass(frozen=True)
class Built:
    tag: str | None
    skip: str | None = None   # why there is no image, when that is not the image's fault
    failure: str | None = None


def node_image(*, timeout: float = BUILD_TIMEOUT) -> Built:
    """The image to run: CI's, or one built now; a reason to skip; or the build's failure."""
    given = os.environ.get(IMAGE_ENV)
    if given:
        return Built(tag=given)
    why = missing_build_tools()
    if why:
        return Built(tag=None, skip=why)
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT), TEST_TAG], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Built(tag=None, failure=f"scripts/build-image.sh took longer than {timeout:.0f}s")
    if proc.returncode == 0:
        return Built(tag=TEST_TAG)
    output = proc.stdout + proc.stderr
    line = network_failure(output)
    if line:
        return Built(tag=None, skip=f"the image build could not reach its package mirrors: {line}")
    return Built(tag=None, failure=f"scripts/build-image.sh failed:\n{output[-3000:]}")
