"""The WireGuard driver on a real kernel: two node namespaces, keys, peers, table, rule, rotation, off.

Each "node" is a namespace with eth0 (a veth to the other) and a workload address of its block on
``lo``; the main table routes the other block plainly over eth0, as BGP would. The driver runs as
the agent runs it, with a recording publisher standing in for the Node status write.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from felixpy.calc.updates import WgNode, WireguardUpdate
from felixpy.calc.wireguard import WireguardConfig
from felixpy.dataplane import wireguard_driver as wgdrv
from felixpy.dataplane.wireguard_driver import WireguardDriver
from tests.fixtures.kernel_features import require_kernel

pytestmark = [pytest.mark.kernel, pytest.mark.vm]
NODES = {"node-a": ("192.168.91.1", "10.244.0.0/26", "10.244.0.1"),
         "node-b": ("192.168.91.2", "10.244.1.0/26", "10.244.1.1")}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nodes(netns, tmp_path: Path) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    require_kernel("wireguard")
    a, b = netns("wga"), netns("wgb")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    published: dict[str, str | None] = {}
    out = {}
    for ns, (name, (ip, _block, wl)) in zip((a, b), NODES.items(), strict=True):
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "addr", "add", f"{wl}/32", "dev", "lo")
        clock = Clock()

        def publish(key: str | None, name: str = name) -> None:
            published[name] = key

        driver = WireguardDriver(WireguardConfig(enabled=True, keepalive=0), nodename=name, host_mtu=1500,
                                 key_dir=str(tmp_path / name), publish=publish, netns=ns.name, clock=clock)
        out[name] = {"ns": ns, "driver": driver, "clock": clock}
    for name, other in (("node-a", "node-b"), ("node-b", "node-a")):
        out[name]["ns"].run("ip", "route", "add", NODES[other][1], "via", NODES[other][0], "dev", "eth0")
    yield {"nodes": out, "published": published}


def snapshot(published: dict[str, str | None]) -> WireguardUpdate:
    return WireguardUpdate(
        nodes=tuple(WgNode(n, ip, published.get(n)) for n, (ip, _, _) in NODES.items()),
        blocks=tuple((block, n) for n, (_, block, _) in NODES.items()),
    )


def converge(env: dict, rounds: int = 3) -> None:
    """Each driver sees the keys the others published (what the datastore round trip does)."""
    for _ in range(rounds):
        for node in env["nodes"].values():
            node["driver"].on_update(snapshot(env["published"]))
            assert node["driver"].apply()


def ping(env: dict, src: str = "node-a", dst: str = "node-b") -> bool:
    ns = env["nodes"][src]["ns"]
    proc = subprocess.run(["ip", "netns", "exec", ns.name, "ping", "-c1", "-W2", "-I", NODES[src][2],
                           NODES[dst][2]], capture_output=True, timeout=30)
    return proc.returncode == 0


def captured_on_b(env: dict, action) -> str:  # type: ignore[no-untyped-def]
    """tcpdump on node-b's eth0 while ``action`` runs: one line per packet, payload in ASCII."""
    return captured_in(env["nodes"]["node-b"]["ns"].name, action)


def captured_in(netns: str, action, expression: str = "ip") -> str:  # type: ignore[no-untyped-def]
    """tcpdump on ``netns``'s eth0 (``expression``) while ``action`` runs, payload in ASCII."""
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-i", "eth0", "-A", expression]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        action()
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    return out


