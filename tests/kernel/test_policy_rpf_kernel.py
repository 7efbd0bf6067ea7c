"""Workload anti-spoofing on the real kernel: the real agent, etcd and felixpy-cni (test_agent_cni's harness).

Pods A, B and C on one node (dual stack when the kernel has IPv6: the default IPv6 pool from
CALICO_IPV6POOL_CIDR, as in test_agent_ipv6). A adds addresses that are not its own to its eth0
(C's address, and one outside every pool) and sends UDP from them to a receiver in B:

1. from A's own address the datagrams arrive (positive control, each family);
2. from C's address or from outside the pools nothing arrives, and the packets are counted by raw
   ``cali-PREROUTING``'s ``-m rpfilter --validmark --invert -j DROP`` (the node namespace's kernel
   ``rp_filter`` is 0, so the raw rule is what drops them);
3. ``allowSpoofedSourcePrefixes`` on A's WorkloadEndpoint changes nothing while FelixConfiguration
   ``workloadSourceSpoofing`` is ``Disabled`` (the agent logs the endpoint);
4. with ``workloadSourceSpoofing: Any`` (``felixctl apply``: the agent restarts in place) A's
   allowed prefixes arrive, C's address still does not.

Every namespace, process and datastore change is removed at teardown, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.netns import Netns
from tests.kernel.test_agent_cni import VENV_BIN, NodeEnv, _ns, _wait

pytestmark = pytest.mark.kernel
V3 = "projectcalico.org/v3"
V6_POOL = "fd00:10:244::/48"
IPAM = {"type": "felixpy-ipam", "assign_ipv4": "true", "assign_ipv6": "true"}
IPAM_V4 = {"type": "felixpy-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}
WEPS = "/calico/resources/v3/projectcalico.org/workloadendpoints/default/"
CONFIG_KEY = "/calico/resources/v3/projectcalico.org/felixconfigurations/default"
OUTSIDE = {4: ("10.99.0.5", "10.99.0.0/24"), 6: ("fd00:99::5", "fd00:99::/64")}  # in no pool
PORT = 5353
RPF_DROP = re.compile(r"^\[(\d+):\d+\] -A cali-PREROUTING .*-m rpfilter --validmark --invert -j DROP")

RECEIVER = r"""
import socket, sys, time
family, port, token, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("::" if family == "6" else "0.0.0.0", port))
print("ready", flush=True)
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    if data == token:
        print(addr[0], flush=True)
        break
"""

SENDER = r"""
import socket, sys, time
src, dst, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
for _ in range(3):
    s.sendto(token, (dst, port))
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def env() -> Iterator[NodeEnv]:
    if os.geteuid() != 0:
        print("skipping: kernel tests need root (network namespaces)")
        pytest.skip("kernel tests need root")
    if not shutil.which("etcd"):
        print("skipping: etcd binary not installed")
        pytest.skip("etcd not installed")
    run_dir = Path(tempfile.mkdtemp(prefix="felixpy-rpf-"))
    e = NodeEnv(_ns("noderpf"), run_dir)
    try:
        e.wire_node()
        e.start_etcd()
        e.start_agent(**({"CALICO_IPV6POOL_CIDR": V6_POOL} if has_ipv6() else {}))
        yield e
    finally:
        e.stop()  # kills the agent and everything left in the pods' and node's namespaces
        if not os.environ.get("FELIXPY_KEEP_RUN_DIR"):
            shutil.rmtree(run_dir, ignore_errors=True)


def has_ipv6() -> bool:
    return os.path.exists("/proc/sys/net/ipv6")


def add_pod(env: NodeEnv, name: str) -> tuple[Netns, dict[int, str], str]:
    """A pod through the real plugin: (namespace, {IP version: address}, host interface)."""
    pod = env.pod(name)
    rc, res = env.cni("ADD", pod, name, cid=f"cid-{name}", ipam=IPAM if has_ipv6() else IPAM_V4)
    assert rc == 0 and res is not None, res
    addrs = {(6 if ":" in e["address"] else 4): e["address"].split("/")[0] for e in res["ips"]}
    return pod, addrs, res["interfaces"][0]["name"]


