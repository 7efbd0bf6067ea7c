"""The static CNI forwarder (felixpy/cni/forward.c) against the stdlib Python plugin, its reference.

Both are run as processes, as a runtime runs them, on the same inputs: without an agent, with bad
input, and against the agent's real socket server (``CNIServer``) whose handler records the
request. The forwarder must send the same request and print the same answer with the same exit code.
Building it needs gcc (scripts/install.sh installs it); without gcc the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felixpy.cni import forwarder
from felixpy.cni.server import CNIServer
from felixpy.kube.install_cni import elf_interpreter, launcher

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=p\u00e9\U0001f600;X=\t"q"\\',
    "CNI_PATH": "/opt/cni/bin",
}


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("plugins")
    try:
        fwd = forwarder.build("felixpy-cni", out)
    except forwarder.ForwarderMissing as exc:
        print(f"skipping: {exc}")
        pytest.skip(str(exc))
    (out / "felixpy-ipam").write_bytes(fwd.read_bytes())
    (out / "felixpy-ipam").chmod(0o755)
    py = out / "felixpy-python"
    py.write_text(launcher("felixpy-cni", python=sys.executable))
    py.chmod(0o755)
    return {"c": fwd, "ipam": out / "felixpy-ipam", "python": py}


def run(binary: Path, env: dict[str, str], stdin: str | bytes) -> tuple[int, Any, str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    # bytes env: the CNI_ARGS above holds non-ASCII text; one test adds undecodable bytes
    proc = subprocess.run([str(binary)], env=env, input=data, capture_output=True, timeout=30)
    text = proc.stdout.decode()
    return proc.returncode, json.loads(text) if text.strip() else None, text


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """The agent's real socket server; its handler records each request and returns ``answer``."""
    seen: list[dict[str, Any]] = []
    answer: dict[str, Any] = {"result": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}]}}

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return dict(answer)

    server = CNIServer(str(tmp_path / "run" / "cni.sock"), handle)
    server.start()
    try:
        yield str(tmp_path / "run"), seen, answer
    finally:
        server.stop()


def test_static_and_tiny(plugins: dict[str, Path]) -> None:
    """No program interpreter: the kernel runs it on any Linux host, whatever libc it has."""
    assert elf_interpreter(plugins["c"]) is None
    assert elf_interpreter(Path(sys.executable).resolve()) is not None  # the check can fail
    assert plugins["c"].stat().st_size < 2 << 20


@pytest.mark.parametrize(
    ("env", "stdin"),
    [
        ({"CNI_COMMAND": "VERSION"}, ""),
        (ENV, json.dumps({"cniVersion": "0.4.0", "run_dir": "/nonexistent/felixpy"})),
        (ENV, json.dumps({"cniVersion": "1.0.0", "agent_socket": "/nonexistent/x.sock"})),
        ({"CNI_COMMAND": "ADD"}, json.dumps({"cniVersion": "1.0.0"})),
        ({"CNI_COMMAND": "DEL", "CNI_IFNAME": "eth0"}, json.dumps({"cniVersion": "1.0.0"})),
        (ENV, json.dumps({"cniVersion": "9.9.9"})),
        ({"CNI_COMMAND": "ADD"}, json.dumps({"cniVersion": "9.9.9"})),
        ({"CNI_COMMAND": "CHECK"}, json.dumps({"cniVersion": "0.3.1"})),
        (ENV, json.dumps({"cniVersion": 1.0})),
        (ENV, json.dumps({"name": "no version"})),
        ({**ENV, "CNI_COMMAND": "NOPE"}, json.dumps({"cniVersion": "1.0.0"})),
        (ENV, "[1, 2]"),
        (ENV, "{not json"),
        (ENV, '{"cniVersion": "1.0.0"} trailing'),
        (ENV, '{"cniVersion": "1.0.0", "x": [1, 2.5e3, true, null, {"a": "\\u00e9"}], }'),
    ],
)
def test_same_answer_as_the_python_plugin_without_an_agent(
    plugins: dict[str, Path], env: dict[str, str], stdin: str
) -> None:
    rc_c, out_c, _ = run(plugins["c"], env, stdin)
    rc_py, out_py, _ = run(plugins["python"], env, stdin)
    assert rc_c == rc_py
    if out_py is not None and out_py.get("code") == 6:  # decode errors: same code, own wording of where
        assert (out_c["code"], out_c["msg"], out_c["cniVersion"]) == (6, out_py["msg"], out_py["cniVersion"])
    else:
        assert out_c == out_py


def test_agent_absent_is_code_11_naming_the_socket_at_once(plugins: dict[str, Path], tmp_path: Path) -> None:
    started = time.monotonic()
    rc, out, _ = run(plugins["c"], ENV, json.dumps({"cniVersion": "1.0.0", "run_dir": str(tmp_path)}))
    assert rc == 1 and out["code"] == 11 and str(tmp_path / "cni.sock") in out["msg"]
    assert time.monotonic() - started < 5