def test_peers_table_rule_key_and_encrypted_traffic(nodes: dict) -> None:
    env = nodes
    converge(env)
    a = env["nodes"]["node-a"]
    assert env["published"]["node-a"] and env["published"]["node-b"]
    show = a["ns"].run("wg", "show", "wireguard.cali", "dump").splitlines()
    assert show[0].split("\t")[1:] == [env["published"]["node-a"], "51820", "0x200000"]
    peer = show[1].split("\t")
    assert peer[0] == env["published"]["node-b"]
    assert (peer[2], peer[3]) == ("192.168.91.2:51820", "10.244.1.0/26")
    assert "99:\tnot from all fwmark 0x200000/0x200000 lookup 1" in a["ns"].run("ip", "rule")
    table = a["ns"].run("ip", "route", "show", "table", "1")
    assert "10.244.1.0/26 dev wireguard.cali" in table and "throw 10.244.0.0/26" in table
    assert "mtu 1440" in a["ns"].run("ip", "link", "show", "wireguard.cali")
    conf = Path(a["driver"].conf_path)
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    # traffic: only WireGuard UDP on the wire, the marker never in clear
    marker = "FELIXPY-CLEARTEXT-MARKER"

    def send() -> None:
        for _ in range(3):
            subprocess.run(["ip", "netns", "exec", a["ns"].name, "ping", "-c1", "-W2", "-p",
                            marker.encode()[:16].hex(), "-I", "10.244.0.1", "10.244.1.1"],
                           capture_output=True, timeout=30)

    assert ping(env)
    dump = captured_on_b(env, send)
    packets = [line for line in dump.splitlines() if " IP " in line]
    assert packets, dump
    assert all("51820" in line and "UDP" in line for line in packets), packets
    assert "ICMP" not in dump and marker[:16] not in dump


def test_rotation_when_the_published_key_is_removed(nodes: dict) -> None:
    env = nodes
    converge(env)
    assert ping(env)
    old = env["published"]["node-b"]
    env["published"]["node-b"] = None  # an operator removes node-b's key from its Node
    converge(env)
    new = env["published"]["node-b"]
    assert new and new != old
    assert env["nodes"]["node-b"]["ns"].run("wg", "show", "wireguard.cali", "public-key").strip() == new
    assert new in env["nodes"]["node-a"]["ns"].run("wg", "show", "wireguard.cali", "peers")
    deadline = time.monotonic() + 10
    while not ping(env) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ping(env)


def test_turning_it_off_clears_key_and_rule_then_drains_the_device(nodes: dict) -> None:
    env = nodes
    converge(env)
    for node in env["nodes"].values():
        d: WireguardDriver = node["driver"]
        node["driver"] = WireguardDriver(WireguardConfig(enabled=False), nodename=d.nodename, host_mtu=1500,
                                         key_dir=os.path.dirname(os.path.dirname(d.conf_path)),
                                         publish=d.publish, netns=d.netns, clock=node["clock"])
    converge(env, rounds=1)
    assert env["published"] == {"node-a": None, "node-b": None}
    a = env["nodes"]["node-a"]
    assert "lookup 1" not in a["ns"].run("ip", "rule")
    assert a["ns"].run("ip", "route", "show", "table", "1").strip() == ""
    assert "wireguard.cali" in a["ns"].run("ip", "link")  # still draining
    assert ping(env)  # plain routing now
    for node in env["nodes"].values():
        node["clock"].now += wgdrv.DRAIN_SECONDS
        node["driver"].resync()
        assert node["driver"].apply()
    assert "wireguard.cali" not in a["ns"].run("ip", "link")
    assert not Path(a["driver"].conf_path).exists()
    assert ping(env)


def test_sync_table_to_nothing_removes_what_is_left_and_skips_an_empty_table(netns) -> None:  # type: ignore[no-untyped-def]
    """WireGuard off (every start): a table with leftovers is emptied, an empty one is left alone
    after one header-only dump; tables above 255 (RTA_TABLE) too; IPv4 and IPv6. No WireGuard module
    needed."""
    from felixpy.dataplane import wireguard_kernel as wg

    ns = netns("wgt")
    for table in (77, 1000):
        ns.run("ip", "route", "add", "throw", "10.9.0.0/24", "table", str(table), "proto", "80")
        ns.run("ip", "route", "add", "10.8.0.0/24", "dev", "lo", "table", str(table + 1))  # a neighbour
        assert wg.sync_table({}, device="wg-none", table=table, netns=ns.name) == (0, 1)
        assert ns.run("ip", "route", "show", "table", str(table)).strip() == ""
        assert wg.sync_table({}, device="wg-none", table=table, netns=ns.name) == (0, 0)
        assert "10.8.0.0/24" in ns.run("ip", "route", "show", "table", str(table + 1))
    # the same for an IPv6 table (wg-v6.cali off: table 2 of IPv6), IPv4's table of that id left alone
    ns.run("ip", "route", "add", "throw", "10.9.0.0/24", "table", "2")
    for table in (2, 1002):
        ns.run("ip", "-6", "route", "add", "throw", "fd00:9::/64", "table", str(table), "proto", "80")
        v6 = socket.AF_INET6
        assert wg.sync_table({}, device="wg-none", table=table, netns=ns.name, family=v6) == (0, 1)
        assert ns.run("ip", "-6", "route", "show", "table", str(table)).strip() == ""
        assert wg.sync_table({}, device="wg-none", table=table, netns=ns.name, family=v6) == (0, 0)
    assert "throw 10.9.0.0/24" in ns.run("ip", "route", "show", "table", "2")


