"""Agent + CNI benchmark: felixpy-cni vs the reference bridge+host-local plugins, route latency, RSS.

    .venv/bin/python -m bench.cni [--cycles 100] [--samples 200] [--local 1000] [--remote 10000]

Root only. Builds one node namespace (``fpb-<pid>-node``: a veth ``eth0`` 10.78.0.1/24, etcd on
its loopback, the real ``felixpy node`` with BGP off and policy on) and measures, in one run:

  cni_add_del_felixpy     ADD+DEL cycle of the real plugin: ``ip netns add`` of a pod namespace,
                          ADD, DEL, ``ip netns del`` (p50/p99 ms). The plugin is exactly what
                          ``felixpy install-cni`` writes (the static forwarder); ``--plugin python``
                          times the stdlib plugin's ``-IS`` launcher, ``--plugin entrypoint`` the
                          venv's console script.
  cni_add_felixpy         the ADD alone of those cycles (p50/p99 ms); cni_add_agent_p50: the agent's
                          own ADD (its cni.done line), cni_add_outside_agent_p50: the rest
  cni_phase_*             per phase of those cycles (netns add, ADD, DEL, netns del; p50 ms), both
  cni_drift_*             median of the last 20 cycles / median of the first 20 (growth check)
  cni_add_del_reference   the same cycle with /usr/lib/cni ``bridge`` + ``host-local`` (no agent);
  cni_add_reference       cycles of ours and the reference alternate, so load hits both alike
  cni_add_del_ratio_p50   felixpy / reference, p50 and p99 (issue 15.4: p50 <= 1.2, p99 <= 2)
  cni_add_ratio_p50       the same for ADD alone (issue 15.4: p50 <= 1.5, p99 <= 2; issue 13: <= 2)
  loadavg_1m              /proc/loadavg before and after the cycles (the machine may be shared:
                          the interleaved ratios are the figure to read, the times are not)
  cni_stage_*             (--parts stages) where an ADD and a DEL spend their time, both sides of the
                          socket: exec to the plugin's first line (``ip netns exec`` + interpreter
                          start), loading the plugin, request to the agent's handler, the handler
                          (and its steps from the agent's ``cni.done`` log line), answer back, exit
                          (p50 ms; the stdlib Python plugin with timestamps, not the forwarder)
  wep_to_route            a WorkloadEndpoint put into etcd -> its /32 route in the node's kernel
                          (p50/p99 ms; the endpoint's interface is a dummy link made beforehand)
  agent_rss_*             agent RSS idle, then with --local endpoints of this node (written straight
                          to etcd, each with a dummy ``cali*`` link so its route can be installed)
                          and --remote endpoints of other nodes (goal <= 200 MB)

Left out of the CNI figures: the container runtime and kubelet (sandbox, pause container, the
runtime's own exec of the plugin: here ``ip netns exec`` runs it, for both sides alike); the
Kubernetes datastore (etcd only); IPv6 and dual-stack pods (IPv4 only); policies selecting the
pod (none exist: its chains are the profile ones); a populated node (one pod at a time, so every
ADD recreates its namespace's profile chains that the previous DEL's deferred flush removed);
concurrent ADDs. The reference does less than ours by design: no datastore, no policy.

The etcd-side parts run inside the node namespace (``--inner``), since etcd listens there.
One JSON line per figure: {"name", "value", "unit", "reference"}. Every namespace and process is
removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ETCD_URL = "http://127.0.0.1:23795"
NODE = "bench-node"
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
PHASES = ("netns_add", "add", "del", "netns_del")


def emit(name: str, value: float, unit: str, reference: str = "", **extra: object) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "reference": reference, **extra}))
    sys.stdout.flush()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=check, **kw)  # type: ignore[call-overload, no-any-return]


def wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = f"fpb-{os.getpid()}-node"
        self.pods: set[str] = set()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agent: subprocess.Popen[bytes] | None = None

    def nsexec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def setup(self) -> None:
        sh("ip", "netns", "add", self.ns)
        for cmd in (
            "link set lo up",
            "link add eth0 type veth peer name eth0p",
            "addr add 10.78.0.1/24 dev eth0",
            "link set eth0 up",
            "link set eth0p up",
            "route add default via 10.78.0.254 dev eth0",
        ):
            sh("ip", "-n", self.ns, *cmd.split())
        etcd = [
            "etcd",
            "--name",
            "b",
            "--data-dir",
            str(self.tmp / "etcd"),
            "--listen-client-urls",
            ETCD_URL,
            "--advertise-client-urls",
            ETCD_URL,
            "--listen-peer-urls",
            "http://127.0.0.1:23796",
            "--log-level",
            "warn",
            "--logger",
            "zap",
            "--quota-backend-bytes",
            str(4 << 30),
        ]
        self.procs.append(
            subprocess.Popen(self.nsexec(*etcd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        health = self.nsexec("etcdctl", "--endpoints", ETCD_URL, "endpoint", "health")
        wait(lambda: sh(*health, check=False).returncode == 0, 20, "etcd")
        self.start_agent()

    def start_agent(self) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "NODENAME": NODE,
            "ETCD_ENDPOINTS": ETCD_URL,
            "IP": "10.78.0.1/24",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_IPV4POOL_CIDR": "10.240.0.0/14",
            "FELIXPY_RUN_DIR": str(self.tmp / "run"),
            "FELIXPY_STATE_DIR": str(self.tmp / "run"),  # not the host's /var/lib/felixpy
            "FELIXPY_LOG_LEVEL": "info",
        }
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115 (handed to the child)
        self.agent = subprocess.Popen(
            self.nsexec(str(VENV_BIN / "felixpy"), "node"), stdout=log, stderr=log, env=env
        )
        self.procs.append(self.agent)
        probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:9099/readiness', timeout=1)"
        wait(
            lambda: sh(*self.nsexec(sys.executable, "-c", probe), check=False).returncode == 0,
            60,
            "agent ready",
        )

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        for pod in self.pods:
            sh("ip", "netns", "del", pod, check=False)
        pids = sh("ip", "netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", self.ns, check=False)
        if (self.tmp / "agent.log").exists():
            shutil.copy(self.tmp / "agent.log", "/tmp/felixpy-bench-cni-agent.log")

    # ---- ADD+DEL cycles ---------------------------------------------------------------------
    def _plugin(self, binary: str, conf: dict, command: str, pod: str, cid: str) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/var/run/netns/{pod}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/usr/lib/cni",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}",
        }
        proc = sh(*self.nsexec(binary), input=json.dumps(conf), env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{binary} {command} failed: {proc.stdout} {proc.stderr}")

    def cycles(self, tag: str, binary: str, conf: dict, n: int) -> list[dict[str, float]]:
        """``n`` timed cycles; each a dict of phase -> ms, and ``total``."""
        out = []
        for i in range(n):
            pod, cid = f"fpb-{os.getpid()}-{tag}{i}", f"{tag}-{i}"
            marks = [time.perf_counter()]
            sh("ip", "netns", "add", pod)
            self.pods.add(pod)
            marks.append(time.perf_counter())
            self._plugin(binary, conf, "ADD", pod, cid)
            marks.append(time.perf_counter())
            self._plugin(binary, conf, "DEL", pod, cid)
            marks.append(time.perf_counter())
            sh("ip", "netns", "del", pod)
            marks.append(time.perf_counter())
            self.pods.discard(pod)
            ms = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
            out.append(dict(zip(PHASES, ms, strict=True)) | {"total": (marks[-1] - marks[0]) * 1000})
        return out

    def inner(self, *args: str) -> list[dict]:
        proc = sh(*self.nsexec(sys.executable, __file__, "--inner", *args), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"inner {args} failed: {proc.stderr[-2000:]}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    def rss_mb(self) -> float:
        assert self.agent is not None
        for line in Path(f"/proc/{self.agent.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def felixpy_conf(run_dir: Path) -> dict:
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "felixpy", "run_dir": str(run_dir)}


def reference_conf(data_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "ref",
        "type": "bridge",
        "bridge": "cni-ref0",
        "isGateway": True,
        "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.79.0.0/16", "dataDir": str(data_dir)},
    }


def install_plugin(b: Bench, kind: str) -> str:
    """The felixpy plugin binary to time: exactly what ``felixpy install-cni`` writes (the static
    forwarder), the stdlib Python plugin's ``-IS`` launcher (``python``), or the console script."""
    if kind == "entrypoint":
        return str(VENV_BIN / "felixpy-cni")
    if kind == "python":
        from felixpy.kube.install_cni import launcher

        path = b.tmp / "felixpy-python"
        path.write_text(launcher("felixpy-cni", python=str(VENV_BIN / "python3")))
        path.chmod(0o755)
        return str(path)
    env = {
        "PATH": os.environ["PATH"],
        "CNI_BIN_DIR": str(b.tmp / "cni-bin"),
        "CNI_CONF_DIR": str(b.tmp / "net.d"),
        "CNI_NETWORK_CONFIG": json.dumps({"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": []}),
        "KUBERNETES_NODE_NAME": NODE,
    }
    sh(str(VENV_BIN / "felixpy"), "install-cni", env=env)
    return str(b.tmp / "cni-bin" / "felixpy")


