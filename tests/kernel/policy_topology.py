"""One node and nine pods on the real kernel, for the policy conformance tests and bench.

Shape: a node namespace (forwarding on, an uplink veth with a default route so proxy ARP
answers for 169.254.1.1) and one namespace per pod ``x/a`` .. ``z/c``, each wired with the real
``WorkloadLinks`` (``cali*`` veth) and ``RouteTable`` (``/32`` routes, protocol 80). Every pod
runs a small responder (stdlib Python, started with ``ip netns exec``) that echoes TCP and UDP
on ports 80 and 81, so a UDP probe can tell "got through" from "dropped". The responder exits
by itself after ``lifetime`` seconds and never holds more than a bounded number of sockets.

``PolicyDataplane`` drives ``policy.compiler.PolicyCompiler`` into the node namespace with the
real writers, in Felix's order: ipset updates, iptables, ipset deletions. ``probe_matrix``
sends every probe of a case from every pod to every other pod at once (a bounded thread
pool; each probe's socket is opened in the source pod's namespace with ``setns`` on the
worker thread, which returns to its own namespace before doing any I/O).

Namespaces are named like the ``netns`` fixture's (``fpt-<pid>-...``), so a crashed run's
leftovers are swept at the next session start; ``NamespaceSet.close`` deletes them.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from felixpy.dataplane.iface_names import veth_name_for_workload
from felixpy.dataplane.ipset_writer import IpsetWriter
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_backend import BackendKind, make_backend
from felixpy.dataplane.iptables_render import Hook as WriterHook
from felixpy.dataplane.kernel_objects import RouteTarget
from felixpy.dataplane.links import VethSpec, WorkloadLinks
from felixpy.dataplane.netlink_ops import IPRouteNetlink
from felixpy.dataplane.policy_driver import write_changes, writer_hooks
from felixpy.dataplane.routes import RouteTable
from felixpy.dataplane.sysctl import enable_ip_forwarding
from policy.compiler import Changes, PolicyCompiler
from policy.convert import policy_from_doc
from policy.entities import Endpoint
from tests.fixtures.conformance_cases import DEFAULT_IPS, POD_KEYS, Doc, Probe, namespace_labels, topology
from tests.fixtures.netns import PREFIX, Netns, delete_netns

NODE = "node1"
CLONE_NEWNET = 0x40000000
Matrix = dict[Probe, dict[tuple[str, str], bool]]
_counter = itertools.count()

RESPONDER = r"""
import selectors, socket, sys, time
lifetime, ports, limit = float(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")], 256
sel = selectors.DefaultSelector()
for port in ports:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", port)); t.listen(128); t.setblocking(False)
    sel.register(t, selectors.EVENT_READ, "accept")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port)); u.setblocking(False)
    sel.register(u, selectors.EVENT_READ, "udp")
print("ready", flush=True)
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1.0):
        s, kind = key.fileobj, key.data
        try:
            if kind == "accept":
                c, _ = s.accept()
                if len(sel.get_map()) > limit:
                    c.close(); continue
                c.setblocking(False); sel.register(c, selectors.EVENT_READ, "tcp")
            elif kind == "udp":
                data, peer = s.recvfrom(2048); s.sendto(data, peer)
            else:
                data = s.recv(2048)
                if data:
                    s.send(data)
                else:
                    sel.unregister(s); s.close()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            if kind == "tcp":
                sel.unregister(s); s.close()