NODES_V6 = {"node-a": ("fd00:91::1", "fd00:244::/122", "fd00:244::1"),
            "node-b": ("fd00:91::2", "fd00:244:0:1::/122", "fd00:244:0:1::1")}


def test_ipv6_device_wg_v6_cali_peers_table_rule_and_encrypted_traffic(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """wireguardEnabledV6 as Calico has it, at the driver level: wg-v6.cali on 51821 (MTU 1500 - 80),
    peers at [v6]:51821, IPv6 table 2 and rule 99, only UDP 51821 on the wire; off removes it all."""
    require_kernel("wireguard")
    a, b = netns("wg6a"), netns("wg6b")
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    published: dict[str, str | None] = {}
    drivers: dict[str, WireguardDriver] = {}
    spaces = {"node-a": a, "node-b": b}
    for name, (ip, _block, wl) in NODES_V6.items():
        ns = spaces[name]
        ns.run("ip", "-6", "addr", "add", f"{ip}/64", "dev", "eth0", "nodad")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "-6", "addr", "add", f"{wl}/128", "dev", "lo", "nodad")

        def publish(key: str | None, name: str = name) -> None:
            published[name] = key

        drivers[name] = WireguardDriver(WireguardConfig.v6(enabled=True), nodename=name, host_mtu=1500,
                                        key_dir=str(tmp_path / name), publish=publish, netns=ns.name)
    for name, other in (("node-a", "node-b"), ("node-b", "node-a")):
        spaces[name].run("ip", "-6", "route", "add", NODES_V6[other][1], "via", NODES_V6[other][0],
                         "dev", "eth0")

    def snap() -> WireguardUpdate:
        return WireguardUpdate(
            nodes=tuple(WgNode(n, None, None, ip6=ip, public_key_v6=published.get(n))
                        for n, (ip, _, _) in NODES_V6.items()),
            blocks=tuple((block, n) for n, (_, block, _) in NODES_V6.items()))

    for _ in range(3):
        for d in drivers.values():
            d.on_update(snap())
            assert d.apply()
    assert published["node-a"] and published["node-b"]
    show = a.run("wg", "show", "wg-v6.cali", "dump").splitlines()
    assert show[0].split("\t")[1:] == [published["node-a"], "51821", "0x200000"]
    peer = show[1].split("\t")
    assert (peer[0], peer[2], peer[3]) == (published["node-b"], "[fd00:91::2]:51821", "fd00:244:0:1::/122")
    assert "99:\tnot from all fwmark 0x200000/0x200000 lookup 2" in a.run("ip", "-6", "rule")
    assert "lookup 2" not in a.run("ip", "rule")  # the IPv4 rules are untouched
    table = a.run("ip", "-6", "route", "show", "table", "2")
    assert "fd00:244:0:1::/122 dev wg-v6.cali" in table and "throw fd00:244::/122" in table, table
    assert "mtu 1420" in a.run("ip", "link", "show", "wg-v6.cali")

    def ping6() -> bool:
        return subprocess.run(["ip", "netns", "exec", a.name, "ping", "-6", "-c1", "-W2", "-I",
                               NODES_V6["node-a"][2], NODES_V6["node-b"][2]],
                              capture_output=True, timeout=30).returncode == 0

    deadline = time.monotonic() + 20
    while not ping6() and time.monotonic() < deadline:
        time.sleep(0.5)
    marker = "FELIXPY-CLEARTXT"
    proc = subprocess.Popen(["ip", "netns", "exec", b.name, "tcpdump", "-l", "-n", "-i", "eth0", "-A", "ip6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        for _ in range(3):
            ok = subprocess.run(["ip", "netns", "exec", a.name, "ping", "-6", "-c1", "-W2", "-p",
                                 marker.encode().hex(), "-I", NODES_V6["node-a"][2], NODES_V6["node-b"][2]],
                                capture_output=True, timeout=30).returncode == 0
            assert ok
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    packets = [line for line in out.splitlines() if " IP6 " in line]
    wg = [line for line in packets if ".51821: UDP" in line]
    assert wg, out
    # neighbour discovery (ICMP6 between the link addresses) is the link's own; no workload address
    assert not any("fd00:244:" in line for line in packets), packets
    assert marker not in out
    # off: key cleared, IPv6 rule and table gone at once, the device after its drain
    clock = Clock()
    for name, d in list(drivers.items()):
        drivers[name] = WireguardDriver(WireguardConfig.v6(enabled=False), nodename=name, host_mtu=1500,
                                        key_dir=str(tmp_path / name), publish=d.publish, netns=d.netns,
                                        clock=clock)
        drivers[name].on_update(snap())
        assert drivers[name].apply()
    assert published == {"node-a": None, "node-b": None}
    assert "lookup 2" not in a.run("ip", "-6", "rule")
    assert a.run("ip", "-6", "route", "show", "table", "2").strip() == ""
    assert "wg-v6.cali" in a.run("ip", "link")  # still draining
    assert ping6()  # plain IPv6 routing now
    clock.now += wgdrv.DRAIN_SECONDS
    for d in drivers.values():
        d.resync()
        assert d.apply()
    assert "wg-v6.cali" not in a.run("ip", "link") and "wg-v6.cali" not in b.run("ip", "link")


DUAL = {"node-a": ("192.168.92.1", "fd00:92::1", "10.246.0.0/26", "10.246.0.1", "fd00:246::/122",
                   "fd00:246::1"),
        "node-b": ("192.168.92.2", "fd00:92::2", "10.246.1.0/26", "10.246.1.1", "fd00:246:0:1::/122",
                   "fd00:246:0:1::1")}


def test_dual_stack_agent_drives_wireguard_cali_and_wg_v6_cali_each_with_its_own_key(netns, tmp_path: Path
                                                                                     ) -> None:  # type: ignore[no-untyped-def]
    """wireguardEnabled and wireguardEnabledV6 together, as the agent runs them: Node resources through
    the calc (IPv4 and IPv6 addresses, status.wireguardPublicKey and status.wireguardPublicKeyV6) into
    two drivers per node. Each device has its own key pair (private keys 0600 under the state dir),
    IPv4 table 1 and IPv6 table 2; both families' pod traffic is encrypted (only UDP 51820/51821 on the
    wire). Turning IPv6 off clears only the IPv6 key and leaves IPv4 encrypted."""
    from felixpy.calc.wireguard import WireguardCalc
    from felixpy.resources.node import Node

    require_kernel("wireguard")
    a, b = netns("wgda"), netns("wgdb")
    spaces = {"node-a": a, "node-b": b}
    a.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    status: dict[str, dict[str, str | None]] = {n: {} for n in DUAL}
    drivers: dict[str, dict[str, WireguardDriver]] = {}
    clock = Clock()
    for name, (ip, ip6, _b4, wl4, _b6, wl6) in DUAL.items():
        ns = spaces[name]
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "addr", "add", f"{wl4}/32", "dev", "lo")
        ns.run("ip", "-6", "addr", "add", f"{wl6}/128", "dev", "lo", "nodad")

        def publisher(field: str, name: str = name):  # type: ignore[no-untyped-def]
            def publish(key: str | None) -> None:  # stands in for the CAS write of the Node's status
                status[name][field] = key
            return publish

        drivers[name] = {
            "v4": WireguardDriver(WireguardConfig(enabled=True), nodename=name, host_mtu=1500,
                                  key_dir=str(tmp_path / name), publish=publisher("wireguardPublicKey"),
                                  netns=ns.name, clock=clock),
            "v6": WireguardDriver(WireguardConfig.v6(enabled=True), nodename=name, host_mtu=1500,
                                  key_dir=str(tmp_path / name), publish=publisher("wireguardPublicKeyV6"),
                                  netns=ns.name, clock=clock)}
    for name, other in (("node-a", "node-b"), ("node-b", "node-a")):
        spaces[name].run("ip", "route", "add", DUAL[other][2], "via", DUAL[other][0], "dev", "eth0")
        spaces[name].run("ip", "-6", "route", "add", DUAL[other][4], "via", DUAL[other][1], "dev", "eth0")

    def snapshot() -> WireguardUpdate:
        calc = WireguardCalc()
        for name, (ip, ip6, b4, _wl4, b6, _wl6) in DUAL.items():
            calc.on_node(name, Node.model_validate({
                "metadata": {"name": name},
                "spec": {"bgp": {"ipv4Address": f"{ip}/24", "ipv6Address": f"{ip6}/64"}},
                "status": {k: v for k, v in status[name].items() if v}}))
            calc.on_block(b4, name)
            calc.on_block(b6, name)
        (u,) = calc.flush()
        return u

    def converge() -> None:
        for _ in range(3):
            for pair in drivers.values():
                for d in pair.values():
                    d.on_update(snapshot())
                    assert d.apply()

    converge()
    for name in DUAL:
        k4, k6 = status[name]["wireguardPublicKey"], status[name]["wireguardPublicKeyV6"]
        assert k4 and k6 and k4 != k6, status  # a key pair per device
        for dev, key in (("wireguard.cali", k4), ("wg-v6.cali", k6)):
            assert spaces[name].run("wg", "show", dev, "public-key").strip() == key
            conf = tmp_path / name / "wireguard" / f"{dev}.conf"
            assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    peer4 = a.run("wg", "show", "wireguard.cali", "dump").splitlines()[1].split("\t")
    peer6 = a.run("wg", "show", "wg-v6.cali", "dump").splitlines()[1].split("\t")
    assert (peer4[0], peer4[2], peer4[3]) == (status["node-b"]["wireguardPublicKey"], "192.168.92.2:51820",
                                              "10.246.1.0/26")
    assert (peer6[0], peer6[2], peer6[3]) == (status["node-b"]["wireguardPublicKeyV6"], "[fd00:92::2]:51821",
                                              "fd00:246:0:1::/122")
    assert "lookup 1" in a.run("ip", "rule") and "lookup 2" in a.run("ip", "-6", "rule")
    assert "10.246.1.0/26 dev wireguard.cali" in a.run("ip", "route", "show", "table", "1")
    assert "fd00:246:0:1::/122 dev wg-v6.cali" in a.run("ip", "-6", "route", "show", "table", "2")

    def ping(v6: bool, marker: str = "") -> bool:
        src, dst = (DUAL["node-a"][5], DUAL["node-b"][5]) if v6 else (DUAL["node-a"][3], DUAL["node-b"][3])
        pattern = ["-p", marker.encode().hex()] if marker else []
        argv = ["ip", "netns", "exec", a.name, "ping", "-6" if v6 else "-4", "-c1", "-W2", *pattern,
                "-I", src, dst]
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    def until(ok, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 20
        while not ok():
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    until(lambda: ping(False) and ping(True), "pod addresses answer over both devices")
    marker = "FELIXPY-DUALSTAK"

    def capture(action) -> str:  # type: ignore[no-untyped-def]
        return captured_in(b.name, action, "ip or ip6")

    def both() -> None:
        for _ in range(3):
            assert ping(False, marker) and ping(True, marker)

    out = capture(both)
    packets = [line for line in out.splitlines() if " IP " in line or " IP6 " in line]
    assert any(".51820: UDP" in line for line in packets), out
    assert any(".51821: UDP" in line for line in packets), out
    assert not any("10.246." in line or "fd00:246:" in line for line in packets), packets
    assert marker not in out
    # wireguardEnabledV6 off on both nodes: only the IPv6 key, rule and table go; IPv4 stays encrypted
    for name, pair in drivers.items():
        pair["v6"] = WireguardDriver(WireguardConfig.v6(enabled=False), nodename=name, host_mtu=1500,
                                     key_dir=str(tmp_path / name), publish=pair["v6"].publish,
                                     netns=spaces[name].name, clock=clock)
    converge()
    assert all(status[n]["wireguardPublicKeyV6"] is None and status[n]["wireguardPublicKey"] for n in DUAL)
    assert "lookup 2" not in a.run("ip", "-6", "rule") and "lookup 1" in a.run("ip", "rule")
    assert a.run("wg", "show", "wireguard.cali", "peers").strip() == status["node-b"]["wireguardPublicKey"]
    until(lambda: ping(True), "IPv6 pod traffic over the main table once wg-v6.cali is off")
    out = capture(lambda: [ping(False, marker) for _ in range(2)])
    v4 = [line for line in out.splitlines() if " IP " in line]
    assert v4 and all(".51820: UDP" in line for line in v4), v4
    assert marker not in out
    clock.now += wgdrv.DRAIN_SECONDS
    for pair in drivers.values():
        pair["v6"].resync()
        assert pair["v6"].apply()
    assert "wg-v6.cali" not in a.run("ip", "link") and "wireguard.cali" in a.run("ip", "link")
    assert not (tmp_path / "node-a" / "wireguard" / "wg-v6.cali.conf").exists()


# two racks: rack 1 (192.168.95.0/24, a bridge in the router) holds node-a and node-b, rack 2
# (192.168.96.0/24) node-c; the router knows node addresses only, never pod blocks
RACKS = {"node-a": ("192.168.95.1", "192.168.95.254", "10.247.0.0/26", "10.247.0.1"),
         "node-b": ("192.168.95.2", "192.168.95.254", "10.247.1.0/26", "10.247.1.1"),
         "node-c": ("192.168.96.3", "192.168.96.254", "10.247.2.0/26", "10.247.2.1")}


def test_crosssubnet_two_racks_wireguard_encrypts_both_racks_and_a_node_without_it_gets_ipip(
        netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """IPIP CrossSubnet routes in the main table (same rack direct on eth0, other rack via tunl0
    onlink) and WireGuard on, as Calico combines them: a capture in the router sees only UDP 51820
    between nodes, same rack and across racks (no IPIP, no pod address, no payload in clear). When
    node-c turns WireGuard off, its blocks are thrown back to the main table: node-a reaches it
    over tunl0 (IPIP through the router, unencrypted, as Calico does for nodes without WireGuard)
    while node-a to node-b stays encrypted."""
    import re

    from felixpy.dataplane.tunnel_devices import ensure_ipip

    require_kernel("ipip", "wireguard")
    r = netns("wgr")
    spaces = {name: netns(f"wg{name[-1]}") for name in RACKS}
    r.run("ip", "link", "add", "br1", "type", "bridge")
    r.run("ip", "addr", "add", "192.168.95.254/24", "dev", "br1")
    r.run("ip", "link", "set", "br1", "up")
    r.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    for name, (ip, gw, _block, wl) in RACKS.items():
        ns, port = spaces[name], f"r{name[-1]}"
        r.run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        if name == "node-c":
            r.run("ip", "addr", "add", f"{gw}/24", "dev", port)
        else:
            r.run("ip", "link", "set", port, "master", "br1")
        r.run("ip", "link", "set", port, "up")
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "route", "add", "default", "via", gw)
        ns.run("ip", "addr", "add", f"{wl}/32", "dev", "lo")
        ensure_ipip(wl.rsplit(".", 1)[0] + ".62", mtu=1480, netns=ns.name)
    for name, (ip, _gw, _block, _wl) in RACKS.items():  # CrossSubnet: what calc plans for each node
        subnet = ip.rsplit(".", 1)[0]
        for other, (oip, _ogw, oblock, _owl) in RACKS.items():
            if other == name:
                continue
            if oip.rsplit(".", 1)[0] == subnet:
                spaces[name].run("ip", "route", "add", oblock, "via", oip, "dev", "eth0")
            else:
                spaces[name].run("ip", "route", "add", oblock, "via", oip, "dev", "tunl0", "onlink")
    published: dict[str, str | None] = {}
    clock = Clock()
    drivers = {}
    for name in RACKS:
        def publish(key: str | None, name: str = name) -> None:
            published[name] = key

        drivers[name] = WireguardDriver(WireguardConfig(enabled=True), nodename=name, host_mtu=1500,
                                        key_dir=str(tmp_path / name), publish=publish,
                                        netns=spaces[name].name, clock=clock)

    def converge() -> None:
        for _ in range(3):
            snap = WireguardUpdate(
                nodes=tuple(WgNode(n, ip, published.get(n)) for n, (ip, _, _, _) in RACKS.items()),
                blocks=tuple((block, n) for n, (_, _, block, _) in RACKS.items()))
            for d in drivers.values():
                d.on_update(snap)
                assert d.apply()

    def ping(dst: str, marker: str = "") -> bool:
        pattern = ["-p", marker.encode().hex()] if marker else []
        return subprocess.run(["ip", "netns", "exec", spaces["node-a"].name, "ping", "-c1", "-W2", *pattern,
                               "-I", RACKS["node-a"][3], RACKS[dst][3]], capture_output=True,
                              timeout=30).returncode == 0

    def until(ok, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 20
        while not ok():
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    def in_router(action) -> list[str]:  # type: ignore[no-untyped-def]
        argv = ["ip", "netns", "exec", r.name, "tcpdump", "-l", "-n", "-i", "any", "-A", "ip"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            action()
            time.sleep(1.0)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
        return out.splitlines()

    converge()
    assert all(published.get(n) for n in RACKS), published
    table = spaces["node-a"].run("ip", "route", "show", "table", "1")
    assert "10.247.1.0/26 dev wireguard.cali" in table and "10.247.2.0/26 dev wireguard.cali" in table, table
    until(lambda: ping("node-b") and ping("node-c"), "pods reachable in both racks over WireGuard")
    marker = "FELIXPY-TWORACKS"
    lines = in_router(lambda: [ping(dst, marker) for dst in ("node-b", "node-c") for _ in range(2)])
    packets = [line for line in lines if re.match(r"^\d\d:\d\d:\d\d\.\d+ ", line)]
    assert any("192.168.95.2.51820: UDP" in p for p in packets), packets  # same rack
    assert any("192.168.96.3.51820: UDP" in p for p in packets), packets  # other rack, via the router
    assert all(".51820: UDP" in p for p in packets), packets
    assert not any("10.247." in p for p in packets) and marker not in "\n".join(lines)
    # node-c without WireGuard: its key goes, node-a/-b throw its block to the main table (tunl0)
    drivers["node-c"] = WireguardDriver(WireguardConfig(enabled=False), nodename="node-c", host_mtu=1500,
                                        key_dir=str(tmp_path / "node-c"), publish=drivers["node-c"].publish,
                                        netns=spaces["node-c"].name, clock=clock)
    converge()
    assert published["node-c"] is None
    assert "throw 10.247.2.0/26" in spaces["node-a"].run("ip", "route", "show", "table", "1")
    until(lambda: ping("node-c"), "node-c reachable over IPIP once it has no WireGuard")
    lines = in_router(lambda: [ping(dst, marker) for dst in ("node-b", "node-c") for _ in range(2)])
    packets = [line for line in lines if re.match(r"^\d\d:\d\d:\d\d\.\d+ ", line)]
    ipip = [p for p in packets if "192.168.95.1 > 192.168.96.3: IP 10.247.0.1 > 10.247.2.1" in p]
    assert ipip, packets  # IPIP through the router, the pod addresses inside
    rack1 = [p for p in packets if re.search(r"192\.168\.95\.2\b", p)]
    assert rack1 and all(".51820: UDP" in p for p in rack1), rack1  # node-a <-> node-b still encrypted
    assert not any("10.247.1." in p for p in packets)
    assert marker in "\n".join(lines)  # to node-c in clear, as Calico's traffic to a non-WireGuard node
