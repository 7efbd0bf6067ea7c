"""felixctl node diags and node checksystem, run as the real command inside a namespace this test made:
the archive holds that namespace's routes, rules, links and iptables rules, and the log directory;
checksystem prints one OK/FAIL line per check and exits 1 only on a required failure."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

FELIXCTL = str(Path(sys.executable).parent / "felixctl")


def ctl_in(ns: Any, *argv: str, cwd: Path, rc: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, FELIXCTL, *argv],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == rc, f"{argv} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def test_node_diags_archive(netns: Any, tmp_path: Path) -> None:
    ns = netns("diags")
    ns.run("ip", "link", "add", "fpdiag0", "type", "veth", "peer", "name", "fpdiag1")
    ns.run("ip", "link", "set", "fpdiag0", "up")
    ns.run("ip", "link", "set", "fpdiag1", "up")
    ns.run("ip", "addr", "add", "198.18.7.1/24", "dev", "fpdiag0")
    ns.run("ip", "route", "add", "198.19.42.0/24", "via", "198.18.7.2", "proto", "80")
    ns.run("ip", "rule", "add", "from", "198.18.7.0/24", "table", "177", "priority", "777")
    ns.run("iptables", "-N", "cali-diag-test")
    logs = tmp_path / "logs"
    (logs / "cni").mkdir(parents=True)
    (logs / "cni" / "cni.log").write_text("cni log line\n")
    out = ctl_in(ns, "node", "diags", "--log-dir", str(logs), "--output-dir", str(tmp_path), cwd=tmp_path)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Collecting diagnostics in ")
    assert "Dumping ipv4 route (ip -4 route show table all)" in lines
    assert lines[-1].startswith("Diags saved to ")
    archive = Path(lines[-1].removeprefix("Diags saved to "))
    assert archive.parent == tmp_path and archive.name.startswith("diags-") and archive.suffixes[-2:] == [
        ".tar", ".gz"]  # fmt: skip
    with tarfile.open(archive) as tar:
        files = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m for m in tar.getmembers()
                 if m.isfile()}  # fmt: skip

        def read(name: str) -> str:
            member = tar.extractfile(files[name])
            assert member is not None
            return member.read().decode()

        assert "198.19.42.0/24 via 198.18.7.2 dev fpdiag0 proto 80" in read("ipv4_route.txt")
        assert "777:" in read("ip_rule.txt") and "lookup 177" in read("ip_rule.txt")
        assert "fpdiag0" in read("ip_link.txt") and "198.18.7.1/24" in read("ip_addr.txt")
        assert ":cali-diag-test" in read("iptables_save.txt")
        assert read("logs/cni/cni.log") == "cni log line\n"
        assert "1 file(s) copied" in read("logs.txt")
        for name in ("ipset_list.txt", "ip6tables_save.txt", "sockets.txt", "node_status.txt", "journal.txt"):
            assert name in files


def checksystem(ns: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, FELIXCTL, "node", "checksystem"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
    return proc


def test_checksystem_lines(netns: Any) -> None:
    ns = netns("check")
    ns.run("sysctl", "-w", "net.ipv4.ip_forward=1")
    proc = checksystem(ns)
    lines = proc.stdout.splitlines()
    checks = lines[:-1]
    assert all(line.startswith(("OK  ", "FAIL")) for line in checks), lines
    assert any(line.startswith("OK    sysctl net.ipv4.ip_forward: 1") for line in checks)
    assert any(line.startswith("OK    tool iptables-restore: /") for line in checks)
    assert any(line.startswith("OK    kernel version:") for line in checks)
    required_fail = [line for line in checks if line.startswith("FAIL") and "(optional)" not in line]
    assert proc.returncode == (1 if required_fail else 0), proc.stdout
    assert lines[-1] == (
        f"System check found {len(required_fail)} problem(s)." if required_fail
        else "System meets the requirements to run felixpy."
    )  # fmt: skip
    ns.run("sysctl", "-w", "net.ipv4.ip_forward=0")
    proc = checksystem(ns)
    assert proc.returncode == 1
    assert "FAIL  sysctl net.ipv4.ip_forward: 0: workloads cannot be routed" in proc.stdout