def udp_arrives(sender: Netns, src: str, receiver: Netns, dst: str, wait: float = 1.5) -> str | None:
    """Three datagrams from ``src`` (an address on the sender's eth0) to ``dst``:port; the source
    the receiver saw, or None when nothing arrived within ``wait`` seconds."""
    token = uuid.uuid4().hex
    family = "6" if ":" in dst else "4"
    argv = ["ip", "netns", "exec", receiver.name, sys.executable, "-c", RECEIVER, family, str(PORT), token,
            str(wait)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:  # a bounded wait for the receiver to listen
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(10) and proc.stdout.readline().strip() == "ready", "receiver did not start"
        sender.run(sys.executable, "-c", SENDER, src, dst, str(PORT), token)
        out, err = proc.communicate(timeout=wait + 10)
        assert proc.returncode == 0, err
        return out.strip() or None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def rpf_drops(env: NodeEnv, version: int) -> int:
    """Packets counted by raw cali-PREROUTING's strict-RPF DROP rule."""
    save = "ip6tables-save" if version == 6 else "iptables-save"
    text = env.node.run(save, "-c", "-t", "raw")
    counts = [int(m.group(1)) for line in text.splitlines() if (m := RPF_DROP.match(line))]
    assert len(counts) == 1, text
    return counts[0]


def skip_rules(env: NodeEnv, version: int) -> list[tuple[str, str]]:
    """(interface, source prefix) of each rule in raw cali-rpf-skip, as the kernel has them."""
    save = "ip6tables-save" if version == 6 else "iptables-save"
    out = []
    for line in env.node.run(save, "-t", "raw").splitlines():
        if line.startswith("-A cali-rpf-skip "):
            iface, src = re.search(r" -i (\S+)", line), re.search(r" -s (\S+)", line)
            assert iface and src and line.endswith("-j ACCEPT"), line
            out.append((iface.group(1), src.group(1)))
    return out


def felixctl_apply(env: NodeEnv, doc: dict[str, object]) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", env.node.name, str(VENV_BIN / "felixctl"), "apply", "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": env.endpoints},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_spoofed_sources_are_dropped_unless_allowed(env: NodeEnv) -> None:
    a, a_ips, a_iface = add_pod(env, "rpfa")
    b, b_ips, _ = add_pod(env, "rpfb")
    _, c_ips, _ = add_pod(env, "rpfc")
    versions = sorted(a_ips)
    assert versions == ([4, 6] if has_ipv6() else [4])
    if not has_ipv6():
        print("IPv6 part skipped: this kernel has no IPv6")
    for key in ("all", a_iface):  # the kernel's own RPF check is off here: the raw rule does the work
        assert env.node.run("cat", f"/proc/sys/net/ipv4/conf/{key}/rp_filter").strip() == "0"
    for v in versions:  # A may send from C's address and from outside the pools
        for addr in (c_ips[v], OUTSIDE[v][0]):
            a.run("ip", f"-{v}", "addr", "add", f"{addr}/{32 if v == 4 else 128}", "dev", "eth0",
                  *(["nodad"] if v == 6 else []))  # fmt: skip
    key = WEPS + "node1-k8s-rpfa-eth0"
    original = env.etcdctl("get", "--print-value-only", key).stdout.strip()
    try:
        _scenario(env, a, b, a_ips, b_ips, c_ips, a_iface, key, original)
    finally:  # the datastore as found (the namespaces go with the module's fixture)
        env.etcdctl("del", CONFIG_KEY, check=False)
        if original:
            env.etcdctl("put", key, original, check=False)


def _scenario(env: NodeEnv, a: Netns, b: Netns, a_ips: dict[int, str], b_ips: dict[int, str],
              c_ips: dict[int, str], a_iface: str, key: str, original: str) -> None:  # fmt: skip
    versions = sorted(a_ips)
    # 1. positive control: A's own address arrives, and is not counted as spoofed
    for v in versions:
        before = rpf_drops(env, v)
        assert udp_arrives(a, a_ips[v], b, b_ips[v]) == a_ips[v], f"IPv{v} from A's own address"
        assert rpf_drops(env, v) == before

    # 2. another pod's address and an address outside the pools: dropped in raw
    for v in versions:
        for spoofed in (c_ips[v], OUTSIDE[v][0]):
            before = rpf_drops(env, v)
            assert udp_arrives(a, spoofed, b, b_ips[v]) is None, f"IPv{v} spoofed from {spoofed} arrived"
            assert rpf_drops(env, v) >= before + 3, f"IPv{v} from {spoofed} not dropped by the RPF rule"

    # 3. the endpoint asks for exceptions; workloadSourceSpoofing is still Disabled: ignored
    doc = json.loads(original)
    doc["spec"]["allowSpoofedSourcePrefixes"] = [OUTSIDE[v][1] for v in versions]
    env.etcdctl("put", key, json.dumps(doc))
    _wait(lambda: "policy.source_spoofing_ignored" in env.agent_log(), 15, "the ignored prefixes logged")
    assert skip_rules(env, 4) == [] and (len(versions) == 1 or skip_rules(env, 6) == [])
    for v in versions:
        assert udp_arrives(a, OUTSIDE[v][0], b, b_ips[v]) is None, f"IPv{v}: honoured while Disabled"

    # 4. workloadSourceSpoofing: Any (the agent restarts in place): A's prefixes arrive, C's address not
    config = {"apiVersion": V3, "kind": "FelixConfiguration", "metadata": {"name": "default"}}
    felixctl_apply(env, {**config, "spec": {"workloadSourceSpoofing": "Any"}})
    for v in versions:
        _wait(lambda v=v: skip_rules(env, v) == [(a_iface, OUTSIDE[v][1])], 60, f"IPv{v} cali-rpf-skip rule")
    for v in versions:
        assert udp_arrives(a, OUTSIDE[v][0], b, b_ips[v]) == OUTSIDE[v][0], f"IPv{v} allowed prefix"
        before = rpf_drops(env, v)
        assert udp_arrives(a, c_ips[v], b, b_ips[v]) is None, f"IPv{v} C's address outside the exception"
        assert rpf_drops(env, v) >= before + 3
        assert udp_arrives(a, a_ips[v], b, b_ips[v]) == a_ips[v]