def test_same_request_and_answer_through_the_agent_socket(plugins: dict[str, Path], agent: Any) -> None:
    run_dir, seen, answer = agent
    conf = (
        '{"cniVersion": "1.0.0",\n "name": "k8s-pod-network", "type": "felixpy",\n "run_dir": "'
        + run_dir
        + '"}'
    )
    outputs = [run(plugins[kind], ENV, conf) for kind in ("c", "python")]
    assert outputs[0] == outputs[1] and outputs[0][0] == 0
    assert outputs[0][1] == answer["result"]
    assert seen[0] == seen[1]  # the same request, field for field
    assert seen[0]["args"] == ENV["CNI_ARGS"] and seen[0]["config"]["run_dir"] == run_dir
    # DEL: "0" alone, nothing printed; an error: the CNI error object and exit 1
    answer.clear()
    answer["result"] = None
    del_env = {**ENV, "CNI_COMMAND": "DEL"}
    assert run(plugins["c"], del_env, conf) == run(plugins["python"], del_env, conf) == (0, None, "")
    answer.clear()
    answer["error"] = {"code": 7, "msg": 'bad "thing"', "details": "d\u00e9"}
    errs = [run(plugins[kind], ENV, conf) for kind in ("c", "python")]
    assert errs[0] == errs[1] and errs[0][0] == 1 and errs[0][1]["code"] == 7


def test_undecodable_bytes_reach_the_agent_as_the_python_plugin_sends_them(
    plugins: dict[str, Path], agent: Any
) -> None:
    run_dir, seen, _ = agent
    env = {os.fsencode(k): os.fsencode(v) for k, v in ENV.items()}
    env[b"CNI_ARGS"] = b"K8S_POD_NAME=\xff\xfe-\xc3(-\xe2\x82"
    conf = json.dumps({"cniVersion": "1.0.0", "run_dir": run_dir})
    for kind in ("c", "python"):
        proc = subprocess.run(
            [str(plugins[kind])], env=env, input=conf.encode(), capture_output=True, timeout=30
        )
        assert proc.returncode == 0, proc.stdout
    assert seen[0]["args"] == seen[1]["args"] == os.fsdecode(env[b"CNI_ARGS"])


def test_ipam_name_asks_the_agent_for_ipam_only(plugins: dict[str, Path], agent: Any) -> None:
    """Run as felixpy-ipam (a main plugin's delegate): "plugin": "ipam", the ipam section's run_dir."""
    run_dir, seen, _ = agent
    conf = json.dumps(
        {"cniVersion": "1.0.0", "type": "bridge", "ipam": {"type": "felixpy-ipam", "run_dir": run_dir}}
    )
    rc, out, _ = run(plugins["ipam"], ENV, conf)
    assert rc == 0 and out["ips"][0]["address"] == "10.0.0.5/32"
    assert seen[0]["plugin"] == "ipam" and seen[0]["config"]["type"] == "bridge"
    rc, out, _ = run(plugins["c"], {**ENV, "FELIXPY_RUN_DIR": run_dir}, conf)  # as felixpy: top level only
    assert rc == 0 and "plugin" not in seen[1]


def test_agent_that_hangs_up_at_once_is_an_io_error_not_a_signal(
    plugins: dict[str, Path], tmp_path: Path
) -> None:
    path = str(tmp_path / "cni.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    t = threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True)
    t.start()
    try:
        big = json.dumps({"cniVersion": "1.0.0", "agent_socket": path, "pad": "x" * (4 << 20)})
        rc, out, _ = run(plugins["c"], ENV, big)
        assert rc == 1 and out["code"] in (5, 11) and path in out["msg"]
    finally:
        t.join(5)
        srv.close()


def test_answer_line_is_enough_without_waiting_for_the_close(
    plugins: dict[str, Path], tmp_path: Path
) -> None:
    """The agent's thread may close its end late (a busy interpreter): the line is the answer."""
    path = str(tmp_path / "cni.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    release = threading.Event()

    def serve() -> None:
        conn = srv.accept()[0]
        conn.recv(65536)
        conn.sendall(b'0 {"cniVersion": "1.0.0", "ips": []}\n')
        release.wait(10)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        rc, out, _ = run(plugins["c"], ENV, json.dumps({"cniVersion": "1.0.0", "agent_socket": path}))
        assert rc == 0 and out == {"cniVersion": "1.0.0", "ips": []}
        assert time.monotonic() - started < 5
    finally:
        release.set()
        t.join(5)
        srv.close()


def test_agent_that_never_answers_is_code_11_after_the_timeout(
    plugins: dict[str, Path], tmp_path: Path
) -> None:
    path = str(tmp_path / "cni.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    held: list[socket.socket] = []
    t = threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        conf = json.dumps({"cniVersion": "1.0.0", "agent_socket": path, "timeout_seconds": 0.5})
        started = time.monotonic()
        rc, out, _ = run(plugins["c"], ENV, conf)
        assert rc == 1 and out["code"] == 11 and "did not answer in 0.5s" in out["msg"]
        assert time.monotonic() - started < 10
    finally:
        t.join(5)
        for s in [*held, srv]:
            s.close()


def test_log_file_gets_one_line_per_request(plugins: dict[str, Path], agent: Any, tmp_path: Path) -> None:
    run_dir, _, _ = agent
    log = tmp_path / "log" / "cni" / "cni.log"
    conf = json.dumps({"cniVersion": "1.0.0", "run_dir": run_dir, "log_file_path": str(log)})
    run(plugins["c"], ENV, conf)
    run(plugins["c"], {**ENV, "CNI_COMMAND": "DEL"}, conf)
    missing = json.dumps(
        {"cniVersion": "1.0.0", "run_dir": str(tmp_path / "none"), "log_file_path": str(log)}
    )
    run(plugins["c"], ENV, missing)
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and (log.stat().st_mode & 0o777) == 0o600
    assert "command=ADD" in lines[0] and 'containerID="abc"' in lines[0] and "exit=0" in lines[0]
    assert "10.0.0.5/32" in lines[0] and "command=DEL" in lines[1]
    assert "exit=1" in lines[2] and "felixpy agent is not running" in lines[2]
