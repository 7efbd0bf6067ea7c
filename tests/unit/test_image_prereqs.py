"""The emulated-node test's skip condition: when it skips (tools, root, network) and when it must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e import image_prereqs
from tests.e2e.image_prereqs import missing_build_tools, network_failure, node_image


def _path_with(tmp_path: Path, *tools: str) -> str:
    for tool in tools:
        (tmp_path / tool).symlink_to("/bin/true")
    return str(tmp_path)


def test_not_root_is_a_reason_to_skip() -> None:
    assert "needs root" in (missing_build_tools(euid=1000) or "")


def test_each_missing_tool_is_named_with_its_package(tmp_path: Path) -> None:
    assert missing_build_tools(path=_path_with(tmp_path), euid=0) == (
        "buildah is not installed (apt-get install buildah)")
    (tmp_path / "buildah").symlink_to("/bin/true")
    assert missing_build_tools(path=str(tmp_path), euid=0) == (
        "debootstrap is not installed (apt-get install debootstrap)")


def test_nothing_missing_when_every_tool_is_on_the_path(tmp_path: Path) -> None:
    tools = [t for t, _ in image_prereqs.TOOLS]
    assert missing_build_tools(path=_path_with(tmp_path, *tools), euid=0) is None


@pytest.mark.parametrize("line", [
    "E: Failed getting release file http://deb.debian.org/debian/dists/bookworm/Release",
    "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving "
    "'deb.debian.org'",
    "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError('<HTTPSConnection>: "
    "Failed to establish a new connection: [Errno 101] Network is unreachable')': /simple/pydantic/",
    "E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?",
])
def test_network_failures_are_recognised(line: str) -> None:
    assert network_failure(f"STEP 3/12: RUN ...\n{line}\nError: building at STEP 3") == line


@pytest.mark.parametrize("line", [
    "E: Unable to locate package iptabels",
    "ModuleNotFoundError: No module named 'felixpy'",
    "ln: failed to create symbolic link '/usr/local/bin/felixpy': File exists",
    "ERROR: Could not find a version that satisfies the requirement pydantic>=9",
])
def test_faults_of_the_image_are_not_taken_for_a_missing_network(line: str) -> None:
    assert network_failure(f"STEP 5/12: RUN ...\n{line}\nerror building at STEP") is None


def test_an_image_given_by_ci_is_used_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(image_prereqs.IMAGE_ENV, "felixpy/felixpy:ci")
    assert node_image(timeout=1) == image_prereqs.Built(tag="felixpy/felixpy:ci")


def test_without_the_tools_the_build_is_skipped_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(image_prereqs.IMAGE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    built = node_image(timeout=1)
    assert built.tag is None and built.failure is None
    assert built.skip is not None and ("is not installed" in built.skip or "needs root" in built.skip)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("debootstrap") is None,
                    reason="needs root and debootstrap")
def test_real_debootstrap_without_a_reachable_mirror_is_recognised(tmp_path: Path) -> None:
    """debootstrap itself, pointed at a loopback port where nothing listens: its output is a skip."""
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(tmp_path / "root"), "http://127.0.0.1:9/debian"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode != 0
    assert network_failure(proc.stdout + proc.stderr) is not None, proc.stdout + proc.stderr
