"""`felixpy-ipam` driven as a container runtime drives it: a subprocess, CNI_* env, config on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.ipam_helpers import assert_consistent, in_net, make_pool

pytestmark = pytest.mark.integration

PLUGIN = Path(sys.executable).parent / "felixpy-ipam"


def conf(endpoints: str, **over: object) -> dict:
    doc = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "felixpy-ipam",
        "datastore_type": "etcdv3",
        "etcd_endpoints": endpoints,
        "nodename": "node1",
        "assign_ipv4": "true",
        "assign_ipv6": "false",
    }
    doc.update(over)
    return doc


def cni(command: str, config: dict | str, container: str = "c1", **extra_env: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "ETCD_"))}
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=container,
        CNI_NETNS=f"/proc/{os.getpid()}/ns/net",  # ADD and CHECK need a namespace that exists
        CNI_IFNAME="eth0",
        CNI_PATH="/opt/cni/bin",
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_UID=5f0c-uid-1",
    )
    env.update(extra_env)
    stdin = config if isinstance(config, str) else json.dumps(config)
    p = subprocess.run([str(PLUGIN)], input=stdin, capture_output=True, text=True, env=env, timeout=60)
    out = json.loads(p.stdout) if p.stdout.strip() else {}
    return p.returncode, out


@pytest.fixture
def pool(etcd_backend):
    return make_pool(etcd_backend, "default-ipv4-ippool", "10.200.0.0/24")


def _ipam_keys(kv) -> list[str]:
    return [i.key for i in kv.list("/calico/ipam/")[0]]


def test_version() -> None:
    rc, out = cni("VERSION", "{}")
    assert rc == 0 and out["cniVersion"] == "1.0.0" and "0.4.0" in out["supportedVersions"]


def test_add_is_idempotent_and_del_releases(pool, etcd_endpoints, etcd_kv) -> None:
    rc, out = cni("ADD", conf(etcd_endpoints))
    assert rc == 0, out
    assert out["cniVersion"] == "1.0.0" and len(out["ips"]) == 1
    addr = out["ips"][0]["address"]
    assert addr.endswith("/26") and in_net(addr.split("/")[0], "10.200.0.0/24")
    assert "version" not in out["ips"][0]
    rc, again = cni("ADD", conf(etcd_endpoints))
    assert rc == 0 and again["ips"] == out["ips"], "repeated ADD returns the same address"
    assert assert_consistent(etcd_kv) == {addr.split("/")[0]: "k8s-pod-network.c1"}
    block = json.loads(etcd_kv.list("/calico/ipam/v2/assignment/")[0][0].value)
    owner = block["attributes"][0]["secondary"]
    assert owner["pod"] == "web-1" and owner["namespace"] == "default" and owner["node"] == "node1"
    assert owner["uid"] == "5f0c-uid-1" and owner["timestamp"], "the GC keys on the pod's UID"
    assert cni("CHECK", conf(etcd_endpoints))[0] == 0
    rc, _ = cni("DEL", conf(etcd_endpoints))
    assert rc == 0 and assert_consistent(etcd_kv) == {}
    rc, out = cni("CHECK", conf(etcd_endpoints))
    assert rc == 1 and out["code"] == 3
    assert cni("DEL", conf(etcd_endpoints), container="never-added")[0] == 0, (
        "DEL of unknown container succeeds"
    )


def test_bad_input_allocates_nothing(pool, etcd_endpoints, etcd_kv) -> None:
    """A missing netns, an odd container ID or interface name: refused (code 4, the variable named)
    before the datastore is touched; a DEL whose netns is already gone still releases."""
    cases = [
        (
            {"CNI_NETNS": "/var/run/netns/no-such-pod"},
            "CNI_NETNS '/var/run/netns/no-such-pod' does not exist",
        ),
        ({"CNI_CONTAINERID": "c1; touch /tmp/x"}, "CNI_CONTAINERID 'c1; touch /tmp/x' is invalid"),
        ({"CNI_CONTAINERID": "../../../x"}, "CNI_CONTAINERID '../../../x' is invalid"),
        ({"CNI_IFNAME": "i" * 20}, "is 20 bytes long (the kernel allows at most 15)"),
    ]
    for env, message in cases:
        rc, out = cni("ADD", conf(etcd_endpoints), **env)
        assert rc == 1 and out["code"] == 4 and message in out["msg"], out
    assert _ipam_keys(etcd_kv) == [], "nothing allocated, no block claimed"
    rc, out = cni("ADD", conf(etcd_endpoints))
    assert rc == 0, out
    rc, _ = cni("DEL", conf(etcd_endpoints), CNI_NETNS="/var/run/netns/removed-by-the-runtime")
    assert rc == 0 and assert_consistent(etcd_kv) == {}


def test_0_4_0_result_and_nested_ipam_section(pool, etcd_endpoints, etcd_kv) -> None:
    main = {
        "cniVersion": "0.4.0",
        "name": "net",
        "type": "ptp",
        "ipam": {
            "type": "felixpy-ipam",
            "etcd_endpoints": etcd_endpoints,
            "nodename": "node2",
            "ipv4_pools": ["default-ipv4-ippool"],
        },
    }
    rc, out = cni("ADD", main, container="c4")
    assert rc == 0, out
    assert out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"
    assert list(assert_consistent(etcd_kv).values()) == ["net.c4"]


@pytest.mark.parametrize(
    ("config", "env", "code"),
    [
        ("{not json", {}, 6),
        ({"cniVersion": "9.9.9", "type": "felixpy-ipam"}, {}, 1),
        ({"type": "felixpy-ipam", "etcd_endpoints": "x"}, {}, 7),
        ("MISSING_ENDPOINTS", {}, 7),
        ("UNKNOWN_POOL", {}, 7),
        ("BAD_BOOL", {}, 7),
        ("OK", {"CNI_CONTAINERID": ""}, 4),
        ("OK", {"CNI_COMMAND": "FROB"}, 4),
    ],
    ids=[
        "malformed-json",
        "bad-version",
        "no-cniVersion",
        "missing-endpoints",
        "unknown-pool",
        "bad-bool",
        "no-container-id",
        "bad-command",
    ],
)
def test_bad_input_returns_cni_error_and_changes_nothing(
    pool, etcd_endpoints, etcd_kv, config, env, code
) -> None:
    good = conf(etcd_endpoints)
    config = (
        {
            "MISSING_ENDPOINTS": {k: v for k, v in good.items() if k != "etcd_endpoints"},
            "UNKNOWN_POOL": conf(etcd_endpoints, ipv4_pools=["10.99.0.0/24"]),
            "BAD_BOOL": conf(etcd_endpoints, assign_ipv4="maybe"),
            "OK": good,
        }.get(config, config)
        if isinstance(config, str)
        else config
    )
    before = _ipam_keys(etcd_kv)
    rc, out = cni(env.pop("CNI_COMMAND", "ADD"), config, **env)
    assert rc == 1
    assert out["code"] == code, out
    assert out["msg"] and set(out) == {"cniVersion", "code", "msg", "details"}
    assert _ipam_keys(etcd_kv) == before, "a failed ADD must change nothing"


def test_exhausted_pool_and_unreachable_datastore(etcd_backend, etcd_endpoints, etcd_kv) -> None:
    make_pool(etcd_backend, "tiny", "10.201.0.0/31", blockSize=31)
    assert cni("ADD", conf(etcd_endpoints), container="a")[0] == 0
    assert cni("ADD", conf(etcd_endpoints), container="b")[0] == 0
    rc, out = cni("ADD", conf(etcd_endpoints), container="c")
    assert rc == 1 and out["code"] == 100 and "no free IPv4 address" in out["details"]
    assert len(assert_consistent(etcd_kv)) == 2
    rc, out = cni("DEL", conf("http://127.0.0.1:1"), container="a")
    assert rc == 1 and out["code"] == 11, out


def test_dual_stack_with_per_version_pools(pool, etcd_backend, etcd_endpoints, etcd_kv) -> None:
    make_pool(etcd_backend, "v6", "fd00:200::/120")
    rc, out = cni(
        "ADD", conf(etcd_endpoints, assign_ipv6="true", ipv4_pools=["default-ipv4-ippool"]), container="ds"
    )
    assert rc == 0, out
    addrs = [i["address"] for i in out["ips"]]
    assert addrs[0].endswith("/26") and addrs[1].startswith("fd00:200::") and addrs[1].endswith("/122")
    assert cni("DEL", conf(etcd_endpoints), container="ds")[0] == 0
    assert assert_consistent(etcd_kv) == {}
