"""The real agent in a node namespace against a real etcd, pods added through the real felixpy-cni.

The plugin is run as a user runs it: what ``felixpy install-cni`` writes (the static forwarder);
one test also runs the venv's console script (the stdlib Python plugin, the protocol's reference).

Topology (all created here, all removed at teardown even on failure):

    fpt-<pid>-<n>-node   etcd on 127.0.0.1, `felixpy node`, eth0 10.77.0.1/24 (a veth)
    fpt-<pid>-<n>-pod*   one namespace per pod, eth0 moved in by the agent

etcd runs inside the node namespace because a process there cannot reach the root namespace's
loopback; the test reads the datastore with `etcdctl` run in the same namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from felixpy.kube.install_cni import elf_interpreter, install
from tests.fixtures import waiting
from tests.fixtures.netns import PREFIX, Netns, delete_netns

pytestmark = pytest.mark.kernel
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
FELIXPY = str(VENV_BIN / "felixpy")
CNI = str(VENV_BIN / "felixpy-cni")
ETCD_PORT = 23790
_counter = itertools.count()


def _ns(tag: str) -> Netns:
    name = f"{PREFIX}{os.getpid()}-a{next(_counter)}-{tag}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    ns = Netns(name)
    ns.run("ip", "link", "set", "lo", "up")
    return ns


@dataclass
class NodeEnv:
    node: Netns
    run_dir: Path
    plugin: str = CNI
    nodename: str = "node1"
    agent: subprocess.Popen[bytes] | None = None
    etcd: subprocess.Popen[bytes] | None = None
    pods: list[Netns] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return f"http://127.0.0.1:{ETCD_PORT}"

    def start_etcd(self) -> None:
        data = self.run_dir / "etcd"
        url = self.endpoints
        argv = [
            "ip",
            "netns",
            "exec",
            self.node.name,
            "etcd",
            "--name",
            "n",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            "http://127.0.0.1:23800",
            "--log-level",
            "warn",
            "--logger",
            "zap",
        ]
        with open(self.run_dir / "etcd.log", "ab") as log:
            self.etcd = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: self.etcdctl("endpoint", "health", check=False).returncode == 0, 20, "etcd healthy")

    def etcdctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.node.name, "etcdctl", "--endpoints", self.endpoints, *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=check,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def keys(self, prefix: str) -> list[str]:
        out = self.etcdctl("get", "--prefix", "--keys-only", prefix).stdout
        return [k for k in out.split() if k]

    def start_agent(self, **extra: str) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "NODENAME": self.nodename,
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": self.endpoints,
            "IP": "10.77.0.1/24",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_IPV4POOL_CIDR": "10.244.0.0/16",
            "FELIXPY_RUN_DIR": str(self.run_dir),
            "FELIXPY_STATE_DIR": str(self.run_dir),  # the nodename file here, not in the host's /var/lib
            "FELIX_ROUTEREFRESHINTERVAL": "2",
            "FELIXPY_LOG_LEVEL": "info",
            # what these tests probe: health (the default, on loopback) and metrics (off by default)
            "FELIX_HEALTHHOST": "127.0.0.1",
            "FELIX_HEALTHPORT": "9099",
            "FELIX_PROMETHEUSMETRICSENABLED": "true",
            "FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "FELIX_PROMETHEUSMETRICSPORT": "9091",
            **extra,
        }
        log = open(self.run_dir / "agent.log", "ab")  # noqa: SIM115 (handed to the child)
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.node.name, FELIXPY, "node"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        _wait(self.ready, 30, "agent readiness")

    def ready(self) -> bool:
        assert self.agent is not None
        if self.agent.poll() is not None:
            raise AssertionError(f"agent exited rc={self.agent.returncode}:\n{self.agent_log()[-3000:]}")
        probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:9099/readiness', timeout=1)"
        argv = ["ip", "netns", "exec", self.node.name, "python3", "-c", probe]
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0

    def kill_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGKILL)
            self.agent.wait(10)

    def agent_log(self) -> str:
        return (self.run_dir / "agent.log").read_text(errors="replace")

    def wire_node(self) -> None:
        """The node's eth0 (10.77.0.1/24, a veth whose peer eth0p stays in the node) and, like a real
        host, a default route (proxy ARP answers for 169.254.1.1 only if it is routable)."""
        self.node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        self.node.run("ip", "addr", "add", "10.77.0.1/24", "dev", "eth0")
        self.node.run("ip", "link", "set", "eth0", "up")
        self.node.run("ip", "link", "set", "eth0p", "up")
        self.node.run("ip", "route", "add", "default", "via", "10.77.0.254", "dev", "eth0")

    def stop(self) -> None:
        """Kill the agent, delete the pods' and the node's namespaces (which kills etcd and anything
        else left inside) and print the agent log's tail; the run directory is the caller's."""
        self.kill_agent()
        for pod in self.pods:
            delete_netns(pod.name)
        delete_netns(self.node.name)
        log = self.run_dir / "agent.log"
        print(f"agent log tail:\n{self.agent_log()[-2000:] if log.exists() else ''}")

    def pod(self, tag: str) -> Netns:
        ns = _ns(tag)
        self.pods.append(ns)
        return ns

    def cni(
        self,
        command: str,
        pod: Netns,
        name: str,
        *,
        cid: str | None = None,
        version: str = "1.0.0",
        extra_args: str = "",
        ipam: dict | None = None,
    ) -> tuple[int, dict | None]:
        """Run the plugin in the node namespace; ``ipam``, if given, is the config's ipam section."""
        env = {
            "PATH": os.environ["PATH"],
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid or f"cid-{name}",
            "CNI_NETNS": pod.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/usr/lib/cni",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}{extra_args}",
        }
        conf = {
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "felixpy",
            "run_dir": str(self.run_dir),
            **({"ipam": ipam} if ipam is not None else {}),
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", self.node.name, self.plugin],
            input=json.dumps(conf),
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def _wait(pred, timeout: float, what: str) -> None:
    waiting.wait_for(pred, what, timeout, every=0.2)


@contextlib.contextmanager
def running_node(tag: str) -> Iterator[NodeEnv]:
    """A node namespace with etcd, the real agent and the CNI plugin installed as a runtime would
    have it; everything removed afterwards (skips, saying why, without root or etcd)."""
    if os.geteuid() != 0:
        print("skipping: kernel tests need root (network namespaces)")
        pytest.skip("kernel tests need root")
    if not shutil.which("etcd"):
        print("skipping: etcd binary not installed")
        pytest.skip("etcd not installed")
    run_dir = Path(tempfile.mkdtemp(prefix=f"felixpy-{tag}-"))
    node = _ns(tag)
    template = '{"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [{"type": "felixpy"}]}'
    install(
        bin_dir=run_dir / "bin",
        conf_dir=run_dir / "net.d",
        conf_name="10-felixpy.conflist",
        template=template,
        node_name="node1",
        mtu=1500,
    )
    e = NodeEnv(node, run_dir, plugin=str(run_dir / "bin" / "felixpy"))
    try:
        e.wire_node()
        e.start_etcd()
        e.start_agent()
        yield e
    finally:
        e.stop()
        if not os.environ.get("FELIXPY_KEEP_RUN_DIR"):
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> Iterator[NodeEnv]:
    with running_node("node") as e:
        yield e


def _ip(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


def test_two_pods_ping_each_other(env: NodeEnv) -> None:
    a, b = env.pod("pod-a"), env.pod("pod-b")
    assert elf_interpreter(Path(env.plugin)) is None  # installed: the static forwarder
    rc, ra = env.cni("ADD", a, "a")
    assert rc == 0, ra
    installed, env.plugin = env.plugin, CNI  # the venv's console script speaks the same protocol
    try:
        rc, rb = env.cni("ADD", b, "b")
    finally:
        env.plugin = installed
    assert rc == 0, rb
    assert ra["cniVersion"] == "1.0.0" and ra["ips"][0]["address"].endswith("/32")
    ip_a, ip_b = _ip(ra), _ip(rb)
    assert ip_a != ip_b and ip_a.startswith("10.244.")
    a.run("ping", "-c", "2", "-W", "2", ip_b)
    b.run("ping", "-c", "2", "-W", "2", ip_a)


def test_host_side_matches_design(env: NodeEnv) -> None:
    from felixpy.dataplane.iface_names import veth_name_for_workload

    pod = env.pod("pod-c")
    rc, res = env.cni("ADD", pod, "c")
    assert rc == 0, res
    iface = veth_name_for_workload("default", "c")
    assert res["interfaces"][0]["name"] == iface
    link = json.loads(env.node.run("ip", "-j", "link", "show", iface))[0]
    assert link["address"] == "ee:ee:ee:ee:ee:ee"
    assert env.node.run("cat", f"/proc/sys/net/ipv4/conf/{iface}/proxy_arp").strip() == "1"
    routes = env.node.run("ip", "route", "show", f"{_ip(res)}/32")
    assert f"dev {iface}" in routes and "proto 80" in routes and "scope link" in routes
    pod_routes = pod.run("ip", "route")
    assert "default via 169.254.1.1 dev eth0" in pod_routes
    blackholes = env.node.run("ip", "route", "show", "type", "blackhole")
    assert "10.244." in blackholes and "proto 80" in blackholes
    rules = env.node.run("iptables-save", "-t", "filter")
    assert f"cali-tw-{iface}" in rules and f"cali-fw-{iface}" in rules and "-j cali-FORWARD" in rules
    weps = env.keys("/calico/resources/v3/projectcalico.org/workloadendpoints/default/")
    assert any(k.endswith("/node1-k8s-c-eth0") for k in weps)


def test_add_twice_same_result_and_legacy_versions(env: NodeEnv) -> None:
    pod = env.pod("pod-d")
    rc1, r1 = env.cni("ADD", pod, "d")
    rc2, r2 = env.cni("ADD", pod, "d")
    assert rc1 == rc2 == 0
    assert r1 == r2
    rc3, r3 = env.cni("ADD", pod, "d", version="0.4.0")
    assert rc3 == 0 and r3["cniVersion"] == "0.4.0" and r3["ips"][0]["version"] == "4"
    assert _ip(r3) == _ip(r1)
    assert len(env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-d")) == 1


def test_labels_from_cni_args_reach_the_endpoint(env: NodeEnv) -> None:
    pod = env.pod("pod-l")
    rc, res = env.cni("ADD", pod, "l", extra_args=";K8S_POD_LABELS=app=web,tier=front")
    assert rc == 0, res
    key = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-k8s-l-eth0"
    doc = json.loads(env.etcdctl("get", "--print-value-only", key).stdout)
    assert doc["metadata"]["labels"]["app"] == "web" and doc["metadata"]["labels"]["tier"] == "front"
    assert doc["spec"]["profiles"] == ["kns.default", "ksa.default.default"]
    assert doc["spec"]["containerID"] == "cid-l"
    assert doc["metadata"]["labels"]["projectcalico.org/serviceaccount"] == "default"


def test_allocation_records_its_pod_with_uid(env: NodeEnv) -> None:
    """The GC's keys: Calico's attributes, and the pod's UID (a re-created pod of the same name differs)."""
    pod = env.pod("pod-u")
    rc, res = env.cni("ADD", pod, "u", extra_args=";K8S_POD_UID=0f1e2d3c-uid")
    assert rc == 0, res
    blocks = env.etcdctl("get", "--print-value-only", "--prefix", "/calico/ipam/v2/assignment/").stdout
    owners = [
        a["secondary"]
        for line in blocks.splitlines()
        if line.strip()
        for a in json.loads(line)["attributes"]
        if a.get("handle_id") == "k8s-pod-network.cid-u"
    ]
    assert len(owners) == 1, owners
    (owner,) = owners
    assert (owner["namespace"], owner["pod"], owner["node"], owner["uid"]) == (
        "default",
        "u",
        "node1",
        "0f1e2d3c-uid",
    )
    assert float(owner["timestamp"]) > 0


def test_del_removes_iface_route_allocation_endpoint(env: NodeEnv) -> None:
    from felixpy.dataplane.iface_names import veth_name_for_workload

    pod = env.pod("pod-e")
    rc, res = env.cni("ADD", pod, "e")
    assert rc == 0, res
    ip, iface = _ip(res), veth_name_for_workload("default", "e")
    rc, out = env.cni("DEL", pod, "e")
    assert rc == 0 and out is None
    assert env.node.run("ip", "route", "show", f"{ip}/32") == ""  # before DEL answers
    # the host veth goes right after the answer (the agent's link reaper, by interface index)
    _wait(lambda: env.node.run("ip", "link", "show", iface, check=False) == "", 10, f"{iface} deleted")
    _wait(lambda: f"event='veth.deleted' iface='{iface}' index=" in env.agent_log(), 10, "the deletion log")
    assert env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-e") == []
    assert not any(k.endswith("node1-k8s-e-eth0") for k in env.keys("/calico/resources/v3/"))
    rc, out = env.cni("DEL", pod, "e")  # repeated DEL and DEL of an unknown container succeed
    assert rc == 0
    rc, out = env.cni("DEL", pod, "never-added")
    assert rc == 0


def test_add_failing_in_ipam_leaves_no_veth_and_no_handle(env: NodeEnv) -> None:
    """The veth pair is made while IPAM assigns: when IPAM refuses (no such pool), the ADD fails with
    the IPAM code and the pair it made is gone again, nothing is held, and a later ADD works."""
    from felixpy.dataplane.iface_names import veth_name_for_workload

    pod = env.pod("pod-nopool")
    iface = veth_name_for_workload("default", "nopool")
    rc, out = env.cni("ADD", pod, "nopool", ipam={"ipv4_pools": ["no-such-pool"]})
    assert rc != 0 and out is not None and out["code"] == 101, out
    assert env.node.run("ip", "link", "show", iface, check=False) == ""
    assert "eth0" not in pod.run("ip", "link")
    assert env.keys("/calico/ipam/v2/handle/k8s-pod-network.cid-nopool") == []
    assert not any(k.endswith("node1-k8s-nopool-eth0") for k in env.keys("/calico/resources/v3/"))
    rc, res = env.cni("ADD", pod, "nopool")
    assert rc == 0, res
    assert f"dev {iface}" in env.node.run("ip", "route", "show", f"{_ip(res)}/32")
    assert env.cni("DEL", pod, "nopool")[0] == 0


def test_check_detects_missing_route_and_resync_restores_it(env: NodeEnv) -> None:
    pod = env.pod("pod-f")
    rc, res = env.cni("ADD", pod, "f")
    assert rc == 0, res
    assert env.cni("CHECK", pod, "f")[0] == 0
    ip = _ip(res)
    for _ in range(5):  # bounded: the agent's periodic refresh (2 s here) may put the route back first
        env.node.run("ip", "route", "del", f"{ip}/32")
        rc, err = env.cni("CHECK", pod, "f")
        if rc != 0 or env.node.run("ip", "route", "show", f"{ip}/32") == "":
            break  # CHECK saw the route missing, or said all is well while it still is (a failure)
    assert rc == 1 and "route" in err["msg"], err
    _wait(lambda: env.node.run("ip", "route", "show", f"{ip}/32") != "", 10, "resync to restore the route")
    assert env.cni("CHECK", pod, "f")[0] == 0


def test_resync_restores_sysctls_changed_by_hand(env: NodeEnv) -> None:
    """proxy ARP off on a pod's host veth, or forwarding off on the node, cuts the pod off: the
    periodic refresh (2 s here) puts them back, and logs what it found."""
    pod = env.pod("pod-s")
    rc, res = env.cni("ADD", pod, "s")
    assert rc == 0, res
    iface = res["interfaces"][0]["name"]
    proxy_arp = f"/proc/sys/net/ipv4/conf/{iface}/proxy_arp"

    def read(path: str) -> str:
        return env.node.run("cat", path).strip()

    assert read(proxy_arp) == "1" and read("/proc/sys/net/ipv4/ip_forward") == "1"
    env.node.run("sh", "-c", f"echo 0 > {proxy_arp}; echo 0 > /proc/sys/net/ipv4/ip_forward")
    _wait(lambda: read(proxy_arp) == "1" and read("/proc/sys/net/ipv4/ip_forward") == "1", 10, "sysctls back")
    _wait(lambda: "sysctl.repaired" in env.agent_log(), 10, "the repair logged (after the writes)")


def test_plugin_fails_fast_when_agent_socket_is_missing(env: NodeEnv, tmp_path: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "felixpy", "run_dir": str(tmp_path)}
    envv = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "x",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_IFNAME": "eth0",
        "PATH": os.environ["PATH"],
    }
    start = time.monotonic()
    proc = subprocess.run([CNI], input=json.dumps(conf), env=envv, capture_output=True, text=True, timeout=10)
    assert time.monotonic() - start < 2
    err = json.loads(proc.stdout)
    assert proc.returncode == 1 and err["code"] == 11 and str(tmp_path / "cni.sock") in err["msg"]


def test_kill_9_and_restart_keeps_connectivity_without_duplicates(env: NodeEnv) -> None:
    a, b = env.pod("pod-g"), env.pod("pod-h")
    ra, rb = env.cni("ADD", a, "g")[1], env.cni("ADD", b, "h")[1]
    ip_b = _ip(rb)
    routes_before = env.node.run("ip", "route", "show", "proto", "80")
    links_before = env.node.run("ip", "-o", "link", "show")
    env.kill_agent()
    a.run("ping", "-c", "1", "-W", "2", ip_b)  # forwarding continues without the agent
    env.start_agent()
    a.run("ping", "-c", "1", "-W", "2", ip_b)
    assert env.node.run("ip", "route", "show", "proto", "80") == routes_before
    assert len(env.node.run("ip", "-o", "link", "show").splitlines()) == len(links_before.splitlines())
    assert env.cni("ADD", a, "g")[1] == ra


def test_loop_of_pods_added_and_deleted_leaves_nothing_behind(env: NodeEnv) -> None:
    from concurrent.futures import ThreadPoolExecutor

    count = int(os.environ.get("FELIXPY_TEST_PODS", "200"))
    links_before = set(env.node.run("ip", "-o", "link", "show").split("\n"))

    def pod_routes() -> list[str]:  # blackholes may be added: the node can gain a block affinity
        return [
            r for r in env.node.run("ip", "route", "show", "proto", "80").splitlines() if "blackhole" not in r
        ]

    routes_before = pod_routes()
    handles_before = env.keys("/calico/ipam/v2/handle/")
    assert env.agent is not None
    proc_dir = Path(f"/proc/{env.agent.pid}")

    def endpoint_chains() -> set[str]:
        rules = env.node.run("iptables-save", "-t", "filter").splitlines()
        return {line.split()[0] for line in rules if line.startswith((":cali-tw-", ":cali-fw-"))}

    chains_before = endpoint_chains()
    fds_before, threads_before = (
        len(list((proc_dir / "fd").iterdir())),
        len(list((proc_dir / "task").iterdir())),
    )

    def cycle(i: int) -> str:
        pod = _ns(f"loop{i}")
        try:
            rc, res = env.cni("ADD", pod, f"loop-{i}")
            assert rc == 0, res
            rc, out = env.cni("DEL", pod, f"loop-{i}")
            assert rc == 0, out
            return _ip(res)
        finally:
            delete_netns(pod.name)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ips = list(pool.map(cycle, range(count)))
    print(f"{count} pods added and deleted in {time.monotonic() - start:.1f}s")
    assert len(ips) == count
    _wait(lambda: pod_routes() == routes_before, 10, "routes to settle")
    _wait(lambda: set(env.node.run("ip", "-o", "link", "show").split("\n")) == links_before, 30, "links")
    assert env.keys("/calico/ipam/v2/handle/") == handles_before
    assert not any("loop--" in k for k in env.keys("/calico/resources/v3/"))

    # nothing accumulates in the agent either: netns sockets closed, setns helper threads ended.
    # The writer's deferred flush (<= 1 s after the last DEL) briefly holds an iptables-restore
    # child's pipes, so the counts are awaited, not sampled once; a leak of one fd per pod would
    # leave ~200 behind and never settle.
    def fds() -> list[str]:
        out = []
        for fd in (proc_dir / "fd").iterdir():
            with contextlib.suppress(OSError):  # closed between listing and reading
                out.append(f"{fd.name}->{os.readlink(fd)}")
        return out

    try:
        _wait(lambda: len(fds()) <= fds_before + 2, 15, "the agent's fds to settle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: before {fds_before}, now {sorted(fds())}") from None
    _wait(lambda: len(list((proc_dir / "task").iterdir())) <= threads_before + 2, 15, "helper threads to end")
    _wait(lambda: endpoint_chains() == chains_before, 15, "the deleted pods' chains to go")


def _ifindex(env: NodeEnv, iface: str) -> int | None:
    out = env.node.run("ip", "-j", "link", "show", iface, check=False)
    return int(json.loads(out)[0]["ifindex"]) if out.strip() else None


def test_immediate_re_add_after_del_keeps_its_new_interface(env: NodeEnv) -> None:
    """The DEL queues the old host veth by index: the re-ADD's veth of the same name survives it."""
    from felixpy.dataplane.iface_names import veth_name_for_workload

    peer = env.pod("pod-rp")
    assert env.cni("ADD", peer, "rpeer")[0] == 0
    iface = veth_name_for_workload("default", "re")
    old_ns = env.pod("pod-re1")
    rc, res = env.cni("ADD", old_ns, "re", cid="re-1")
    assert rc == 0, res
    old_index = _ifindex(env, iface)
    assert env.cni("DEL", old_ns, "re", cid="re-1")[0] == 0
    new_ns = env.pod("pod-re2")  # a runtime gives the re-created pod a new namespace
    rc, res = env.cni("ADD", new_ns, "re", cid="re-2")
    assert rc == 0, res
    new_index = _ifindex(env, iface)
    assert new_index is not None and new_index != old_index
    _wait(
        lambda: f"event='veth.deleted' iface='{iface}' index={old_index} " in env.agent_log(),
        10,
        f"the reaper's work on the old index {old_index}",
    )
    assert _ifindex(env, iface) == new_index
    peer.run("ping", "-c", "1", "-W", "2", _ip(res))
    assert env.cni("CHECK", new_ns, "re", cid="re-2")[0] == 0
    assert env.cni("DEL", new_ns, "re", cid="re-2")[0] == 0
    _wait(lambda: _ifindex(env, iface) is None, 10, f"{iface} deleted")


def test_fifty_same_pod_cycles_leave_nothing_behind(env: NodeEnv) -> None:
    """Sequential ADD/DEL of one pod name: every re-ADD races the reaper deleting the last veth."""
    from felixpy.dataplane.iface_names import veth_name_for_workload

    links_before = set(env.node.run("ip", "-o", "link", "show").split("\n"))
    handles_before = env.keys("/calico/ipam/v2/handle/")
    iface = veth_name_for_workload("default", "same")
    for i in range(50):
        pod = _ns(f"same{i}")
        try:
            rc, res = env.cni("ADD", pod, "same", cid=f"same-{i}")
            assert rc == 0, res
            assert _ifindex(env, iface) is not None
            assert env.cni("DEL", pod, "same", cid=f"same-{i}")[0] == 0
        finally:
            delete_netns(pod.name)
    _wait(lambda: set(env.node.run("ip", "-o", "link", "show").split("\n")) == links_before, 10, "links")
    assert env.keys("/calico/ipam/v2/handle/") == handles_before
    assert "veth.delete_abandoned" not in env.agent_log()


def test_network_policy_isolates_a_labelled_pod(env: NodeEnv) -> None:
    client, web = env.pod("pod-cl"), env.pod("pod-web")
    assert env.cni("ADD", client, "cl")[0] == 0
    rc, res = env.cni("ADD", web, "web", extra_args=";K8S_POD_LABELS=role=db")
    assert rc == 0, res
    client.run("ping", "-c", "1", "-W", "2", _ip(res))
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-db", "namespace": "default"},
        "spec": {"selector": "role == 'db'", "types": ["Ingress"]},
    }
    key = "/calico/resources/v3/projectcalico.org/networkpolicies/default/deny-db"
    env.etcdctl("put", key, json.dumps(policy))
    try:
        _wait(
            lambda: (
                client.run("ping", "-c", "1", "-W", "1", _ip(res), check=False) == ""
                or "0 received" in client.run("ping", "-c", "1", "-W", "1", _ip(res), check=False)
            ),
            15,
            "policy to block the db pod",
        )
    finally:
        env.etcdctl("del", key)
    _wait(
        lambda: "1 received" in client.run("ping", "-c", "1", "-W", "1", _ip(res), check=False),
        15,
        "policy removal to restore traffic",
    )


def _denies(env: NodeEnv, name: str, selector: str) -> str:
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": selector, "types": ["Ingress"]},
    }
    key = f"/calico/resources/v3/projectcalico.org/networkpolicies/default/{name}"
    env.etcdctl("put", key, json.dumps(policy))
    return key


