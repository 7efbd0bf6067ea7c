"""Start-up and restart of the real agent, from outside it: exec -> ready -> fully programmed.

    .venv/bin/python -m bench.e2e_startup [--size small|x1|x5|x10] [--restarts 8] [--bgp]
                                          [--peer bird|frr] [--endpoints N] [--policies M]
                                          [--remote R]

Root only. A node namespace with etcd (bench/e2e_node.py) holds N local endpoints (WorkloadEndpoints
in etcd, each with a host-side ``cali*`` veth made beforehand) and M GlobalNetworkPolicies before the
agent starts, plus two pods with real namespaces and addresses (WorkloadEndpoints labelled so no
policy selects them). Then, each timed from the exec of ``felixpy node``:

  e2e_start_ready          exec -> ``/readiness`` answers 200 (polled every 20 ms)
  e2e_start_programmed     exec -> every endpoint's /32 route and its ``cali-tw-`` chain in the
                           kernel, in both families' filter tables (``ip route show``,
                           ``iptables-save -t filter`` and ``ip6tables-save -t filter``, run at
                           once; the IPv6 check is new in session 10: the agent programs both
                           families, and earlier figures waited for IPv4 only); polled; the
                           figure is the end of the poll that saw everything, and ``last_poll_s``
                           that poll's own duration: 0.3-1.7 s at 10,000 rules, most of the
                           "ready -> programmed" gap once everything is written)
  e2e_start_peer_eor       (learned routes only) exec -> the agent's log line ``bgp End-of-RIB
                           from 10.78.0.2``: the peer has sent all its routes and the agent
                           has read them (its log timestamp against the bench's clock at the
                           exec; same machine, same clock). It holds our start, ExaBGP's
                           start, the session set-up (the peers' connect retry is 1 s) and
                           the peer's sending (split by the next two lines)
  e2e_start_peer_session   exec -> the BGP session established, from the peer's own log (BIRD
                           "BGP session established", FRR "OpenConfirm to Established"; ms
                           resolution, the peer's local clock = ours): our start, ExaBGP's,
                           the connect retry
  e2e_start_peer_session_to_eor
                           that -> the peer's End-of-RIB received: the peer sending its table,
                           any wait of its own, and our reading (not split further)
  e2e_start_programmed_after_peer_eor
                           programmed - e2e_start_peer_eor: what is left after the peer's
                           End-of-RIB, ours alone (the last routes' kernel writes, the chains
                           if not yet in, and the poll's own resolution: up to
                           ``last_poll_s``). < 0 when programmed came first (a restart's
                           adopted routes are in the kernel already). Waited for up to 15 s
                           after programmed; ``missing`` counts starts whose End-of-RIB was
                           not logged by then (left out of both figures)
  e2e_start_cpu_agent      the agent's CPU seconds (user+sys, /proc) from exec to programmed
  e2e_start_rss_agent      the agent's RSS 5 s after it is programmed (MB)
  e2e_start_rss_speaker    RSS of the agent's children (ExaBGP with ``--bgp``; 0 without)
  e2e_restart_*            the same times for ``--restarts`` restarts (SIGTERM, wait for the
                           exit, exec again) on the kernel state the last agent left
  e2e_restart_ping_lost    packets lost by a ``ping -i 0.01`` between the two pods running across
                           each restart (reference: packets sent)
  e2e_restart_tcp_*        an established TCP connection from pod A to pod B across each restart:
                           one byte sent every 10 ms and echoed back; ``max_gap`` is the longest
                           time between two echoes (ms; 10 ms when nothing stalls, a lost segment
                           costs a retransmission timeout, >= 200 ms), ``retrans`` the segments
                           TCP retransmitted (both ends, TCP_INFO), ``broken`` the connections
                           that failed (reset, closed, timed out)
  e2e_restart_tcp_bgp_*    the same to an address behind a route learned from the BIRD peer
                           (10.64.0.1 on its loopback; only with learned routes)

Each start prints ``timeline: exec <UTC time> ready +s programmed +s`` on stderr, to line up with
the agent's log (kept as /tmp/<prefix>-agent.log, with -exabgp.log and, with --bgp, -bird.log:
BIRD's session states and events with millisecond times).

The first start is on an empty kernel (one sample: e2e_start_*); restarts give p50/p99 over
``--restarts``. Remote endpoints are endpoints of 50 other nodes (no veth);
left out: the Kubernetes API;
IPv6 routes and addresses (no endpoint has an IPv6 address; the IPv6 filter chains are
checked); CNI and pod creation; flows with real throughput (the TCP flows carry one byte each
way every 10 ms); the kernel's state at a cold boot (the first start only has empty tables,
not a fresh kernel).

Sizes (issue 15): x10 = 1,000 local endpoints, 500 policies, 10,000 remote endpoints and, with
``--bgp``, 10,000 learned routes: a BIRD 2 peer (its own namespace, iBGP, graceful restart)
announces that many /26 and "programmed" waits for all of them in the kernel (protocol 81).
``--peer frr`` puts an FRR bgpd (``/usr/lib/frr/bgpd``, no zebra: ``network`` statements) in
BIRD's place with the same addresses, AS, graceful restart and prefixes; the bench waits until
all of them are in its RIB before the exec. Every JSON line carries ``"peer"``.
x1 and x5 scale remote endpoints and routes the same way (10 per local endpoint).

The peer's own delay is in the figure. BIRD 2.0.12 sends its table in UPDATEs of 256 prefixes.
Its last UPDATE and its End-of-RIB go out only when its main loop next wakes up. That happens
when a packet from us arrives, or a BIRD timer fires, or after 3 s at most (its ``poll()``
timeout). strace and tcpdump show this, docs/performance.md "Session 10: first commit and
learned routes". Usually our End-of-RIB arrives after BIRD has sent the rest, and the wait is
a few ms. When ours arrives first, the last routes wait up to 3 s. That wait is BIRD's (seen
as "the last 16 routes with End-of-RIB, ~3 s after the session came up"). FRR 8.4 has a wait
of its own: its End-of-RIB came 1.4-2.6 s after its session was established at x10, against
0.3-1.25 s for BIRD (docs/performance.md, "Session 10: first commit and learned routes").
``e2e_*_programmed_after_peer_eor`` is the part that is ours whichever peer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.e2e_node import (
    Node,
    cpu_seconds,
    descendants,
    emit,
    outer,
    parse_ping,
    rss_mb,
    sh,
    size_of,
    summary,
    wait,
)
from felixpy.dataplane.sysctl import host_veth_sysctls

PODS = (("pinga", "10.241.1.1"), ("pingb", "10.241.1.2"))
BEHIND_BGP = "10.64.0.1"  # in the BIRD peer's first announced /26 (bench.e2e_node.bird_static)
EOR_WAIT = 15.0  # how long after "programmed" the peer's End-of-RIB is waited for in the agent's log
FLOW_SECONDS = 900  # a TCP flow's own bound (the bench ends it long before)

# An established TCP flow: the server echoes what it reads; the client sends one byte every 10 ms,
# waits for its echo, and on SIGINT prints what it saw as JSON (both print TCP_INFO's total_retrans:
# struct tcp_info is 8 u8 then u32s, total_retrans the 24th).
_FLOW_COMMON = """
import json, signal, socket, struct, sys, time
def retrans(sock):
    try:
        return struct.unpack("8B24I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[:104])[31]
    except OSError:
        return -1
"""
_FLOW_SERVER = _FLOW_COMMON + """
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(60)
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[3]))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
error = ""
while True:
    try:
        data = conn.recv(4096)
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        break
    if not data:
        break
    conn.sendall(data)