def agent_seconds(log: Path, command: str, prefix: str) -> list[float]:
    """The agent's ``cni.done seconds=`` of ``command`` for containers whose ID starts with ``prefix``."""
    import re

    pattern = re.compile(rf"event='cni.done' command='{command}' container='{prefix}[^']*' seconds=([0-9.]+)")
    text = log.read_text(errors="replace") if log.exists() else ""
    return [float(m.group(1)) for m in pattern.finditer(text)]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_cni(b: Bench, cycles: int, plugin: str) -> None:
    """ADD+DEL cycles and their ADD phase, ours and the reference interleaved (one of each per
    round, which of the two goes first alternating, so load changes hit both alike); p50 and p99
    of each, and the ratios."""
    binary = install_plugin(b, plugin)
    load_before = loadavg()
    emit("loadavg_1m_before", load_before, "load", "/proc/loadavg when the cycles started")
    sh(*b.nsexec(binary), check=False, input="{}", env={"CNI_COMMAND": "VERSION"})
    b.cycles("warm", binary, felixpy_conf(b.tmp / "run"), 3)
    b.cycles("wref", "/usr/lib/cni/bridge", reference_conf(b.tmp / "hl"), 3)
    fx: list[dict[str, float]] = []
    ref: list[dict[str, float]] = []
    for i in range(cycles):
        for side in ("ref", "fx") if i % 2 else ("fx", "ref"):
            if side == "fx":
                fx += b.cycles(f"fx{i}-", binary, felixpy_conf(b.tmp / "run"), 1)
            else:
                ref += b.cycles(f"ref{i}-", "/usr/lib/cni/bridge", reference_conf(b.tmp / "hl"), 1)
    load_after = loadavg()
    emit("loadavg_1m_after", load_after, "load", "/proc/loadavg when the cycles ended")
    for name, runs in (("felixpy", fx), ("reference", ref)):
        ref_text = "bridge+host-local from /usr/lib/cni" if name == "reference" else "see the ratios"
        extra = {"plugin": plugin} if name == "felixpy" else {}
        for figure, key in (("add_del", "total"), ("add", "add")):
            vals = [r[key] for r in runs]
            emit(
                f"cni_{figure}_{name}_p50", statistics.median(vals), "ms", ref_text, cycles=len(vals), **extra
            )
            emit(f"cni_{figure}_{name}_p99", pct(vals, 0.99), "ms", ref_text, cycles=len(vals), **extra)
        for phase in PHASES:
            p50 = statistics.median(r[phase] for r in runs)
            emit(f"cni_phase_{name}_{phase}_p50", p50, "ms", f"{phase} phase of the {name} cycle")
        vals = [r["total"] for r in runs]
        if len(vals) >= 40:
            drift = statistics.median(vals[-20:]) / statistics.median(vals[:20])
            emit(f"cni_drift_{name}", drift, "x", "median of the last 20 cycles / the first 20")
    agent_add = agent_seconds(b.tmp / "agent.log", "ADD", "fx")
    if agent_add:
        p50 = statistics.median(agent_add) * 1000
        emit("cni_add_agent_p50", p50, "ms", "the agent's own ADD (cni.done seconds) in those cycles")
        emit(
            "cni_add_outside_agent_p50",
            statistics.median(r["add"] for r in fx) - p50,
            "ms",
            "ADD phase p50 minus the agent's: ip netns exec, the plugin process, the socket",
        )
    goals = {
        ("add_del", "p50"): "issue 15.4: <= 1.2",
        ("add", "p50"): "issue 15.4: <= 1.5 (issue 13: <= 2)",
        ("add_del", "p99"): "issue 15.4: <= 2",
        ("add", "p99"): "issue 15.4: <= 2",
    }
    load = round(max(load_before, load_after), 2)
    for figure, key in (("add_del", "total"), ("add", "add")):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            ours, theirs = [r[key] for r in fx], [r[key] for r in ref]
            if q == 0.5:
                ratio = statistics.median(ours) / statistics.median(theirs)
            else:
                ratio = pct(ours, q) / pct(theirs, q)
            emit(
                f"cni_{figure}_ratio_{label}",
                ratio,
                "x",
                goals[(figure, label)],
                plugin=plugin,
                cycles=len(fx),
                loadavg_1m=load,
            )