def _seen_after(env: NodeEnv, label: str) -> str:
    """Wait until the agent has taken in what was written so far, when that (a policy selecting no
    endpoint yet) leaves nothing in the kernel: write a marker after it, an egress allow-all policy for
    the pod labelled ``role=<label>`` (its traffic stays as it was), and wait for the marker's chain.
    The agent applies datastore events in revision order. Returns the marker's key (delete it)."""
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"seen-{label}", "namespace": "default"},
        "spec": {"selector": f"role == '{label}'", "types": ["Egress"], "egress": [{"action": "Allow"}]},
    }
    key = f"/calico/resources/v3/projectcalico.org/networkpolicies/default/seen-{label}"
    env.etcdctl("put", key, json.dumps(policy))
    _wait(
        lambda: f"np/default/seen-{label}" in env.node.run("iptables-save", "-t", "filter"),
        20,
        "the agent to apply a policy written after the one under test",
    )
    return key


def _first_ping(src: Netns, ip: str) -> bool:
    return " 1 received" in src.run("ping", "-c", "1", "-W", "2", ip, check=False)


def test_pod_is_isolated_from_its_first_packet_even_right_after_a_del(env: NodeEnv) -> None:
    """ADD returns only once the pod's chains are in, also when a DEL of the same pod (same interface
    name) left its chain removal to a later batch."""
    from felixpy.dataplane.iface_names import veth_name_for_workload

    client, pod = env.pod("pod-i1"), env.pod("pod-i2")
    assert env.cni("ADD", client, "icl", extra_args=";K8S_POD_LABELS=role=icl")[0] == 0
    key = _denies(env, "deny-iso", "role == 'iso'")
    marker = ""
    try:
        marker = _seen_after(env, "icl")  # the policy reached the agent (it has no endpoint to apply to yet)
        rc, res = env.cni("ADD", pod, "iso", cid="iso-1")
        assert rc == 0, res
        assert _first_ping(client, _ip(res)), "not selected: reachable at once"
        assert env.cni("DEL", pod, "iso", cid="iso-1")[0] == 0
        rc, res = env.cni("ADD", pod, "iso", cid="iso-2", extra_args=";K8S_POD_LABELS=role=iso")
        assert rc == 0, res
        assert not _first_ping(client, _ip(res)), "the very first packet meets the policy"
    finally:
        env.etcdctl("del", key)
        if marker:
            env.etcdctl("del", marker)
    _wait(lambda: _first_ping(client, _ip(res)), 10, "the path itself works (policy was the drop)")
    iface = veth_name_for_workload("default", "iso")
    assert env.cni("DEL", pod, "iso", cid="iso-2")[0] == 0
    _wait(
        lambda: f"cali-tw-{iface}" not in env.node.run("iptables-save", "-t", "filter"),
        10,
        "the deferred removal of the deleted pod's chains",
    )