"""


# ----------------------------------------------------------------------------- namespaces


class NamespaceSet:
    """Namespaces for a whole module (the ``netns`` fixture is per test); ``close`` deletes them."""

    def __init__(self) -> None:
        self.made: list[Netns] = []

    def make(self, tag: str) -> Netns:
        name = f"{PREFIX}{os.getpid()}-p{next(_counter)}-{tag}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        ns = Netns(name)
        self.made.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        for ns in reversed(self.made):
            delete_netns(ns.name)
        self.made.clear()


# ----------------------------------------------------------------------------- topology


@dataclass
class PolicyTopology:
    node: Netns
    pods: dict[str, Netns]  # "x/a" -> its namespace
    ips: dict[str, str]
    endpoints: list[Endpoint]  # the conformance endpoints, with the real interface names
    responders: list[subprocess.Popen[str]] = field(default_factory=list)

    def iface(self, pod: str) -> str:
        ns, name = pod.split("/")
        return veth_name_for_workload(ns, name)

    def stop(self) -> None:
        for proc in self.responders:
            proc.kill()
            proc.wait(timeout=10)
        self.responders.clear()


def uplink(node: Netns) -> None:
    for cmd in (
        ("link", "add", "up0", "type", "veth", "peer", "name", "up1"),  # no dummy module here
        ("link", "set", "up0", "up"),
        ("link", "set", "up1", "up"),
        ("addr", "add", "192.168.77.1/24", "dev", "up0"),
        ("route", "add", "default", "via", "192.168.77.2"),
    ):
        node.run("ip", *cmd)


def build_topology(spaces: NamespaceSet, *, lifetime: float = 900) -> PolicyTopology:
    """Node + nine pods, veths, /32 routes and responders; waits (bounded) until all are ready."""
    node = spaces.make("node")
    enable_ip_forwarding(netns=node.name, ipv6=False)
    uplink(node)
    links = WorkloadLinks(host_netns=node.name)
    ips = dict(DEFAULT_IPS)
    pods: dict[str, Netns] = {}
    routes: dict[str, RouteTarget] = {}
    for key in POD_KEYS:
        pod = pods[key] = spaces.make(key.replace("/", ""))
        ns, name = key.split("/")
        iface = veth_name_for_workload(ns, name)
        links.create(VethSpec(host_ifname=iface, netns=pod.path, addresses=(ips[key],)))
        routes[f"{ips[key]}/32"] = RouteTarget.device(iface)
    with IPRouteNetlink(node.name) as nl:
        table = RouteTable(nl, proto=80)
        table.set_desired(routes)
        table.apply()
    eps = [replace(ep, iface=veth_name_for_workload(*ep.key.split("/")), node=NODE) for ep in topology(ips)]
    topo = PolicyTopology(node, pods, ips, eps)
    for key in POD_KEYS:
        topo.responders.append(start_responder(pods[key], lifetime))
    for proc in topo.responders:
        wait_ready(proc)
    return topo


def start_responder(pod: Netns, lifetime: float, ports: Sequence[int] = (80, 81)) -> subprocess.Popen[str]:
    """A bounded TCP echo + UDP echo server on ``ports`` in ``pod`` (prints "ready" once listening)."""
    argv = ["ip", "netns", "exec", pod.name, sys.executable, "-c", RESPONDER, str(lifetime),
            ",".join(map(str, ports))]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], timeout: float = 15) -> None:
    assert proc.stdout is not None

    with selectors.DefaultSelector() as sel:  # bounded wait for the "ready" line
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout) or proc.stdout.readline().strip() != "ready":
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"responder did not start: {err}")


# ----------------------------------------------------------------------------- dataplane


def compiler_hooks(compiler: PolicyCompiler) -> list[WriterHook]:
    """The compiler's hooks in the iptables writer's shape, as the agent converts them."""
    return writer_hooks(compiler.hooks())


class PolicyDataplane:
    """A compiler for the node plus the real ipset and iptables writers in its namespace."""

    def __init__(
        self, topo_or_netns: PolicyTopology | str, *, backend: BackendKind = "legacy", node: str = NODE
    ) -> None:
        netns = topo_or_netns if isinstance(topo_or_netns, str) else topo_or_netns.node.name
        self.netns = netns
        self.compiler = PolicyCompiler(node)
        self.backend = make_backend(backend, netns=netns)
        self.iptables = IptablesWriter(self.backend, hooks=compiler_hooks(self.compiler))
        self.ipsets = IpsetWriter(netns=netns)
        self.policy_ids: dict[str, str] = {}  # "kind/ns/name" of the docs applied -> compiler id
        if not isinstance(topo_or_netns, str):
            for ns, labels in namespace_labels().items():
                self.compiler.update_namespace_labels(ns, labels)
            for ep in topo_or_netns.endpoints:
                self.compiler.update_endpoint(ep)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def withdraw(self) -> None:
        """Take this writer's chains and hooks out of iptables (ipsets stay): another backend's turn."""
        self.iptables.set_chains([])
        self.iptables.set_hooks([])
        self.iptables.apply()

    def restore(self) -> None:
        """Write everything the compiler wants again, re-reading the kernel first."""
        self.iptables.set_hooks(compiler_hooks(self.compiler))
        self.iptables.set_chains(self.compiler.chains().values())
        self.ipsets.set_ipsets(self.compiler.ipsets().values())
        self.ipsets.resync()
        self.iptables.resync()

    def set_policies(self, docs: Iterable[Doc]) -> Changes:
        """Make ``docs`` the whole policy set (remove the others), then apply."""
        wanted = {p.id: p for p in (policy_from_doc(d) for d in docs)}
        for pid in set(self.policy_ids) - set(wanted):
            self.compiler.remove_policy(pid)
        for p in wanted.values():
            self.compiler.update_policy(p)
        self.policy_ids = {pid: pid for pid in wanted}
        return self.apply()

    def apply(self) -> Changes:
        """The compiler's changes since the last apply, written as the agent writes them."""
        changes = self.compiler.dirty()
        write_changes(changes, self.iptables, self.ipsets)
        return changes


