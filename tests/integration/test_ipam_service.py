"""The agent's answer to /opt/cni/bin/felixpy-ipam (felixpy/cni/ipam_service.py) on a real etcd: the
standalone plugin's behaviour (same result shape, handle, idempotent ADD, CHECK, DEL, error codes)
over the agent's own IPAM, with no datastore settings in the configuration."""

from __future__ import annotations

import os
from typing import Any

import pytest

from felixpy.cni.ipam_service import IpamService
from ipam.ipam import IPAM
from tests.integration.ipam_helpers import assert_consistent, in_net, make_pool

pytestmark = pytest.mark.integration
NETNS = f"/proc/{os.getpid()}/ns/net"  # ADD and CHECK need a namespace that exists


def request(command: str, container: str = "c1", **config: Any) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "bridge",
        "ipam": {"type": "felixpy-ipam", **config},
    }
    return {
        "command": command,
        "containerID": container,
        "netns": NETNS,
        "ifname": "eth0",
        "args": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1",
        "plugin": "ipam",
        "config": conf,
    }


@pytest.fixture
def service(etcd_kv: Any, etcd_backend: Any) -> IpamService:
    make_pool(etcd_backend, "default-ipv4-ippool", "10.201.0.0/24")
    return IpamService(nodename="node1", ipam=IPAM(etcd_kv, etcd_backend))


def test_add_is_idempotent_check_passes_del_releases(service: IpamService, etcd_kv: Any) -> None:
    first = service.handle(request("ADD"))["result"]
    again = service.handle(request("ADD"))["result"]
    assert first == again and first["cniVersion"] == "1.0.0"
    address = first["ips"][0]["address"]
    assert in_net(address.split("/")[0], "10.201.0.0/24") and address.endswith("/26")
    assert assert_consistent(etcd_kv) == {address.split("/")[0]: "k8s-pod-network.c1"}
    check = request("CHECK")
    check["config"]["prevResult"] = first
    assert service.handle(check) == {"result": None}
    assert service.handle(request("DEL")) == {"result": None}
    assert assert_consistent(etcd_kv) == {}
    assert service.handle(request("DEL")) == {"result": None}  # DEL of an unknown container succeeds


def test_errors_are_the_standalone_plugins(service: IpamService) -> None:
    assert service.handle(request("NOPE"))["error"]["code"] == 4
    assert service.handle(request("ADD", ipv4_pools=["10.99.0.0/24"]))["error"]["code"] == 7
    assert service.handle(request("ADD", assign_ipv4="maybe"))["error"]["code"] == 7
    bad = request("ADD")
    bad["config"] = "not an object"
    assert service.handle(bad)["error"]["code"] == 6
    missing = request("ADD")
    missing["netns"] = "/nonexistent/netns"
    assert service.handle(missing)["error"]["code"] == 4
