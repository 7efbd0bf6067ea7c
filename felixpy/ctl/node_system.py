"""``felixctl node diags`` and ``felixctl node checksystem``, as calicoctl has them.

``node diags [--log-dir DIR] [--output-dir DIR] [--run-dir DIR]``: one archive
``diags-YYYYMMDD_HHMMSS.tar.gz`` holding, each in its own file, ``ip -4/-6 route``, ``ip rule``,
``ip -d link``, ``ip addr``, ``iptables-save -c``, ``ip6tables-save -c``, ``ipset list``,
``ss -a -n``, the agent's node status (felixctl node status), the agent's journal
(``journalctl -u felixpy``) and a copy of the log directory (default /var/log/felixpy). Bounded:
each command at most COMMAND_TIMEOUT_S seconds and MAX_FILE_BYTES of output (then truncated, and
said so in the file), the log copy at most MAX_LOG_BYTES in all (newest files first). A command
that is missing or fails leaves its error in its file; the archive is still made. One progress
line per step on stdout, then ``Diags saved to <path>``.

``node checksystem [-f/--kernel-config FILE]``: one line per check, ``OK`` or ``FAIL`` and the
reason: kernel version (>= 2.6.24, Calico's floor), the kernel modules felixpy's dataplane uses
(found loaded, built in, loadable, in ``/proc/net/ip_tables_matches`` or as ``=y|m`` in the kernel
config), the sysctls it needs, the tools it runs, and the clock. Checks marked optional (IPIP,
VXLAN, WireGuard, conntrack tool, clock synchronisation) say so and do not change the exit code;
any other FAIL makes it 1.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import gzip
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from felixpy.ctl.resource_cmds import CommandError

COMMAND_TIMEOUT_S = 30
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_LOG_BYTES = 256 * 1024 * 1024
DEFAULT_LOG_DIR = "/var/log/felixpy"

DIAG_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ipv4_route", ("ip", "-4", "route", "show", "table", "all")),
    ("ipv6_route", ("ip", "-6", "route", "show", "table", "all")),
    ("ip_rule", ("ip", "rule", "show")),
    ("ip6_rule", ("ip", "-6", "rule", "show")),
    ("ip_link", ("ip", "-d", "link", "show")),
    ("ip_addr", ("ip", "addr", "show")),
    ("iptables_save", ("iptables-save", "-c")),
    ("ip6tables_save", ("ip6tables-save", "-c")),
    ("ipset_list", ("ipset", "list")),
    ("sockets", ("ss", "-a", "-n")),
    ("journal", ("journalctl", "-u", "felixpy", "--no-pager", "-n", "20000")),
)


# ---- diags -------------------------------------------------------------------------------------------
def run_bounded(
    argv: Iterable[str], *, timeout: float = COMMAND_TIMEOUT_S, limit: int = MAX_FILE_BYTES
) -> str:
    """The command's output (stdout, then stderr), or why there is none; never raises."""
    argv = list(argv)
    if shutil.which(argv[0]) is None:
        return f"# {argv[0]}: not installed on this host\n"
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"# {' '.join(argv)}: no answer within {timeout:.0f} s; stopped\n"
    except OSError as exc:
        return f"# {' '.join(argv)}: {exc.strerror or exc}\n"
    out = proc.stdout + (b"\n# stderr:\n" + proc.stderr if proc.stderr else b"")
    head = f"# {' '.join(argv)} (exit code {proc.returncode})\n".encode()
    if len(out) > limit:
        out = out[:limit] + f"\n# truncated at {limit:,} bytes\n".encode()
    return (head + out).decode("utf-8", "replace")