def test_a_deleted_pods_leftover_rules_never_reach_a_new_pod_and_go_within_the_bound(env: NodeEnv) -> None:
    """An ADD right after a DEL is written insert-only: the deleted pod's dispatch rule and chains may
    linger a moment. They match only the old interface name: a new pod meets its own chains from its
    first packet (here a policy denies it), and they are gone within the writer's bound even while
    back-to-back ADDs and DELs never leave the agent idle."""
    from felixpy.dataplane.deferral import DEFERRED_MAX_SECONDS
    from felixpy.dataplane.iface_names import veth_name_for_workload

    client = env.pod("pod-lc")
    assert env.cni("ADD", client, "lcl", extra_args=";K8S_POD_LABELS=role=lcl")[0] == 0
    key = _denies(env, "deny-left", "role == 'left'")
    marker = ""
    try:
        marker = _seen_after(env, "lcl")  # the policy reached the agent
        old = env.pod("pod-lo")
        rc, res_old = env.cni("ADD", old, "lold")
        assert rc == 0, res_old
        assert _first_ping(client, _ip(res_old)), "not selected: reachable"
        assert env.cni("DEL", old, "lold")[0] == 0
        new = env.pod("pod-ln")
        rc, res_new = env.cni("ADD", new, "lnew", extra_args=";K8S_POD_LABELS=role=left")
        assert rc == 0, res_new
        assert not _first_ping(client, _ip(res_new)), "the new pod's first packet meets its policy"
    finally:
        env.etcdctl("del", key)
        if marker:
            env.etcdctl("del", marker)
    # The new pod's DEL, then ADD/DEL cycles back to back: its chains must go within the bound. The
    # first busy ADD must find the deleted pod's chain still there (written insert-only); on a loaded
    # machine that ADD can arrive after the writer's idle flush already removed it, so the round is
    # repeated with a fresh pod (bounded: 3 rounds) until the insert-only path was exercised once.
    exercised: list[list[bool]] = []
    for rnd in range(3):
        name = "lnew" if rnd == 0 else f"lnew{rnd}"
        if rnd:
            pod = env.pod(f"pod-ln{rnd}")
            assert env.cni("ADD", pod, name, extra_args=";K8S_POD_LABELS=role=left")[0] == 0
        new_chain = f"cali-tw-{veth_name_for_workload('default', name)}"
        assert env.cni("DEL", new if rnd == 0 else pod, name)[0] == 0
        start, seen, gone_after, i = time.monotonic(), [], None, 0
        while gone_after is None and time.monotonic() - start < 4 * DEFERRED_MAX_SECONDS:
            busy = _ns(f"lb{rnd}-{i}")
            try:
                assert env.cni("ADD", busy, f"lb{rnd}-{i}", cid=f"lb-{rnd}-{i}")[0] == 0
                seen.append(new_chain in env.node.run("iptables-save", "-t", "filter"))
                assert env.cni("DEL", busy, f"lb{rnd}-{i}", cid=f"lb-{rnd}-{i}")[0] == 0
            finally:
                delete_netns(busy.name)
            i += 1
            if new_chain not in env.node.run("iptables-save", "-t", "filter"):
                gone_after = time.monotonic() - start
        print(f"round {rnd}: deleted chain present after each busy ADD: {seen}; gone after {gone_after} s")
        assert gone_after is not None, f"{new_chain} still in iptables {4 * DEFERRED_MAX_SECONDS} s later"
        exercised.append(seen)
        if seen and seen[0]:
            break
    # Whether the first busy ADD found the chain still there (the insert-only path) depends on the
    # ADD's timing against the writer's 0.25 s idle flush; it is printed, not asserted: what a user
    # relies on (own policy from the first packet, leftovers gone within the bound) is asserted above.
    print(f"insert-only path exercised: {any(seen and seen[0] for seen in exercised)} ({exercised})")