STAGE_LAUNCHER = """#!{python} -IS
# The installed launcher's way of loading the plugin, with wall-clock marks (bench/cni.py stages).
import time
t0 = time.time()
import sys
from _frozen_importlib_external import SourceFileLoader
p = type(sys)("felixpy_cni_plugin")
SourceFileLoader(p.__name__, {plugin!r}).exec_module(p)
t1 = time.time()
marks = []
call_agent = p.call_agent
def timed_call(*args):
    marks.append(time.time())
    try:
        return call_agent(*args)
    finally:
        marks.append(time.time())
p.call_agent = timed_call
env = p.environ()
code, out = p.invoke(env, sys.stdin.read())
if out:
    sys.stdout.write(out + "\\n")
sys.stdout.flush()
with open({log!r}, "a") as f:
    fields = [env["CNI_COMMAND"], env["CNI_CONTAINERID"], *map(repr, [t0, t1, *marks, time.time()])]
    f.write(" ".join(fields) + "\\n")
p.posix._exit(code)
"""
STAGES = ("exec_to_python", "plugin_load", "to_agent", "agent", "answer_back", "exit")


def run_stages(b: Bench, cycles: int) -> None:
    """Per-stage p50 of ADD and DEL: plugin-side marks, the agent's cni.done line, the exec itself."""
    import re
    from datetime import datetime

    marks_log, launcher = b.tmp / "stage-marks.log", b.tmp / "stage-bin" / "felixpy"
    launcher.parent.mkdir(exist_ok=True)
    plugin = str(ROOT / "felixpy" / "cni" / "plugin.py")
    launcher.write_text(STAGE_LAUNCHER.format(python=VENV_BIN / "python", plugin=plugin, log=str(marks_log)))
    launcher.chmod(0o755)
    conf = felixpy_conf(b.tmp / "run")
    b.cycles("swarm", str(launcher), conf, 3)
    bench_side: dict[tuple[str, str], tuple[float, float]] = {}
    for i in range(cycles):
        pod, cid = f"fpb-{os.getpid()}-st{i}", f"st-{i}"
        sh("ip", "netns", "add", pod)
        b.pods.add(pod)
        for command in ("ADD", "DEL"):
            start = time.time()
            b._plugin(str(launcher), conf, command, pod, cid)
            bench_side[(command, cid)] = (start, time.time())
        sh("ip", "netns", "del", pod)
        b.pods.discard(pod)
    time.sleep(0.5)  # the agent's log line is written before it answers; let it reach the file
    agent: dict[tuple[str, str], tuple[float, float, dict[str, float]]] = {}
    done = re.compile(
        r"timestamp='([^']+)'.*command='(\w+)' container='([^']+)' seconds=([\d.]+) steps_ms=(\{[^}]*\})"
    )
    for line in (b.tmp / "agent.log").read_text(errors="replace").splitlines():
        if (m := done.search(line)) is not None:
            end = datetime.fromisoformat(m[1].replace("Z", "+00:00")).timestamp()
            steps = {k: float(v) for k, v in re.findall(r"'(\w+)': ([\d.]+)", m[5])}
            agent[(m[2], m[3])] = (end - float(m[4]), end, steps)
    stages: dict[str, list[float]] = {}
    for line in marks_log.read_text().splitlines():
        command, cid, *rest = line.split()
        if (command, cid) not in bench_side:
            continue  # a warm-up call
        t0, t1, sent, answered, logged = map(float, rest)
        start, end = bench_side[(command, cid)]
        a_start, a_end, steps = agent[(command, cid[:12])]
        spans = (t0 - start, t1 - t0, a_start - sent, a_end - a_start, answered - a_end, end - logged)
        for stage, v in zip(STAGES, spans, strict=True):
            stages.setdefault(f"{command.lower()}_{stage}", []).append(v * 1000)
        for step, ms in steps.items():
            stages.setdefault(f"{command.lower()}_agent_{step}", []).append(ms)
    for name, values in stages.items():
        emit(f"cni_stage_{name}_p50", statistics.median(values), "ms", f"{len(values)} calls")