def copy_logs(log_dir: Path, dest: Path, budget: int = MAX_LOG_BYTES) -> tuple[int, int]:
    """Copy the newest files of ``log_dir`` while they fit ``budget``; (copied, skipped) counts."""
    files = [p for p in log_dir.rglob("*") if p.is_file() and not p.is_symlink()] if log_dir.is_dir() else []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    copied = skipped = 0
    for p in files:
        size = p.stat().st_size
        if size > budget:
            skipped += 1
            continue
        target = dest / p.relative_to(log_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(p, target)
        except OSError:
            skipped += 1
            continue
        budget -= size
        copied += 1
    return copied, skipped


def collect(args: argparse.Namespace, say: Callable[[str], None] = print) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    out_dir = Path(args.output_dir or ".")
    if not out_dir.is_dir():
        raise CommandError(f"--output-dir {out_dir} is not a directory")
    archive = out_dir / f"diags-{stamp}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="felixpy-diags-") as tmp:
        root = Path(tmp) / f"diags-{stamp}"
        root.mkdir()
        say(f"Collecting diagnostics in {root}")
        for name, argv in DIAG_COMMANDS:
            say(f"Dumping {name.replace('_', ' ')} ({' '.join(argv)})")
            (root / f"{name}.txt").write_text(run_bounded(argv))
        say("Recording the node status (felixctl node status)")
        try:
            status = args.status_text(args.run_dir)
        except (OSError, ValueError) as exc:
            status = f"# node status unavailable: {exc}\n"
        (root / "node_status.txt").write_text(status)
        log_dir = Path(args.log_dir)
        say(f"Copying logs from {log_dir}")
        copied, skipped = copy_logs(log_dir, root / "logs")
        note = f"{copied} file(s) copied from {log_dir}, {skipped} skipped (over {MAX_LOG_BYTES:,} bytes)\n"
        if not log_dir.is_dir():
            note = f"{log_dir}: no such directory\n"
        (root / "logs.txt").write_text(note)
        say(f"Writing {archive}")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    return archive


def run_diags(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("Warning: not root: iptables, ipset and some other dumps will only hold their error")
    try:
        archive = collect(args)
    except OSError as exc:  # the archive or the temporary directory could not be written
        raise CommandError(f"cannot write the diagnostics archive: {exc.strerror or exc}") from None
    print(f"Diags saved to {archive}")
    return 0


# ---- checksystem -------------------------------------------------------------------------------------
MIN_KERNEL = (2, 6, 24)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    reason: str
    optional: bool = False

    def line(self) -> str:
        flag = " (optional)" if self.optional else ""
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name}{flag}: {self.reason}"


# (module, what needs it, optional); names as modules.dep / lsmod spell them.
MODULES: tuple[tuple[str, str, bool], ...] = (
    ("ip_tables", "the iptables filter/nat/mangle/raw tables", False),
    ("ip6_tables", "the ip6tables tables", False),
    ("ip_set", "IP sets (policy selectors, pools)", False),
    ("xt_set", "iptables matches on IP sets", False),
    ("xt_conntrack", "connection-tracking state matches", False),
    ("xt_mark", "packet mark matches (policy verdicts)", False),
    ("xt_multiport", "rules with several ports", False),
    ("xt_addrtype", "local-address matches", False),
    ("xt_comment", "rule comments", False),
    ("ipt_REJECT", "REJECT rules", False),
    ("xt_rpfilter", "the reverse-path check of workload traffic", False),
    ("nf_conntrack_netlink", "flushing conntrack entries of removed workloads", False),
    ("xt_icmp", "ICMP type matches", True),
    ("xt_icmp6", "ICMPv6 type matches", True),
    ("xt_u32", "u32 matches", True),
    ("ipip", "IPIP pools", True),
    ("vxlan", "VXLAN pools", True),
    ("wireguard", "WireGuard encryption", True),
)
# ip_tables_matches spellings of match modules ("xt_set" -> "set")
_MATCH_NAMES = {"xt_set": "set", "xt_conntrack": "conntrack", "xt_mark": "mark", "xt_multiport": "multiport",
                "xt_addrtype": "addrtype", "xt_comment": "comment", "xt_rpfilter": "rpfilter",
                "xt_icmp": "icmp", "xt_u32": "u32"}  # fmt: skip
# ip_tables_targets / ip6_tables_matches spellings
_TARGET_NAMES = {"ipt_REJECT": "REJECT"}
_MATCH6_NAMES = {"xt_icmp6": "icmp6"}
# /proc/net files whose presence shows the module
_PROC_FILES = {"ip_tables": "ip_tables_names", "ip6_tables": "ip6_tables_names"}
# CONFIG_ names for a kernel config file
_CONFIG_NAMES = {"ip_tables": "IP_NF_IPTABLES", "ip6_tables": "IP6_NF_IPTABLES", "ip_set": "IP_SET",
                 "xt_set": "NETFILTER_XT_SET", "xt_conntrack": "NETFILTER_XT_MATCH_CONNTRACK",
                 "xt_mark": "NETFILTER_XT_MARK", "xt_multiport": "NETFILTER_XT_MATCH_MULTIPORT",
                 "xt_addrtype": "NETFILTER_XT_MATCH_ADDRTYPE", "xt_comment": "NETFILTER_XT_MATCH_COMMENT",
                 "ipt_REJECT": "IP_NF_TARGET_REJECT", "xt_rpfilter": "IP_NF_MATCH_RPFILTER",
                 "nf_conntrack_netlink": "NF_CT_NETLINK", "xt_u32": "NETFILTER_XT_MATCH_U32",
                 "ipip": "NET_IPIP", "vxlan": "VXLAN", "wireguard": "WIREGUARD"}  # fmt: skip

TOOLS: tuple[tuple[str, str, bool], ...] = (
    ("ip", "links, addresses, routes", False),
    ("iptables-restore", "programming iptables", False),
    ("iptables-save", "reading iptables", False),
    ("ip6tables-restore", "programming ip6tables", False),
    ("ip6tables-save", "reading ip6tables", False),
    ("ipset", "programming IP sets", False),
    ("conntrack", "flushing conntrack entries", True),
    ("wg", "WireGuard diagnostics", True),
)


def _norm(name: str) -> str:
    return name.replace("-", "_").lower()


@dataclass
class KernelFacts:
    """Where module names were found (lower-case, '-' as '_'), read once."""

    loaded: set[str]
    builtin: set[str]
    loadable: set[str]
    matches: set[str]
    config: dict[str, str]
    targets: set[str] = field(default_factory=set)
    matches6: set[str] = field(default_factory=set)
    sys_modules: set[str] = field(default_factory=set)
    proc_net: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, release: str, kernel_config: str | None = None) -> KernelFacts:
        def names_in(path: Path, pattern: str) -> set[str]:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                return set()
            return {_norm(m) for m in re.findall(pattern, text, flags=re.M)}

        base = Path("/lib/modules") / release
        config: dict[str, str] = {}
        candidates = [kernel_config] if kernel_config else [
            "/proc/config.gz", f"/boot/config-{release}", f"/usr/src/linux-{release}/.config",
            f"/usr/src/linux-headers-{release}/.config", f"/lib/modules/{release}/build/.config",
        ]  # fmt: skip
        for c in candidates:
            try:
                raw = Path(str(c)).read_bytes()
                text = (gzip.decompress(raw) if str(c).endswith(".gz") else raw).decode(errors="replace")
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            config = dict(re.findall(r"^CONFIG_(\w+)=(\w+)", text, flags=re.M))
            break
        return cls(
            loaded=names_in(Path("/proc/modules"), r"^(\S+)"),
            builtin=names_in(base / "modules.builtin", r"([^/\s]+)\.ko"),
            loadable=names_in(base / "modules.dep", r"^[^:]*?([^/:\s]+)\.ko(?:\.[a-z]+)?:"),
            matches=names_in(Path("/proc/net/ip_tables_matches"), r"^(\S+)"),
            config=config,
            targets={t.upper() for t in names_in(Path("/proc/net/ip_tables_targets"), r"^(\S+)")},
            matches6=names_in(Path("/proc/net/ip6_tables_matches"), r"^(\S+)"),
            sys_modules={_norm(p.name) for p in _listdir(Path("/sys/module"))},
            proc_net={p.name for p in _listdir(Path("/proc/net"))},
        )

    def where(self, module: str) -> str | None:
        m = _norm(module)
        if m in self.loaded:
            return "loaded"
        if m in self.builtin:
            return "built in"
        if m in self.loadable:
            return "loadable"
        if m in self.sys_modules:
            return "present (/sys/module)"
        if _PROC_FILES.get(module) in self.proc_net:
            return f"present (/proc/net/{_PROC_FILES[module]})"
        if _TARGET_NAMES.get(module, "").upper() in self.targets:
            return "an iptables target the kernel has"
        if _MATCH6_NAMES.get(module) in self.matches6:
            return "an ip6tables match the kernel has"
        match = _MATCH_NAMES.get(module)
        if match and match in self.matches:
            return "an iptables match the kernel has"
        value = self.config.get(_CONFIG_NAMES.get(module, ""))
        if value in ("y", "m"):
            return f"CONFIG_{_CONFIG_NAMES[module]}={value} in the kernel config"
        return None


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def check_kernel_version(release: str) -> Check:
    nums = tuple(int(n) for n in re.findall(r"\d+", release)[:3])
    ok = nums >= MIN_KERNEL
    need = ".".join(map(str, MIN_KERNEL))
    return Check("kernel version", ok, f"{release} ({'>=' if ok else 'older than'} {need})")


