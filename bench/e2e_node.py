"""What the end-to-end benchmarks share: a node namespace with etcd and the real ``felixpy node``.

Not a benchmark itself. ``bench.e2e_dataplane`` and ``bench.e2e_startup`` build one network
namespace ``fpe-<pid>-node`` (loopback, a veth ``eth0`` 10.79.0.1/24, a default route), then run
themselves again inside it (``ip netns exec ... python -m bench.<name> --in-ns``) so that etcd,
the agent and the measuring process all see the node's loopback and kernel tables. The agent is
its own process (the console script ``felixpy node``); everything timed here is read from the
kernel by commands run from the measuring process (``iptables -S``, ``ipset list``, ``ip route``),
never from the agent's logs or memory (one exception, said where it is used: ``bench.e2e_startup``'s
``*_peer_eor`` lines take the time the agent received its BGP peer's End-of-RIB from its log).

Local endpoints are WorkloadEndpoints written straight to etcd, each with a host-side ``cali*``
veth made beforehand whose peer stays in the node namespace (no pod namespace, no CNI call): what
is measured is the agent's reaction to the datastore, not pod creation. Pods that must carry
traffic (the ping flow of ``e2e_startup``) get a real namespace and address.

Pure parts (sizes, percentiles, the JSON line) are at the top and tested by
tests/unit/test_bench_e2e.py; the rest needs root and is run by hand.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ETCD_URL = "http://127.0.0.1:23797"
NODE = "e2e-node"
NODE_IP = "10.79.0.1/24"
FRR_BGPD = "/usr/lib/frr/bgpd"
PROBE = "import urllib.request as u; u.urlopen('http://127.0.0.1:9099/readiness', timeout=1)"

# endpoints / policies: x1, x5, x10 as in issue 15; "small" is the default (< 2 min on 2 cores)
SIZES: dict[str, tuple[int, int]] = {
    "small": (20, 10),
    "x1": (100, 50),
    "x5": (500, 250),
    "x10": (1000, 500),
}


# ---------------------------------------------------------------------------------- pure parts
def size_of(name: str, endpoints: int | None = None, policies: int | None = None) -> tuple[int, int]:
    """A named size, either count overridden; unknown names and negative counts are refused."""
    if name not in SIZES:
        raise ValueError(f"--size: {name!r} is not one of {', '.join(SIZES)}")
    n, m = SIZES[name]
    n, m = endpoints if endpoints is not None else n, policies if policies is not None else m
    if n < 1 or m < 0:
        raise ValueError(f"--endpoints must be >= 1 and --policies >= 0 (got {n}, {m})")
    return n, m


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sample."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def summary(name: str, samples: Sequence[float], unit: str, reference: str = "", **extra: Any) -> dict:
    """One JSON-ready record: value = p50, with p99, min, max, n and the load average beside it."""
    return {
        "name": name,
        "value": round(pct(samples, 0.5), 3),
        "unit": unit,
        "p50": round(pct(samples, 0.5), 3),
        "p99": round(pct(samples, 0.99), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "n": len(samples),
        "reference": reference,
        "load1": round(os.getloadavg()[0], 2),
        **extra,
    }


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def endpoint_ip(i: int) -> str:
    return f"10.240.{i // 250}.{i % 250 + 1}"


def endpoint_labels(i: int) -> dict[str, str]:
    return {"app": f"a{i % 10}", "svc": f"s{i % 20}"}


def policy_spec(j: int) -> dict[str, Any]:
    """Policy ``j`` of the pre-loaded set: selects one app in ten, admits one service in twenty."""
    return {
        "order": 100 + j,
        "selector": f"app == 'a{j % 10}'",
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": f"svc == 's{j % 20}'"},
                "destination": {"ports": [1000 + j]},
            }
        ],
        "egress": [{"action": "Allow"}],
    }


def bird_static(n: int) -> str:
    """A BIRD static protocol ``st`` of ``n`` /26 from 10.64.0.0 (blackholes: BIRD announces them)."""
    routes = "".join(f"  route {static_prefix(i)} blackhole;\n" for i in range(n))
    return f"protocol static st {{ ipv4;\n{routes}}}\n"


def static_prefix(i: int) -> str:
    """The ``i``-th /26 the bench's BGP peer announces (10.64.0.0, 10.64.0.64, ...)."""
    return f"10.{64 + i // 1024}.{(i // 4) % 256}.{(i % 4) * 64}/26"


