"""The node's IPv6 address (calico-node's IP6 / IP6_AUTODETECTION_METHOD) found on a real kernel and
written to the Node's ``spec.bgp.ipv6Address`` beside the IPv4 one; IP6 is ``none`` by default.

Detection runs inside a namespace of the test's own (``ip netns exec … python``: the agent reads the
namespace it runs in), the registration against a real etcd."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from felixpy.datastore.resources import KVBackend
from felixpy.resources import Node
from felixpy.runtime import startup
from felixpy.runtime.settings import Settings

DETECT = """
import json, sys
from felixpy.runtime import startup
from felixpy.runtime.settings import Settings
s = Settings.from_env(json.loads(sys.argv[1]))
a4, a6 = startup.node_address(s), startup.node_address6(s)
print(json.dumps([a4 and [a4.iface, a4.cidr], a6 and [a6.iface, a6.cidr]]))
"""


@pytest.fixture
def host(netns: Any) -> Any:
    """A node namespace: eth7 with 10.77.0.5/24 and fd00:77::5/64 (a link-local too, as every
    IPv6 link), and a 'cali' veth with a global IPv6 address first-found must pass over."""
    ns = netns("ip6")
    ns.run("ip", "link", "add", "calitest0", "type", "veth", "peer", "name", "calitest0p")
    ns.run("ip", "link", "add", "eth7", "type", "veth", "peer", "name", "eth7p")
    for link in ("calitest0", "calitest0p", "eth7", "eth7p"):
        ns.run("ip", "link", "set", link, "up")
    ns.run("ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "calitest0", "nodad")
    ns.run("ip", "addr", "add", "10.77.0.5/24", "dev", "eth7")
    ns.run("ip", "-6", "addr", "add", "fd00:77::5/64", "dev", "eth7", "nodad")
    return ns


def _detect(ns: Any, env: dict[str, str]) -> list[Any]:
    out = ns.run(sys.executable, "-c", DETECT, json.dumps({"NODENAME": "n6", **env}))
    return json.loads(out)  # type: ignore[no-any-return]


def test_ip6_none_by_default_autodetect_finds_the_global_address(host: Any) -> None:
    assert _detect(host, {}) == [["eth7", "10.77.0.5/24"], None], "IP6 defaults to none, as calico-node"
    links = host.run("ip", "-6", "-o", "addr", "show", "dev", "eth7")
    assert "fe80:" in links, "the link-local address is there for first-found to pass over"
    assert _detect(host, {"IP6": "autodetect"})[1] == ["eth7", "fd00:77::5/64"]
    by_iface = {"IP6": "autodetect", "IP6_AUTODETECTION_METHOD": "interface=eth.*"}
    assert _detect(host, by_iface)[1] == ["eth7", "fd00:77::5/64"]
    by_route = {"IP6": "autodetect", "IP6_AUTODETECTION_METHOD": "can-reach=fd00:77::9"}
    assert _detect(host, by_route)[1] == ["eth7", "fd00:77::5/64"]
    assert _detect(host, {"IP6": "fd00:77::5"})[1] == ["eth7", "fd00:77::5/64"], (
        "the prefix found on the host"
    )


def test_ip6_autodetect_finding_nothing_is_one_clear_error(host: Any) -> None:
    env = {"NODENAME": "n6", "IP6": "autodetect", "IP6_AUTODETECTION_METHOD": "interface=nosuch.*"}
    proc = subprocess.run(
        ["ip", "netns", "exec", host.name, sys.executable, "-m", "felixpy.main", "node"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env, "ETCD_ENDPOINTS": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "no IPv6 address found with IP6_AUTODETECTION_METHOD=interface=nosuch.*" in proc.stderr, (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr, proc.stderr


def test_both_addresses_registered_on_the_node_and_kept_idempotent(etcd_backend: KVBackend) -> None:
    settings = Settings.from_env({"NODENAME": "n6", "IP6": "autodetect"})
    startup.register_node(etcd_backend, settings, "10.77.0.5/24", "fd00:77::5/64")
    node = etcd_backend.get(Node, "n6").to_dict()
    assert node["spec"]["bgp"] == {"ipv4Address": "10.77.0.5/24", "ipv6Address": "fd00:77::5/64"}
    revision = etcd_backend.get(Node, "n6").metadata.resource_version
    startup.register_node(etcd_backend, settings, "10.77.0.5/24", "fd00:77::5/64")
    assert etcd_backend.get(Node, "n6").metadata.resource_version == revision, "no second write"
    startup.register_node(
        etcd_backend, settings, "10.77.0.5/24", None
    )  # IP6=none later: kept, as calico-node
    assert etcd_backend.get(Node, "n6").to_dict()["spec"]["bgp"]["ipv6Address"] == "fd00:77::5/64"