def check_modules(facts: KernelFacts) -> list[Check]:
    out = []
    for module, why, optional in MODULES:
        found = facts.where(module)
        reason = found if found else f"not loaded, built in or loadable; needed for {why}"
        out.append(Check(f"module {module}", found is not None, reason, optional))
    return out


def _sysctl(path: str) -> str | None:
    try:
        return Path("/proc/sys", path).read_text().strip()
    except OSError:
        return None


def check_sysctls(read: Callable[[str], str | None] = _sysctl) -> list[Check]:
    out = []
    fwd = read("net/ipv4/ip_forward")
    out.append(Check(
        "sysctl net.ipv4.ip_forward", fwd == "1",
        "1" if fwd == "1" else f"{fwd}: workloads cannot be routed (the agent sets 1 when it starts; "
        "something reset it or the agent is not running)",
    ))  # fmt: skip
    rpf = read("net/ipv4/conf/all/rp_filter")
    out.append(Check(
        "sysctl net.ipv4.conf.all.rp_filter", rpf in ("0", "1"),
        f"{rpf} (strict or off)" if rpf in ("0", "1") else f"{rpf}: loose mode (2) lets workloads spoof "
        "source addresses the reverse-path check would stop; set 0 or 1",
    ))  # fmt: skip
    ct = read("net/netfilter/nf_conntrack_max")
    out.append(Check("sysctl net.netfilter.nf_conntrack_max", ct is not None and ct != "0",
                     f"{ct}" if ct else "missing: connection tracking is not available"))  # fmt: skip
    v6 = read("net/ipv6/conf/all/forwarding")
    out.append(Check("sysctl net.ipv6.conf.all.forwarding", v6 == "1",
                     v6 or "IPv6 is disabled on this host", optional=True))  # fmt: skip
    return out


