"""CNI input checks, before anything is allocated: the pure rules, the agent-side handler (whatever
forwards requests to it) and `felixpy-ipam` (exit code, CNI error code, the field named)."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from felixpy.cni.handler import CNIHandler
from felixpy.cni.server import cni_reply
from felixpy.cni.validate import InvalidInput, check_container_id, check_ifname, check_netns, check_request
from ipam import plugin as ipam_plugin

HERE_NETNS = f"/proc/{os.getpid()}/ns/net"  # a network namespace that surely exists
BAD_IDS = [
    ("", "CNI_CONTAINERID is empty"),
    ("abc; rm -rf /", "CNI_CONTAINERID 'abc; rm -rf /' is invalid"),
    ("../../etc", "CNI_CONTAINERID '../../etc' is invalid"),
    ("a/../b", "CNI_CONTAINERID 'a/../b' is invalid"),
    ("has space", "CNI_CONTAINERID 'has space' is invalid"),
    ("-leading-dash", "CNI_CONTAINERID '-leading-dash' is invalid"),
    ("$(id)", "CNI_CONTAINERID '$(id)' is invalid"),
    ("x" * 2000, "CNI_CONTAINERID is 2000 characters long (at most 1024)"),
]
BAD_IFNAMES = [
    ("a" * 20, "CNI_IFNAME 'aaaaaaaaaaaaaaaaaaaa' is 20 bytes long (the kernel allows at most 15)"),
    ("a" * 16, "is 16 bytes long"),
    ("é" * 8, "is 16 bytes long"),  # 8 characters, 16 bytes: the kernel counts bytes
    (".", "CNI_IFNAME '.' is not a valid interface name"),
    ("..", "CNI_IFNAME '..' is not a valid interface name"),
    ("eth/0", "CNI_IFNAME 'eth/0' contains '/' (not allowed)"),
    ("eth 0", "CNI_IFNAME 'eth 0' contains ' ' (not allowed)"),
    ("eth\t0", "contains '\\t'"),
    ("eth:0", "CNI_IFNAME 'eth:0' contains ':' (not allowed)"),
]


@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_bad_container_ids(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_container_id(value)
    assert info.value.code == 4 and message in info.value.msg


@pytest.mark.parametrize("value", ["a", "0", "abc-DEF_1.2", "f" * 64, "cid-web-1"])
def test_good_container_ids(value: str) -> None:
    check_container_id(value)


@pytest.mark.parametrize(("value", "message"), BAD_IFNAMES)
def test_bad_interface_names(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_ifname(value)
    assert info.value.code == 4 and message in info.value.msg


@pytest.mark.parametrize("value", ["eth0", "a" * 15, "net1", "e.1", "éé"])
def test_good_interface_names(value: str) -> None:
    check_ifname(value)


def test_netns_must_exist_for_add_and_check_only() -> None:
    with pytest.raises(InvalidInput) as info:
        check_netns("/var/run/netns/gone-for-good", must_exist=True)
    assert info.value.code == 4
    assert info.value.msg == "CNI_NETNS '/var/run/netns/gone-for-good' does not exist"
    check_netns("/var/run/netns/gone-for-good", must_exist=False)  # DEL: cleanup must still work
    check_netns("", must_exist=False)
    check_netns(HERE_NETNS, must_exist=True)
    with pytest.raises(InvalidInput, match="CNI_NETNS is empty"):
        check_netns("", must_exist=True)
    with pytest.raises(InvalidInput, match="contains a NUL byte"):
        check_netns("/proc/1/ns/net\0x", must_exist=False)


def test_network_name_is_config_error_7() -> None:
    with pytest.raises(InvalidInput) as info:
        check_request("DEL", container_id="c1", ifname="eth0", netns="", network="k8s/pod net")
    assert info.value.code == 7 and "network config field 'name' 'k8s/pod net' is invalid" in info.value.msg


# ---- the agent-side handler -------------------------------------------------------------------
class Untouchable:
    """Any use of IPAM, the datastore, links or the writer is a failure: nothing may be allocated."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{self.what}.{name} used by a request that should have been refused")


def _handler() -> CNIHandler:
    return CNIHandler(
        nodename="node1",
        kv=Untouchable("kv"),
        backend=Untouchable("backend"),
        ipam=Untouchable("ipam"),
        links=Untouchable("links"),
        writer=Untouchable("writer"),  # type: ignore[arg-type]
        mtu_path="/nonexistent",
    )


def _raw(command: str, **over: str) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "command": command,
        "containerID": "cid-1",
        "netns": HERE_NETNS,
        "ifname": "eth0",
        "args": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        "config": {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "felixpy"},
        "reply": "cni",
    }
    raw.update(over)
    return raw


AGENT_CASES = [
    ("ADD", {"containerID": "abc; rm -rf /"}, 4, "CNI_CONTAINERID 'abc; rm -rf /' is invalid"),
    ("ADD", {"containerID": "a/../b c"}, 4, "CNI_CONTAINERID 'a/../b c' is invalid"),
    ("ADD", {"ifname": "x" * 20}, 4, "CNI_IFNAME 'xxxxxxxxxxxxxxxxxxxx' is 20 bytes long"),
    ("ADD", {"ifname": ".."}, 4, "CNI_IFNAME '..' is not a valid interface name"),
    ("ADD", {"netns": "/var/run/netns/nopod"}, 4, "CNI_NETNS '/var/run/netns/nopod' does not exist"),
    ("ADD", {"netns": "no-such-pod-name"}, 4, "CNI_NETNS 'no-such-pod-name' does not exist"),
    ("CHECK", {"netns": "/var/run/netns/no-such-pod"}, 4, "does not exist"),
    (
        "ADD",
        {"args": "K8S_POD_NAMESPACE=a b;K8S_POD_NAME=web"},
        4,
        "CNI_ARGS: K8S_POD_NAMESPACE 'a b' is not",
    ),
    (
        "ADD",
        {"args": "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a/../b"},
        4,
        "CNI_ARGS: name 'node1-k8s-a/../b-eth0' is not",
    ),
    ("DEL", {"containerID": "../x"}, 4, "CNI_CONTAINERID '../x' is invalid"),
    ("DEL", {"ifname": "eth 0"}, 4, "CNI_IFNAME 'eth 0' contains ' '"),
]