def run_route_latency(b: Bench, samples: int) -> None:
    batch = "\n".join(
        f"link add calibench{i} type veth peer name cbp{i}\nlink set calibench{i} up" for i in range(samples)
    )
    sh(*b.nsexec("ip", "-batch", "-"), input=batch + "\n")
    for rec in b.inner("latency", str(samples)):
        emit(**rec)


def run_rss(b: Bench, local: int, remote: int) -> None:
    emit("agent_rss_idle", b.rss_mb(), "MB", "agent after the other figures")
    batch = "\n".join(
        f"link add caliload{i:05d} type veth peer name clp{i:05d}\nlink set caliload{i:05d} up"
        for i in range(local)
    )
    sh(*b.nsexec("ip", "-batch", "-"), input=batch + "\n")
    start = time.monotonic()
    b.inner("load", str(local), str(remote))

    def routes_in() -> bool:
        out = sh("ip", "-n", b.ns, "route", "show", "proto", "80").stdout
        return out.count("caliload") >= local

    wait(routes_in, 600, "routes of the loaded endpoints")
    emit(
        "agent_load_to_routes",
        time.monotonic() - start,
        "s",
        f"{local} local + {remote} remote WEPs put -> routes",
    )
    time.sleep(5)
    emit("agent_rss_loaded", b.rss_mb(), "MB", f"goal <= 200 MB; {local} local + {remote} remote endpoints")