def frr_conf(n: int, node_ip: str, log: str) -> str:
    """An FRR bgpd config as the BIRD peer's: router id 10.78.0.2, iBGP AS 64512 to ``node_ip``,
    graceful restart, connect retry 1 s, ``n`` /26 (``network`` statements, no zebra, so no
    import check) announced with itself as next hop; session events logged with ms times."""
    nets = "".join(f"  network {static_prefix(i)}\n" for i in range(n))
    return (
        f"frr defaults traditional\nhostname bench-peer\nlog file {log}\nlog timestamp precision 3\n"
        "debug bgp neighbor-events\n"
        "router bgp 64512\n bgp router-id 10.78.0.2\n no bgp network import-check\n"
        " bgp graceful-restart\n"
        f" neighbor {node_ip} remote-as 64512\n neighbor {node_ip} update-source 10.78.0.2\n"
        f" neighbor {node_ip} timers connect 1\n"
        f" address-family ipv4 unicast\n{nets}  neighbor {node_ip} next-hop-self\n exit-address-family\n"
    )


def parse_ping(out: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line."""
    for line in out.splitlines():
        if "packets transmitted" in line:
            words = line.replace(",", "").split()
            return int(words[0]), int(words[words.index("received") - 1])
    raise ValueError(f"no ping summary in: {out[-200:]!r}")


# ------------------------------------------------------------------------ kernel / process parts
def sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=check, input=stdin)


def wait(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.002) -> float:
    """Poll ``pred`` until true; seconds taken. Bounded: raises after ``timeout``."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if pred():
            return time.perf_counter() - start
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


PACKAGES = ("felixpy", "policy", "bgp", "ipam")


def compile_sources(root: Path = ROOT, packages: Sequence[str] = PACKAGES) -> bool:
    """Byte-compile the agent's sources, as ``pip install`` of the wheel does at install time.

    The venv here is an editable install, and with ``PYTHONDONTWRITEBYTECODE=1`` (set on these
    machines) nothing ever writes a ``.pyc``: every exec of the agent would compile every module
    again, ~0.55 s of CPU that an installed agent (wheel or the node image, which runs
    ``compileall``) never pays. ``py_compile`` writes regardless of that variable; an up-to-date
    ``.pyc`` is left alone. True when every package compiled.
    """
    dirs = [root / name for name in packages if (root / name).is_dir()]
    return all(compileall.compile_dir(str(d), quiet=1, workers=1) for d in dirs)


def outer(module: str, argv: list[str]) -> int:
    """Make the node namespace, run ``module --in-ns argv`` inside it, remove everything after.

    The agent's sources are byte-compiled first (``compile_sources``): the figures are those of
    an installed agent, not of one compiling itself at every exec.
    """
    if os.geteuid() != 0:
        print(f"bench.{module} needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("etcd", "ipset", "ping"):
        if shutil.which(tool) is None:
            print(f"bench.{module}: {tool} is not installed", file=sys.stderr)
            return 2
    if not compile_sources():
        print(f"bench.{module}: the agent's sources did not byte-compile", file=sys.stderr)
        return 2
    prefix = f"fpe-{os.getpid()}"
    ns = f"{prefix}-node"
    try:
        sh("ip", "netns", "add", ns)
        for cmd in (
            "link set lo up",
            "link add eth0 type veth peer name eth0p",
            f"addr add {NODE_IP} dev eth0",
            "link set eth0 up",
            "link set eth0p up",
            "route add default via 10.79.0.254 dev eth0",
        ):
            sh("ip", "-n", ns, *cmd.split())
        env = {**os.environ, "FPE_PREFIX": prefix}
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", f"bench.{module}", "--in-ns", *argv]
        return subprocess.run(argv, cwd=ROOT, env=env).returncode
    finally:
        names = sh("ip", "netns", "list", check=False).stdout.split()
        for name in [n for n in names if n.startswith(prefix)]:
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", name, check=False)


class Node:
    """Inside the node namespace: etcd, the agent, endpoints and policies. ``close`` kills what it
    started; the namespaces themselves are removed by :func:`outer`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.prefix = os.environ.get("FPE_PREFIX", f"fpe-{os.getpid()}")
        self.etcd: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.kv: Any = None

    # etcd and datastore
    def start_etcd(self) -> None:
        argv = [
            "etcd", "--name", "e", "--data-dir", str(self.work / "etcd"),
            "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
            "--listen-peer-urls", "http://127.0.0.1:23798", "--log-level", "warn", "--logger", "zap",
            "--quota-backend-bytes", str(4 << 30),
        ]  # fmt: skip
        self.etcd = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from felixpy.datastore.etcd import EtcdKV

        self.kv = EtcdKV(ETCD_URL)
        wait(self._etcd_up, 30, "etcd", interval=0.1)

    def _etcd_up(self) -> bool:
        try:
            self.kv.revision()
        except Exception:
            return False
        return True

    def put_wep(self, name: str, iface: str, ip: str, labels: dict[str, str], node: str = NODE) -> None:
        from felixpy.datastore.resources import encode
        from felixpy.resources import WorkloadEndpoint

        wep = WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": name, "namespace": "bench", "labels": labels},
                "spec": {
                    "node": node, "pod": name, "endpoint": "eth0", "interfaceName": iface,
                    "ipNetworks": [f"{ip}/32"], "profiles": ["kns.bench"],
                },
            }
        )  # fmt: skip
        self.kv.put(*encode(wep))

    def put_policy(self, name: str, spec: dict[str, Any]) -> str:
        """Write a GlobalNetworkPolicy; returns its etcd key."""
        from felixpy.datastore.resources import encode
        from felixpy.resources import GlobalNetworkPolicy

        key, value = encode(GlobalNetworkPolicy.model_validate({"metadata": {"name": name}, "spec": spec}))
        self.kv.put(key, value)
        return str(key)

    def links(self, names: Iterable[str]) -> None:
        """Host-side veths (peer ``x<name>`` stays in the node namespace), up."""
        batch = "".join(f"link add {n} type veth peer name x{n}\nlink set {n} up\n" for n in names)
        if batch:
            sh("ip", "-batch", "-", stdin=batch)

    def load(self, endpoints: int, policies: int) -> None:
        ifaces = [f"calie{i:05d}" for i in range(endpoints)]
        self.links(ifaces)
        for i, iface in enumerate(ifaces):
            self.put_wep(f"ep{i}", iface, endpoint_ip(i), endpoint_labels(i))
        for j in range(policies):
            self.put_policy(f"pol{j}", policy_spec(j))

    def put_resource(self, obj: Any) -> None:
        from felixpy.datastore.resources import encode

        self.kv.put(*encode(obj))

    def start_bgp_peer(self, routes: int, kind: str = "bird") -> str:
        """A BIRD 2 (or, ``kind="frr"``, an FRR bgpd) peer in its own namespace ``<prefix>-peer``
        (10.78.0.2, iBGP AS 64512, graceful restart) announcing ``routes`` /26 from 10.64.0.0 with
        itself as next hop, the global BGPPeer that makes the agent's speaker peer with it and the
        IP pool 10.64.0.0/12 they are in. Returns the peer's control socket (BIRD's, or the
        directory of FRR's vty socket). FRR is waited for until all ``routes`` are in its RIB."""
        from felixpy.resources import BGPPeer, IPPool

        ns = f"{self.prefix}-peer"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "bgp0", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", "10.78.0.1/24", "dev", "bgp0")
        sh("ip", "link", "set", "bgp0", "up")
        for cmd in ("link set lo up", "addr add 10.78.0.2/24 dev eth0", "link set eth0 up",
                    f"route add {NODE_IP.split('/')[0]}/32 via 10.78.0.1"):  # fmt: skip
            sh("ip", "-n", ns, *cmd.split())
        work = self.work / kind
        work.mkdir(parents=True, exist_ok=True)
        start = self._start_frr if kind == "frr" else self._start_bird
        sock = start(ns, work, routes)
        name = f"bench-{kind}"
        peer = {"metadata": {"name": name}, "spec": {"peerIP": "10.78.0.2", "asNumber": 64512}}
        self.put_resource(BGPPeer.model_validate(peer))
        # the other nodes' blocks: routes outside every IP pool would be refused (Calico's import filter)
        pool = {"cidr": "10.64.0.0/12", "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"}
        self.put_resource(IPPool.model_validate({"metadata": {"name": "bench-remote"}, "spec": pool}))
        return sock

    def _start_frr(self, ns: str, work: Path, routes: int) -> str:
        os.chmod(work, 0o777)  # bgpd's log, pid and vty socket, in the bench's temporary directory
        (work / "bgpd.conf").write_text(frr_conf(routes, NODE_IP.split("/")[0], str(work / "frr.log")))
        self.peer_proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", ns, FRR_BGPD, "-Z", "-S", "-u", "root", "-g", "root",
             "-f", str(work / "bgpd.conf"), "-i", str(work / "bgpd.pid"), "--vty_socket", str(work),
             "-l", "10.78.0.2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def loaded() -> bool:
            out = sh("ip", "netns", "exec", ns, "vtysh", "--vty_socket", str(work), "-c",
                     "show bgp ipv4 unicast statistics json", check=False).stdout  # fmt: skip
            try:
                return int(json.loads(out)["ipv4Unicast"][0]["totalPrefixes"]) >= routes
            except (ValueError, KeyError, TypeError):
                return False

        wait(loaded, 120, f"FRR's RIB holding {routes} routes", interval=0.2)
        return str(work)

    def _start_bird(self, ns: str, work: Path, routes: int) -> str:
        conf = (
            f'log "{work / "bird.log"}" all;\ntimeformat log "%T.%3f";\n'
            "router id 10.78.0.2;\nprotocol device { }\n"
            + bird_static(routes)
            + "protocol bgp felix { local 10.78.0.2 as 64512; neighbor "
            + NODE_IP.split("/")[0]
            + " as 64512; multihop;\n  connect retry time 1; error wait time 1, 2; graceful restart on;\n"
            + "  debug { states, events };\n"
            + '  ipv4 { import none; export where proto = "st"; next hop self; }; }\n'
        )
        (work / "bird.conf").write_text(conf)
        sock = str(work / "bird.ctl")
        self.peer_proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bird", "-f", "-c", str(work / "bird.conf"), "-s", sock],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait(lambda: Path(sock).exists(), 10, "bird's control socket", interval=0.05)
        return sock

    def load_remote(self, count: int) -> None:
        """``count`` endpoints of 50 other nodes (no veth: the agent keeps them for selectors)."""
        from concurrent.futures import ThreadPoolExecutor

        def put(i: int) -> None:
            ip = f"10.243.{i // 250}.{i % 250 + 1}"
            self.put_wep(f"rm{i}", f"calirm{i:05d}", ip, endpoint_labels(i), node=f"remote-{i % 50}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(count)))

    # the agent
    def exec_agent(self, **extra: str) -> float:
        """Start ``felixpy node``; returns the perf_counter of the exec."""
        env = {
            "PATH": os.environ["PATH"], "NODENAME": NODE, "ETCD_ENDPOINTS": ETCD_URL, "IP": NODE_IP,
            "CALICO_NETWORKING_BACKEND": "none", "CALICO_IPV4POOL_CIDR": "10.240.0.0/14",
            "FELIXPY_RUN_DIR": str(self.work / "run"), "FELIXPY_STATE_DIR": str(self.work / "run"),
            "FELIXPY_LOG_LEVEL": "info",
            "FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": "9099", **extra,
        }  # fmt: skip
        # profiling only: "NAME=value ..." added to the agent's environment (e.g. PYTHONPROFILEIMPORTTIME=1)
        for kv in os.environ.get("FPE_AGENT_ENV", "").split():
            name, sep, value = kv.partition("=")
            if sep:
                env[name] = value
        log = open(self.work / "agent.log", "ab")  # noqa: SIM115 (handed to the child)
        start = time.perf_counter()
        self.agent = subprocess.Popen([str(VENV_BIN / "felixpy"), "node"], stdout=log, stderr=log, env=env)
        spy = os.environ.get("FPE_PYSPY")  # profiling only: "<file>:<seconds>", py-spy record of the agent
        if spy:
            self.spied = getattr(self, "spied", 0) + 1
            out, _, secs = spy.rpartition(":")
            subprocess.Popen(
                [str(VENV_BIN / "py-spy"), "record", "--nonblocking", "-r", "100", "-f", "raw", "-d", secs,
                 "-o", f"{out}.{self.spied}", "--pid", str(self.agent.pid),
                 *os.environ.get("FPE_PYSPY_ARGS", "").split()],  # e.g. "--gil": CPU, not wall
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        log.close()
        return start

    def ready(self) -> bool:
        assert self.agent is not None
        if self.agent.poll() is not None:
            tail = (self.work / "agent.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"agent exited rc={self.agent.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen("http://127.0.0.1:9099/readiness", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop_agent(self, sig: int = signal.SIGKILL) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(sig)
            self.agent.wait(60)

    def close(self) -> None:
        self.stop_agent()
        peer = getattr(self, "peer_proc", None)  # the BGP peer (BIRD or FRR's bgpd)
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait(10)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(10)
        log = self.work / "agent.log"
        if log.exists():
            shutil.copy(log, f"/tmp/{self.prefix}-agent.log")
        speaker_log = self.work / "run" / "exabgp.log"
        if speaker_log.exists():
            shutil.copy(speaker_log, f"/tmp/{self.prefix}-exabgp.log")
        for peer_log in (self.work / "bird" / "bird.log", self.work / "frr" / "frr.log"):
            if peer_log.exists():
                shutil.copy(peer_log, f"/tmp/{self.prefix}-{peer_log.stem}.log")

    # reading the kernel
    def iptables(self) -> str:
        """The iptables binary of the mode the agent detects (kube-proxy's rule), e.g. iptables-nft.

        Detected once and kept: detection dumps both iptables variants (about 1 s at 10,000 rules
        under load), which a timed wait must not include. Call it before the first agent starts
        (the node namespace is fresh: the agent then makes the same choice)."""
        if getattr(self, "_ipt", None) is None:
            from felixpy.dataplane.iptables_backend import detect_mode

            self._ipt = f"iptables-{detect_mode()}"
        return str(self._ipt)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (not its children), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc/*/stat's ppid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found
