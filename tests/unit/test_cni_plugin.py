"""felixpy-cni (stdlib plugin) and the pure request helpers of the agent-side handler."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from felixpy.cni import plugin
from felixpy.cni.request import config_labels, format_result, parse_cni_args, parse_request, wep_name

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0"}


def _serve_once(path: str, answer: dict, seen: list) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        data = b""
        while not data.endswith(b"\n"):
            data += conn.recv(4096)
        seen.append(json.loads(data))
        conn.sendall(json.dumps(answer).encode() + b"\n")
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_version_needs_no_agent() -> None:
    code, out = plugin.run({"CNI_COMMAND": "VERSION"}, "")
    assert code == 0 and "1.0.0" in out["supportedVersions"] and "0.4.0" in out["supportedVersions"]


def test_missing_agent_fails_with_code_11_naming_the_socket(tmp_path: Path) -> None:
    conf = json.dumps({"cniVersion": "0.4.0", "run_dir": str(tmp_path)})
    code, out = plugin.run(ENV, conf)
    assert code == 1 and out["code"] == 11 and str(tmp_path / "cni.sock") in out["msg"]
    assert out["cniVersion"] == "0.4.0"


def test_missing_env_and_bad_version_and_bad_json() -> None:
    code, out = plugin.run({"CNI_COMMAND": "ADD"}, json.dumps({"cniVersion": "1.0.0"}))
    assert (code, out["code"]) == (1, 4) and "CNI_CONTAINERID" in out["details"]
    code, out = plugin.run(ENV, json.dumps({"cniVersion": "9.9.9"}))
    assert (code, out["code"]) == (1, 1)
    code, out = plugin.run(ENV, "{not json")
    assert (code, out["code"]) == (1, 6)


def test_socket_path_precedence(tmp_path: Path) -> None:
    assert plugin.socket_path({"agent_socket": "/x.sock", "run_dir": "/r"}, {}) == "/x.sock"
    assert plugin.socket_path({"run_dir": "/r"}, {"FELIXPY_RUN_DIR": "/e"}) == "/r/cni.sock"
    assert plugin.socket_path({}, {"FELIXPY_RUN_DIR": "/e"}) == "/e/cni.sock"
    assert plugin.socket_path({}, {}) == "/var/run/felixpy/cni.sock"


def test_request_forwarded_and_answer_printed(tmp_path: Path) -> None:
    sock = str(tmp_path / "a.sock")
    seen: list = []
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/32"}]}
    t = _serve_once(sock, {"result": result}, seen)
    conf = {"cniVersion": "1.0.0", "agent_socket": sock, "name": "net"}
    env = {**os.environ, **ENV, "CNI_ARGS": "K8S_POD_NAME=p"}
    proc = subprocess.run(
        [sys.executable, "-m", "felixpy.cni.plugin"],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    t.join(5)
    assert proc.returncode == 0 and json.loads(proc.stdout) == result
    assert (
        seen[0]["command"] == "ADD"
        and seen[0]["containerID"] == "abc"
        and seen[0]["args"] == "K8S_POD_NAME=p"
    )


def test_agent_error_becomes_cni_error(tmp_path: Path) -> None:
    sock = str(tmp_path / "a.sock")
    t = _serve_once(sock, {"error": {"code": 101, "msg": "pool exhausted"}}, [])
    code, out = plugin.run(ENV, json.dumps({"cniVersion": "1.0.0", "agent_socket": sock}))
    t.join(5)
    assert code == 1 and out == {"cniVersion": "1.0.0", "code": 101, "msg": "pool exhausted", "details": ""}


def test_plugin_is_stdlib_only() -> None:
    code = (
        "import sys, felixpy.cni.plugin; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic','pyroute2','structlog','grpc','pyetcd')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == "[]"


def test_cni_args_and_labels() -> None:
    args, labels = parse_cni_args(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_LABELS=app=a,t=b;x=y"
    )
    assert args == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p"}
    assert labels == {"app": "a", "t": "b", "x": "y"}
    assert config_labels(
        {"args": {"cni": {"labels": {"a": "1"}}}, "runtimeConfig": {"labels": {"b": 2}}}
    ) == {"a": "1", "b": "2"}


def test_request_defaults_and_names() -> None:
    req = parse_request(
        {"command": "ADD", "containerID": "c1", "config": {"cniVersion": "1.0.0"}, "args": ""}
    )
    assert (req.namespace, req.pod, req.orchestrator, req.handle_id) == (
        "default",
        None,
        "cni",
        "k8s-pod-network.c1",
    )
    assert wep_name("node-1", "k8s", "my-pod", "eth0") == "node--1-k8s-my--pod-eth0"


def test_result_formats() -> None:
    kw = dict(
        host_iface="caliX",
        host_mac="ee:ee:ee:ee:ee:ee",
        ifname="eth0",
        mac="aa:bb:cc:dd:ee:ff",
        sandbox="/var/run/netns/p",
        addresses=["10.0.0.5/32"],
    )
    new = format_result("1.0.0", **kw)
    old = format_result("0.3.1", **kw)
    assert new["ips"] == [{"address": "10.0.0.5/32", "interface": 1}]
    assert old["ips"][0]["version"] == "4" and old["cniVersion"] == "0.3.1"
    assert new["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/var/run/netns/p"}


def test_reply_format_through_the_real_server(tmp_path: Path) -> None:
    """The plugin asks for ``"reply": "cni"``: the agent formats results and CNI errors itself."""
    from felixpy.cni.server import CNIServer

    seen: list = []

    def handle(request: dict) -> dict:
        seen.append(request)
        if request["command"] == "DEL":
            return {"result": None}
        if request["containerID"] == "bad":
            return {"error": {"code": 101, "msg": "pool exhausted", "details": "10.0.0.0/30"}}
        return {"result": {"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.1/32", "version": "4"}]}}

    sock = str(tmp_path / "cni.sock")
    server = CNIServer(sock, handle)
    server.start()
    try:
        conf = json.dumps({"cniVersion": "0.4.0", "name": "net", "agent_socket": sock}, indent=2) + "\n"
        code, text = plugin.invoke(ENV, conf)
        assert code == 0 and json.loads(text)["ips"][0]["version"] == "4"
        assert seen[0]["reply"] == "cni" and seen[0]["config"]["name"] == "net", "multi-line config kept"
        assert plugin.invoke({**ENV, "CNI_COMMAND": "DEL"}, conf) == (0, "")
        code, out = plugin.run({**ENV, "CNI_CONTAINERID": "bad"}, conf)
        assert code == 1 and out == {
            "cniVersion": "0.4.0",
            "code": 101,
            "msg": "pool exhausted",
            "details": "10.0.0.0/30",
        }
    finally:
        server.stop()


def test_request_line_quotes_every_string() -> None:
    req = plugin.build_request("ADD", {"cniVersion": "1.0.0"}, {**ENV, "CNI_ARGS": 'K8S_POD_NAME="x"\n;é'})
    line = plugin.encode_request(req, '{"cniVersion": "1.0.0",\r\n "n": "a b"}')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert doc["args"] == 'K8S_POD_NAME="x"\n;é' and doc["config"] == {"cniVersion": "1.0.0", "n": "a b"}


def test_without_the_c_accelerator_the_json_module_does_the_same(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = '{"a": [1, 2.5, true, null, "\\u00e9"], "b": {}}'
    fast = plugin.loads(text)
    for bad in ("{", '{"a": 1} x', "[NaN]", '"\x01"'):
        try:
            plugin.loads(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
    monkeypatch.setattr(plugin, "_C_CODEC", None)
    assert plugin.loads(text) == fast and plugin.quote("é\n") == json.dumps("é\n")
    code, out = plugin.run({"CNI_COMMAND": "VERSION"}, "")
    assert code == 0 and out is not None and "1.0.0" in out["supportedVersions"]


def test_installed_launcher_loads_only_c_modules(tmp_path: Path) -> None:
    """The stdlib plugin's launcher (install_cni.launcher) runs with -IS, loads the plugin file alone
    and never imports json, re, socket, os or the felixpy package (its __init__ imports os)."""
    from felixpy.kube.install_cni import launcher

    path = tmp_path / "felixpy"
    text = launcher("felixpy-cni")
    assert text.startswith("#!") and text.splitlines()[0].endswith(" -IS") and text.endswith("\nmain()\n")
    probe = (
        'conf = \'{"cniVersion": "1.0.0", "agent_socket": "/nx"}\'\n'
        "code, out = plugin.invoke(plugin.environ(), conf)\n"
        "print(out)\n"
        "unwanted = ('json', 're', 'socket', 'site', 'typing', 'os', 'felixpy')\n"
        "print(sorted(m for m in unwanted if m in sys.modules))\n"
    )
    path.write_text(text[: -len("main()\n")] + probe)
    # run the shebang's own command line rather than exec the file just written: a child forked
    # meanwhile by another thread of this test process can hold it open (ETXTBSY)
    interpreter = text.splitlines()[0][2:].split()
    proc = subprocess.run([*interpreter, str(path)], env=ENV, capture_output=True, text=True, timeout=30)
    first, modules = proc.stdout.splitlines()
    assert json.loads(first)["code"] == 11 and modules == "[]", proc.stderr