# ---- inside the node namespace ---------------------------------------------------------------
def _wep(name: str, node: str, iface: str, ip: str) -> tuple[str, bytes]:
    from felixpy.datastore.resources import encode
    from felixpy.resources import WorkloadEndpoint

    wep = WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": name, "namespace": "bench", "labels": {"app": f"a{len(name) % 10}"}},
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": name,
                "endpoint": "eth0",
                "interfaceName": iface,
                "ipNetworks": [f"{ip}/32"],
                "profiles": ["kns.bench"],
            },
        }
    )
    return encode(wep)


def _has_host_route(ipr: Any, ip: str) -> bool:
    """An exact ``ip/32`` route in the main table (a dump: ``route get`` would match the default)."""
    return any(
        r["dst_len"] == 32 and r.get_attr("RTA_DST") == ip
        for r in ipr.get_routes(family=socket.AF_INET, table=254, proto=80)
    )


def inner_latency(samples: int) -> None:
    from pyroute2 import IPRoute

    from felixpy.datastore.etcd import EtcdKV

    kv, out = EtcdKV(ETCD_URL), []
    with IPRoute() as ipr:
        for i in range(samples):
            ip = f"10.241.{i // 250}.{i % 250 + 1}"
            key, value = _wep(f"lat-{i}", NODE, f"calibench{i}", ip)
            start = time.perf_counter()
            kv.put(key, value)
            deadline = start + 5
            while not _has_host_route(ipr, ip) and time.perf_counter() < deadline:
                time.sleep(0.0005)
            out.append((time.perf_counter() - start) * 1000)
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        goal = "goal <= 50 ms" if label == "p50" else "goal <= 200 ms"
        emit(f"wep_to_route_{label}", pct(out, q), "ms", goal, samples=samples)


def inner_load(local: int, remote: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from felixpy.datastore.etcd import EtcdKV

    kv = EtcdKV(ETCD_URL)
    items = [
        _wep(f"ld-{i}", NODE, f"caliload{i:05d}", f"10.242.{i // 250}.{i % 250 + 1}") for i in range(local)
    ]
    items += [
        _wep(f"rm-{i}", f"remote-{i % 50}", f"calirm{i}", f"10.243.{i // 250}.{i % 250 + 1}")
        for i in range(remote)
    ]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kvp: kv.put(*kvp), items))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--local", type=int, default=1000)
    ap.add_argument("--remote", type=int, default=10000)
    ap.add_argument("--parts", default="cni,latency,rss", help="comma-separated subset (also: stages)")
    ap.add_argument(
        "--plugin",
        choices=("installed", "python", "entrypoint"),
        default="installed",
        help="the plugin as `felixpy install-cni` writes it (default: the static forwarder), the stdlib "
        "Python plugin's -IS launcher, or the venv console script",
    )
    ap.add_argument("--inner", nargs="+")
    args = ap.parse_args()
    if args.inner:
        if args.inner[0] == "latency":
            inner_latency(int(args.inner[1]))
        else:
            inner_load(int(args.inner[1]), int(args.inner[2]))
        return 0
    if os.geteuid() != 0:
        print("bench/cni.py needs root (network namespaces)", file=sys.stderr)
        return 2
    print(
        f"# {platform.platform()} cpus={os.cpu_count()} python={platform.python_version()}", file=sys.stderr
    )
    tmp = Path(tempfile.mkdtemp(prefix="felixpy-bench-cni-"))
    b = Bench(tmp)
    try:
        b.setup()
        parts = args.parts.split(",")
        if "cni" in parts:
            run_cni(b, args.cycles, args.plugin)
        if "stages" in parts:
            run_stages(b, min(args.cycles, 50))
        if "latency" in parts:
            run_route_latency(b, args.samples)
        if "rss" in parts:
            run_rss(b, args.local, args.remote)
    finally:
        b.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
