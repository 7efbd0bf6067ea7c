"""node checksystem's checks and node diags' bounds, with the host's facts handed in."""

from __future__ import annotations

import sys
from pathlib import Path

from felixpy.ctl.node_system import (
    KernelFacts,
    check_clock,
    check_kernel_version,
    check_sysctls,
    check_tools,
    copy_logs,
    run_bounded,
)


def test_kernel_version_floor() -> None:
    assert check_kernel_version("6.1.0-18-amd64").ok
    assert check_kernel_version("2.6.24").ok
    old = check_kernel_version("2.6.18-400.el5")
    assert not old.ok and old.line() == "FAIL  kernel version: 2.6.18-400.el5 (older than 2.6.24)"


def test_module_sources() -> None:
    facts = KernelFacts(
        loaded={"xt_set"}, builtin={"ip_tables"}, loadable={"ipip"}, matches={"conntrack"},
        config={"VXLAN": "m", "WIREGUARD": "n"}, targets={"REJECT"}, sys_modules={"ip_set"},
        proc_net={"ip6_tables_names"},
    )  # fmt: skip
    assert facts.where("xt_set") == "loaded" and facts.where("ip_tables") == "built in"
    assert facts.where("ipip") == "loadable" and facts.where("ip_set") == "present (/sys/module)"
    assert facts.where("xt_conntrack") == "an iptables match the kernel has"
    assert facts.where("ipt_REJECT") == "an iptables target the kernel has"
    assert facts.where("ip6_tables") == "present (/proc/net/ip6_tables_names)"
    assert facts.where("vxlan") == "CONFIG_VXLAN=m in the kernel config"
    assert facts.where("wireguard") is None


def test_sysctls_tools_clock() -> None:
    values = {
        "net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "2", "net/netfilter/nf_conntrack_max": "0",
    }  # fmt: skip
    checks = {c.name: c for c in check_sysctls(values.get)}
    assert checks["sysctl net.ipv4.ip_forward"].ok
    assert not checks["sysctl net.ipv4.conf.all.rp_filter"].ok
    assert "loose mode (2)" in checks["sysctl net.ipv4.conf.all.rp_filter"].reason
    assert not checks["sysctl net.netfilter.nf_conntrack_max"].ok
    assert checks["sysctl net.ipv6.conf.all.forwarding"].optional
    tools = {c.name: c for c in check_tools(lambda t: None if t == "ipset" else f"/usr/sbin/{t}")}
    assert tools["tool ipset"].line() == "FAIL  tool ipset: not on PATH; needed for programming IP sets"
    assert tools["tool ip"].ok
    bad, sync = check_clock(now=0.0, synced=False)
    assert not bad.ok and "not a plausible date" in bad.reason
    assert not sync.ok and sync.optional
    good, sync = check_clock(now=1.8e9, synced=True)
    assert good.ok and sync.ok


def test_run_bounded_truncates_and_never_raises(tmp_path: Path) -> None:
    out = run_bounded([sys.executable, "-c", "print('x' * 5000)"], limit=100)
    assert out.startswith("# ") and "truncated at 100 bytes" in out and len(out) < 400
    assert "not installed" in run_bounded(["no-such-tool-felixpy"])
    slow = run_bounded([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert "no answer within" in slow


def test_copy_logs_budget_newest_first(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "big.log").write_bytes(b"x" * 1000)
    (src / "small.log").write_bytes(b"y" * 10)
    assert copy_logs(src, dst, budget=500) == (1, 1)
    assert (dst / "small.log").read_bytes() == b"y" * 10 and not (dst / "big.log").exists()
    assert copy_logs(tmp_path / "missing", dst) == (0, 0)