print(json.dumps({"retrans": retrans(conn), "error": error}), flush=True)
"""
_FLOW_CLIENT = _FLOW_COMMON + """
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
sent = echoed = 0
gap, error = 0.0, ""
last = start = time.monotonic()
while not stop and time.monotonic() - start < float(sys.argv[3]):
    try:
        sock.sendall(b"x")
        sent += 1
        if not sock.recv(1):
            error = "closed by the server"
            break
        echoed += 1
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
        break
    now = time.monotonic()
    gap, last = max(gap, now - last), now
    time.sleep(0.01)
out = {"sent": sent, "echoed": echoed, "max_gap": gap, "retrans": retrans(sock), "error": error}
sock.close()
print(json.dumps(out), flush=True)
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e_startup", description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="small", help="small (20/10), x1 (100/50), x5, x10 (1000/500)")
    ap.add_argument("--endpoints", type=int, help="override the size's endpoint count")
    ap.add_argument("--policies", type=int, help="override the size's policy count")
    ap.add_argument(
        "--remote", type=int, help="endpoints of other nodes (default 10 per local one; issue 15: 10,000)"
    )
    ap.add_argument(
        "--routes", type=int,
        help="/26 a BIRD 2 peer announces (needs --bgp; default 10 per local endpoint with --bgp, else 0)",
    )  # fmt: skip
    ap.add_argument("--restarts", type=int, default=8, help="restarts timed, each with a ping flow")
    ap.add_argument("--bgp", action="store_true", help="start the BGP speaker too (no peers)")
    ap.add_argument(
        "--peer", default="bird",
        help="the BGP peer announcing the learned routes: BIRD 2 (default) or FRR's bgpd",
    )  # fmt: skip
    ap.add_argument("--in-ns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.n, args.m = size_of(args.size, args.endpoints, args.policies)
    if args.restarts < 1:
        raise ValueError("--restarts must be >= 1")
    if args.remote is None:
        args.remote = 10 * args.n if args.endpoints is None else 0
    if args.routes is None:
        args.routes = 10 * args.n if args.bgp and args.endpoints is None else 0
    if args.remote < 0:
        raise ValueError("--remote must be >= 0")
    if args.routes < 0 or args.routes > 65536:
        raise ValueError("--routes must be in 0..65536")
    if args.routes and not args.bgp:
        raise ValueError("--routes needs --bgp (the agent's speaker learns them)")
    if args.peer not in ("bird", "frr"):
        raise ValueError(f"--peer must be bird or frr, not {args.peer!r}")
    if args.peer != "bird" and not args.routes:
        raise ValueError("--peer needs learned routes (--bgp, and --routes > 0 if given)")
    return args


def _run(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _out(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return ""
    return out


def programmed(n: int, ipt: str = "iptables", learned: int = 0) -> bool:
    """Every endpoint's /32 route and its to-workload chain in the kernel, in the IPv4 *and* the
    IPv6 filter table (the agent programs both families), and ``learned`` BGP routes (protocol
    81) of the peer's 10.64.0.0/12. The dumps run at once (one poll lasts as long as the slowest)."""
    ip6t = ipt.replace("iptables", "ip6tables", 1)
    procs = [
        _run("ip", "-4", "route", "show", "proto", "80"),
        _run(f"{ipt}-save", "-t", "filter"),
        _run(f"{ip6t}-save", "-t", "filter"),
    ]
    if learned:
        procs.append(_run("ip", "-4", "route", "show", "proto", "81", "root", "10.64.0.0/12"))
    routes, chains4, chains6, *bgp = [_out(p) for p in procs]
    if sum(f"dev calie{i:05d} " in routes for i in range(n)) < n:
        return False
    if learned and bgp[0].count("\n") < learned:
        return False
    wanted = [f":cali-tw-calie{i:05d} " for i in range(n)]
    return all(c in chains4 for c in wanted) and all(c in chains6 for c in wanted)


PEER_IP = "10.78.0.2"  # the BGP peer's address (bench.e2e_node.Node.start_bgp_peer)
_EOR_EVENT = f"event='bgp End-of-RIB from {PEER_IP} "


def peer_eor_time(log: str) -> float | None:
    """The UTC time (epoch seconds) of the first ``bgp End-of-RIB from <peer>`` line in ``log``
    (a slice of the agent's log: one start's lines), or None when there is none yet."""
    for line in log.splitlines():
        if _EOR_EVENT in line and line.startswith("timestamp='"):
            stamp = line[len("timestamp='") :].split("'", 1)[0]
            try:
                return datetime.datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                continue
    return None


def peer_session_times(log: str, kind: str) -> list[float]:
    """Seconds since midnight (the peer's local time) of each "session established" line in
    the BIRD (``HH:MM:SS.mmm <TRACE> felix: BGP session established``) or FRR (``YYYY/MM/DD
    HH:MM:SS.mmm BGP: ... went from OpenConfirm to Established``) log of the bench's peer."""
    marker = "BGP session established" if kind == "bird" else "went from OpenConfirm to Established"
    times = []
    for line in log.splitlines():
        if marker not in line:
            continue
        words = line.split()
        clock = words[0] if kind == "bird" else words[1] if len(words) > 1 else ""
        try:
            h, m, sec = clock.split(":")
            times.append(int(h) * 3600 + int(m) * 60 + float(sec))
        except ValueError:
            continue
    return times


def session_after(times: list[float], wall: float) -> float | None:
    """Seconds from ``wall`` (epoch, the exec) to the first session in ``times`` (local seconds
    since midnight) at or after it, within 10 minutes (across midnight too); None if none."""
    local = time.localtime(wall)
    of_day = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + wall % 1
    after = [(t - of_day) % 86400 for t in times]
    # a log time has ms resolution: a session in the same ms as the exec may read as a hair before
    near = [d if d < 86399.99 else d - 86400 for d in after if d < 600 or d >= 86399.99]
    return min(near) if near else None


def wire_pods(node: Node) -> list[str]:
    """Two pod namespaces plumbed as the CNI ADD plumbs them, without calling it: a veth to the
    node (host side sysctls; pod side /32 address, default route via 169.254.1.1 on the link),
    and their WorkloadEndpoints."""
    names = []
    for tag, ip in PODS:
        ns, iface = f"{node.prefix}-{tag}", f"cali{tag}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", iface, "up")
        # what the CNI ADD sets on the host side (felixpy.dataplane.sysctl.host_veth_sysctls)
        for key, value in host_veth_sysctls(iface).items():
            Path("/proc/sys", key).write_text(value)
        for cmd in (
            "link set lo up",
            "link set eth0 up",
            f"addr add {ip}/32 dev eth0",
            "route add 169.254.1.1 dev eth0 scope link",
            "route add default via 169.254.1.1 dev eth0",
        ):
            sh("ip", "-n", ns, *cmd.split())
        node.put_wep(tag, iface, ip, {"app": "ping"})
        names.append(ns)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    return names


def start_timed(
    node: Node, n: int, extra: dict[str, str], learned: int = 0
) -> tuple[float, float, float, float, float | None, float | None]:
    """Exec the agent; seconds from the exec to ready and to fully programmed, the agent's CPU
    seconds by then (what the load average does not change much), how long the poll that
    found everything took (the resolution of "programmed": it is the end of that poll) and,
    with learned routes, the seconds from the exec to the agent's log line saying the peer's
    End-of-RIB arrived (waited for up to EOR_WAIT s after "programmed"; None if not seen) and
    from the exec to the session's establishment in the peer's own log (None if not found)."""
    ipt = node.iptables()  # detected before the exec: not inside the timed wait
    agent_log = node.work / "agent.log"
    offset = agent_log.stat().st_size if agent_log.exists() else 0  # this start's lines follow
    wall = time.time()
    start = node.exec_agent(**extra)
    wait(node.ready, 300, "readiness", interval=0.02)
    t_ready = time.perf_counter() - start
    polls: list[float] = []

    def timed_poll() -> bool:
        t0 = time.perf_counter()
        try:
            return programmed(n, ipt, learned)
        finally:
            polls.append(time.perf_counter() - t0)

    wait(timed_poll, 300, "every route and chain", interval=0.05)
    t_prog = time.perf_counter() - start
    t_eor = None
    if learned:
        deadline = time.monotonic() + EOR_WAIT
        while t_eor is None and time.monotonic() < deadline:
            with open(agent_log, "rb") as f:
                f.seek(offset)
                seen = peer_eor_time(f.read().decode(errors="replace"))
            if seen is None:
                time.sleep(0.05)
            else:
                t_eor = seen - wall
    t_sess = None
    if learned:
        kind = "frr" if (node.work / "frr").is_dir() else "bird"
        peer_log = node.work / kind / f"{kind}.log"
        if peer_log.exists():
            t_sess = session_after(peer_session_times(peer_log.read_text(errors="replace"), kind), wall)
    # the timeline in wall-clock time, to line up with the agent's, ExaBGP's and BIRD's logs
    stamp = time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}"
    print(
        f"timeline: exec {stamp}Z ready +{t_ready:.3f} s programmed +{t_prog:.3f} s"
        f" ({len(polls)} poll(s), the last {polls[-1]:.3f} s)"
        + ("" if not learned else " peer End-of-RIB " + ("not seen" if t_eor is None else f"+{t_eor:.3f} s")),
        file=sys.stderr,
    )
    assert node.agent is not None
    return t_ready, t_prog, cpu_seconds(node.agent.pid), polls[-1], t_eor, t_sess


def _first_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The first line a flow process prints, waited for with a bound."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
    return proc.stdout.readline().strip()


class TcpFlow:
    """One established TCP connection from ``client_ns`` to ``ip`` (server in ``server_ns``)."""

    def __init__(self, client_ns: str, server_ns: str, ip: str, port: int) -> None:
        def run(ns: str, script: str, *argv: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", script, *argv],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip

        self.server = run(server_ns, _FLOW_SERVER, ip, str(port), str(FLOW_SECONDS))
        self.client: subprocess.Popen[str] | None = None
        try:
            if _first_line(self.server, 30, "the TCP flow's server") != "listening":
                raise RuntimeError("the TCP flow's server did not start")
            self.client = run(client_ns, _FLOW_CLIENT, ip, str(port), str(FLOW_SECONDS))
            if _first_line(self.client, 30, "the TCP flow's connection") != "connected":
                raise RuntimeError(f"the TCP flow to {ip}:{port} did not connect")
        except BaseException:
            self.kill()
            raise

    def finish(self) -> dict[str, float | str]:
        """Stop the client; what both ends saw: max_gap (ms), retrans (both ends), error."""
        assert self.client is not None
        self.client.send_signal(signal.SIGINT)
        client_out, _ = self.client.communicate(timeout=30)
        server_out, _ = self.server.communicate(timeout=30)
        seen = json.loads(client_out.strip().splitlines()[-1])
        server = json.loads(server_out.strip().splitlines()[-1])
        return {
            "max_gap": seen["max_gap"] * 1000,
            "retrans": seen["retrans"] + server["retrans"],
            "error": seen["error"] or server["error"],
        }

    def kill(self) -> None:
        for proc in (self.client, self.server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def route_to_peer_loopback(node: Node) -> None:
    """An address behind a learned route: on the BIRD peer's loopback, with its way back to the pods."""
    peer = f"{node.prefix}-peer"
    sh("ip", "-n", peer, "addr", "add", f"{BEHIND_BGP}/32", "dev", "lo")
    sh("ip", "-n", peer, "route", "add", "10.241.1.0/24", "via", "10.78.0.1")


def emit_flows(name: str, results: list[dict[str, float | str]], size: dict[str, object]) -> None:
    gaps = [float(r["max_gap"]) for r in results]
    retrans = [float(r["retrans"]) for r in results]
    broken = [r["error"] for r in results if r["error"]]
    emit(summary(f"{name}_max_gap", gaps, "ms", "goal: no stall (10 ms between echoes)", **size))
    emit(summary(f"{name}_retrans", retrans, "segments", "goal 0; both ends, TCP_INFO", **size))
    emit(
        summary(f"{name}_broken", [float(len(broken))], "connections", f"goal 0 of {len(results)}", **size)
        | {"errors": sorted({str(e) for e in broken})}
    )


def eor_split(prog: list[float], eor: list[float | None]) -> tuple[list[float], list[float], int]:
    """exec -> the peer's End-of-RIB received and End-of-RIB -> programmed, for the starts whose
    End-of-RIB was seen (programmed - End-of-RIB is < 0 when programmed came first: a restart's
    adopted routes), and how many starts saw none."""
    seen = [(p, e) for p, e in zip(prog, eor, strict=True) if e is not None]
    return [e for _, e in seen], [p - e for p, e in seen], len(prog) - len(seen)


def emit_eor(prefix: str, prog: list[float], eor: list[float | None], size: dict[str, object]) -> None:
    to_eor, after, missing = eor_split(prog, eor)
    peer = size["peer"]
    if not to_eor:
        emit({"name": f"{prefix}_peer_eor", "value": None, "unit": "s", "n": 0, "missing": missing,
              "reference": f"no End-of-RIB from the {peer} peer in the agent's log", **size})  # fmt: skip
        return
    emit(summary(f"{prefix}_peer_eor", to_eor, "s",
                 f"exec -> the agent logs the {peer} peer's End-of-RIB (all its routes received)",
                 missing=missing, **size))  # fmt: skip
    emit(summary(f"{prefix}_programmed_after_peer_eor", after, "s",
                 "the peer's End-of-RIB received -> programmed (ours alone; < 0: programmed first)",
                 missing=missing, **size))  # fmt: skip


def emit_session(
    prefix: str, sessions: list[float | None], eor: list[float | None], size: dict[str, object]
) -> None:
    """exec -> the session established (the peer's log) and from there to the peer's End-of-RIB
    received (the agent's log): the peer's sending, and any wait of its own, plus our reading."""
    seen = [(s, e) for s, e in zip(sessions, eor, strict=True) if s is not None and e is not None]
    if not seen:
        return
    missing = len(sessions) - len(seen)
    emit(summary(f"{prefix}_peer_session", [s for s, _ in seen], "s",
                 "exec -> BGP session established (the peer's log, ms resolution)",
                 missing=missing, **size))  # fmt: skip
    emit(summary(f"{prefix}_peer_session_to_eor", [e - s for s, e in seen], "s",
                 "session established (peer's log) -> the peer's End-of-RIB received (agent's log)",
                 missing=missing, **size))  # fmt: skip


def inner(args: argparse.Namespace) -> int:
    extra = {"CALICO_NETWORKING_BACKEND": "bird"} if args.bgp else {}
    size = {
        "endpoints": args.n,
        "policies": args.m,
        "remote": args.remote,
        "routes": args.routes,
        "size": args.size,
        "bgp": args.bgp,
        "peer": args.peer,
    }
    with tempfile.TemporaryDirectory(prefix="fpe-st-") as tmp:
        node = Node(Path(tmp))
        try:
            node.start_etcd()
            node.load(args.n, args.m)
            node.load_remote(args.remote)
            if args.routes:
                node.start_bgp_peer(args.routes, args.peer)
            pods = wire_pods(node)
            t_ready, t_prog, cpu, poll, eor, sess = start_timed(node, args.n, extra, args.routes)
            emit(summary("e2e_start_ready", [t_ready], "s", "goal <= 2 s (with 1,000 endpoints)", **size))
            ref = "goal <= 2 s; exec -> routes + chains (the end of the poll that saw them all)"
            emit(summary("e2e_start_programmed", [t_prog], "s", ref, last_poll_s=round(poll, 3), **size))
            emit(summary("e2e_start_cpu_agent", [cpu], "s", "agent CPU, exec -> programmed", **size))
            if args.routes:
                emit_eor("e2e_start", [t_prog], [eor], size)
                emit_session("e2e_start", [sess], [eor], size)
            time.sleep(5)
            assert node.agent is not None
            agent_rss = rss_mb(node.agent.pid)
            kids = descendants(node.agent.pid)
            emit(summary("e2e_start_rss_agent", [agent_rss], "MB", "goal <= 150 MB (x10 size)", **size))
            emit(summary("e2e_start_rss_speaker", [sum(map(rss_mb, kids)) if kids else 0.0], "MB",
                         f"{len(kids)} child process(es) of the agent", **size))  # fmt: skip
            src = pods[0]
            one_ping = ("ip", "netns", "exec", src, "ping", "-c", "1", "-W", "1", PODS[1][1])
            wait(lambda: " 1 received" in sh(*one_ping, check=False).stdout, 60, "pod A reaches pod B", 0.2)
            if args.routes:
                route_to_peer_loopback(node)
            ready, prog, cpus, lost, sent, last_polls = [], [], [], [], [], []
            eors: list[float | None] = []
            sessions: list[float | None] = []
            pod_flows: list[dict[str, float | str]] = []
            bgp_flows: list[dict[str, float | str]] = []
            for i in range(args.restarts):
                ping = subprocess.Popen(
                    ["ip", "netns", "exec", src, "ping", "-n", "-i", "0.01", PODS[1][1]],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                flows: list[tuple[list[dict[str, float | str]], TcpFlow]] = []
                try:
                    flows.append((pod_flows, TcpFlow(src, pods[1], PODS[1][1], 7000 + i)))
                    if args.routes:
                        flows.append((bgp_flows, TcpFlow(src, f"{node.prefix}-peer", BEHIND_BGP, 7100 + i)))
                    time.sleep(1)
                    node.stop_agent(signal.SIGTERM)
                    r, p, c, lp, e, ss = start_timed(node, args.n, extra, args.routes)
                    time.sleep(1)
                    for results, flow in flows:
                        results.append(flow.finish())
                finally:
                    for _, flow in flows:
                        flow.kill()
                ping.send_signal(signal.SIGINT)
                out, _ = ping.communicate(timeout=30)
                tx, rx = parse_ping(out)
                ready.append(r)
                prog.append(p)
                cpus.append(c)
                eors.append(e)
                sessions.append(ss)
                last_polls.append(round(lp, 3))
                lost.append(tx - rx)
                sent.append(tx)
            emit(summary("e2e_restart_ready", ready, "s", "SIGTERM'd agent replaced; exec -> 200", **size))
            emit(summary("e2e_restart_programmed", prog, "s", "exec -> routes + chains present",
                         last_poll_s=last_polls, **size))  # fmt: skip
            emit(summary("e2e_restart_cpu_agent", cpus, "s", "agent CPU exec -> programmed", **size))
            if args.routes:
                emit_eor("e2e_restart", prog, eors, size)
                emit_session("e2e_restart", sessions, eors, size)
            sent_note = f"goal 0; of {sum(sent)} sent at 100/s across {len(sent)} restarts"
            emit(summary("e2e_restart_ping_lost", lost, "packets", sent_note, **size))
            emit_flows("e2e_restart_tcp", pod_flows, size)
            if bgp_flows:
                emit_flows("e2e_restart_tcp_bgp", bgp_flows, size)
        finally:
            node.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"bench.e2e_startup: {exc}", file=sys.stderr)
        return 2
    if args.in_ns:
        return inner(args)
    return outer("e2e_startup", argv)


if __name__ == "__main__":
    sys.exit(main())