def check_tools(which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    out = []
    for tool, why, optional in TOOLS:
        path = which(tool)
        reason = path or f"not on PATH; needed for {why}"
        out.append(Check(f"tool {tool}", path is not None, reason, optional))
    return out


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 256)]


def clock_synchronised() -> bool | None:
    """The kernel's view (adjtimex: TIME_ERROR = 5 means unsynchronised); None if unknown."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        state = ctypes.CDLL(name, use_errno=True).adjtimex(ctypes.byref(_Timex()))
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != 5


def check_clock(now: float | None = None, synced: bool | None = None) -> list[Check]:
    now = time.time() if now is None else now
    year = datetime.datetime.fromtimestamp(now, datetime.UTC).year
    sane = 2024 <= year < 2100
    out = [Check("clock", sane, f"{datetime.datetime.fromtimestamp(now, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"
                 + ("" if sane else ": not a plausible date; certificates, leases and BGP timers need it"))]
    state = "synchronised (NTP)" if synced else (
        "unknown" if synced is None else "not synchronised: the kernel reports no NTP discipline")
    out.append(Check("clock synchronisation", bool(synced), state, optional=True))  # fmt: skip
    return out


def run_checksystem(args: argparse.Namespace) -> int:
    release = platform.release()
    checks = [check_kernel_version(release)]
    if args.kernel_config and not os.access(args.kernel_config, os.R_OK):
        checks.append(Check("kernel config", False, f"{args.kernel_config} cannot be read (-f)"))
    checks += check_modules(KernelFacts.read(release, args.kernel_config))
    checks += check_sysctls()
    checks += check_tools()
    checks += check_clock(synced=clock_synchronised())
    for c in checks:
        print(c.line())
    failed = [c for c in checks if not c.ok and not c.optional]
    if failed:
        print(f"System check found {len(failed)} problem(s).")
        return 1
    print("System meets the requirements to run felixpy.")
    return 0


def register(node_sub: Any, status_text: Callable[[str | None], str]) -> None:
    """``status_text(run_dir)``: what ``felixctl node status`` prints (the node verb passes its own)."""
    p = node_sub.add_parser("diags", help="one archive of routes, rules, links, iptables, ipsets, logs")
    p.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help=f"logs to include (default {DEFAULT_LOG_DIR})")
    p.add_argument("--output-dir", default=None, help="where the archive goes (default: here)")
    p.add_argument("--run-dir", default=None, help="the agent's run directory (default $FELIXPY_RUN_DIR)")
    p.set_defaults(func=run_diags, status_text=status_text)
    p = node_sub.add_parser("checksystem", help="kernel, modules, sysctls, tools and clock: OK or FAIL each")
    p.add_argument("-f", "--kernel-config", default=None, help="kernel config file to look modules up in")
    p.set_defaults(func=run_checksystem)