def flush_conntrack(node: Netns) -> None:
    """Forget flows of the previous case, so every probe is the first packet of a new flow."""
    node.run("conntrack", "-F", check=False)


# ----------------------------------------------------------------------------- probes

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns_path: str, kind: int) -> socket.socket:
    """A socket living in ``netns_path``; this thread is back in its own namespace on return."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_INET, kind)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def probe(netns_path: str, dst: str, what: Probe, timeout: float) -> bool:
    """True if the echo came back: TCP connect + echo, or a UDP datagram echoed."""
    proto, port = what
    kind = socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM
    payload = f"probe-{next(_counter)}".encode()
    with socket_in(netns_path, kind) as s:
        s.settimeout(timeout)
        try:
            if proto == "TCP":
                s.connect((dst, port))
                s.sendall(payload)
            else:
                s.sendto(payload, (dst, port))
            return s.recv(64) == payload
        except OSError:
            return False


def probe_matrix(
    topo: PolicyTopology,
    probes: Sequence[Probe],
    *,
    timeout: float = 0.6,
    workers: int = 48,
    pairs: Iterable[tuple[str, str]] | None = None,
) -> Matrix:
    """Every ``probes`` from every pod to every other pod (self-pairs count as allowed)."""
    todo = list(pairs) if pairs is not None else [(s, d) for s in POD_KEYS for d in POD_KEYS]
    jobs = [(pr, s, d) for pr in probes for s, d in todo if s != d]
    out: Matrix = {pr: {(s, d): True for s, d in todo if s == d} for pr in probes}
    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(jobs)))) as pool:
        results = pool.map(lambda j: probe(topo.pods[j[1]].path, topo.ips[j[2]], j[0], timeout), jobs)
        for (pr, s, d), ok in zip(jobs, results, strict=True):
            out[pr][(s, d)] = ok
    return out


def pod_key_matrix(table: Mapping[tuple[str, str], bool], dst: str) -> dict[str, bool]:
    """One column of a matrix: which sources reach ``dst``."""
    return {s: ok for (s, d), ok in table.items() if d == dst}


def probe_with_retry(topo: PolicyTopology, probes: Sequence[Probe], expected: Matrix, **kw: Any) -> Matrix:
    """Probe; then once more, with a longer timeout, only the flows that came back denied but
    were expected allowed. A reply cannot be faked by a slow machine, a timeout can: so this
    can only fix false denials, never hide a wrong allow."""
    got = probe_matrix(topo, probes, **kw)
    for pr in probes:
        suspects = [k for k, ok in got[pr].items() if not ok and expected[pr][k]]
        if suspects:
            again = probe_matrix(topo, [pr], timeout=2.0, pairs=suspects)
            got[pr].update(again[pr])
    return got


def render_matrix(table: Mapping[tuple[str, str], bool]) -> str:
    """The Kubernetes netpol e2e layout: rows are sources, columns destinations, ``.``/``X``."""
    lines = ["-\t" + "\t".join(POD_KEYS)]
    for src in POD_KEYS:
        cells = ("." if table.get((src, dst), True) else "X" for dst in POD_KEYS)
        lines.append(src + "\t" + "\t".join(cells))
    return "\n".join(lines)


@contextmanager
def running_topology() -> Iterator[PolicyTopology]:
    """Build the topology (skipping when not root) and tear all of it down afterwards."""
    if os.geteuid() != 0:
        print("skipping: kernel policy tests need root (network namespaces)")
        pytest.skip("needs root")
    spaces = NamespaceSet()
    try:
        topo = build_topology(spaces)
        try:
            yield topo
        finally:
            topo.stop()
    finally:
        spaces.close()


# ----------------------------------------------------------------------------- fixtures
# Import these into a test module (``from tests.kernel.policy_topology import legacy_fixture,
# topo_fixture``): each module then has its own topology and legacy writer, as named below.


@pytest.fixture(scope="module", name="topo")
def topo_fixture() -> Iterator[PolicyTopology]:
    """The module's topology (skipped when not root), torn down after its last test."""
    with running_topology() as built:
        yield built


@pytest.fixture(scope="module", name="legacy")
def legacy_fixture(topo: PolicyTopology) -> Iterator[PolicyDataplane]:
    """The module's legacy iptables writer; the policies it applied are removed at the end."""
    dp = PolicyDataplane(topo, backend="legacy")
    yield dp
    dp.set_policies([])
    dp.close()