@pytest.mark.parametrize(("command", "over", "code", "message"), AGENT_CASES)
def test_agent_handler_refuses_before_allocating(
    command: str, over: dict[str, str], code: int, message: str
) -> None:
    raw = _raw(command, **over)
    answer = _handler().handle(raw)
    assert answer["error"]["code"] == code and message in answer["error"]["msg"], answer
    # what felixpy-cni (or a forwarder) prints, and its exit code
    line = cni_reply(answer, raw["config"])
    exit_code, _, body = line.partition(" ")
    printed = json.loads(body)
    assert exit_code == "1" and printed["code"] == code and message in printed["msg"]
    assert printed["cniVersion"] == "1.0.0"


def test_agent_handler_bad_network_name_is_7() -> None:
    raw = _raw("ADD", config={"cniVersion": "1.0.0", "name": "pod net/1", "type": "felixpy"})
    answer = _handler().handle(raw)
    assert answer["error"]["code"] == 7 and "network config field 'name'" in answer["error"]["msg"]


def test_agent_handler_del_of_gone_netns_passes_validation() -> None:
    """DEL for a namespace the runtime already removed gets past the checks (and then cleans up:
    shown against the real agent in tests/kernel/test_agent_orphans.py)."""
    raw = _raw("DEL", netns="/var/run/netns/already-removed")
    answer = _handler().handle(raw)
    # it reached the datastore (the Untouchable backend): i.e. validation let it through
    assert answer["error"]["code"] == 100 and "backend.get used" in answer["error"]["msg"]


# ---- felixpy-ipam -------------------------------------------------------------------------------
IPAM_CONF = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "type": "felixpy-ipam",
    "etcd_endpoints": "http://127.0.0.1:9",  # nothing listens: reaching the datastore would say 11
    "nodename": "node1",
}


def _ipam(command: str, conf: dict[str, Any] | None = None, **env: str) -> tuple[int, dict[str, Any]]:
    environ = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": HERE_NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    environ.update(env)
    out = io.StringIO()
    rc = ipam_plugin.run(environ, io.StringIO(json.dumps(conf or IPAM_CONF)), out)
    return rc, json.loads(out.getvalue()) if out.getvalue() else {}


IPAM_CASES = [
    ("ADD", {"CNI_CONTAINERID": "c1 && reboot"}, 4, "CNI_CONTAINERID 'c1 && reboot' is invalid"),
    ("ADD", {"CNI_CONTAINERID": "../../x"}, 4, "CNI_CONTAINERID '../../x' is invalid"),
    ("ADD", {"CNI_IFNAME": "y" * 20}, 4, "is 20 bytes long (the kernel allows at most 15)"),
    ("ADD", {"CNI_NETNS": "/var/run/netns/nopod"}, 4, "CNI_NETNS '/var/run/netns/nopod' does not exist"),
    ("CHECK", {"CNI_NETNS": "/var/run/netns/missing-pod"}, 4, "does not exist"),
    ("DEL", {"CNI_CONTAINERID": "a b"}, 4, "CNI_CONTAINERID 'a b' is invalid"),
    ("DEL", {"CNI_IFNAME": "."}, 4, "CNI_IFNAME '.' is not a valid interface name"),
]


@pytest.mark.parametrize(("command", "env", "code", "message"), IPAM_CASES)
def test_ipam_plugin_refuses_before_the_datastore(
    command: str, env: dict[str, str], code: int, message: str
) -> None:
    rc, out = _ipam(command, **env)
    assert rc == 1 and out["code"] == code and message in out["msg"], out


def test_ipam_plugin_bad_network_name_is_7() -> None:
    rc, out = _ipam("ADD", {**IPAM_CONF, "name": "net;x"})
    assert rc == 1 and out["code"] == 7 and "network config field 'name' 'net;x' is invalid" in out["msg"]


def test_ipam_plugin_del_for_gone_netns_goes_on_to_the_datastore() -> None:
    """A DEL whose namespace is gone is not refused: it goes on to release (here the datastore is
    unreachable, so the answer is 'try again', not an input error)."""
    rc, out = _ipam("DEL", CNI_NETNS="/var/run/netns/missing-pod")
    assert rc == 1 and out["code"] == 11, out


def test_agent_handler_locked_datastore_is_try_again() -> None:
    """While `felixctl datastore migrate lock` holds, an ADD's address request answers 11 (try again
    later), the runtime's cue to retry, with IPAM's reason."""
    from felixpy.cni.handler import HandlerError
    from felixpy.cni.request import parse_request
    from ipam.errors import DatastoreLocked

    class LockedIPAM:
        def assignments_for_handle(self, handle: str) -> list[str]:
            return []

        def auto_assign(self, *args: Any, **kwargs: Any) -> Any:
            raise DatastoreLocked("the datastore is locked (datastoreReady: false)")

    handler = _handler()
    handler.ipam = LockedIPAM()  # type: ignore[assignment]
    with pytest.raises(HandlerError) as err:
        handler._addresses(parse_request(_raw("ADD")))
    assert err.value.code == 11 and "datastoreReady: false" in err.value.msg
