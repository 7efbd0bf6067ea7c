"""felixpy-cni: the CNI plugin binary (type "felixpy"). Standard library only, on purpose.

The container runtime runs this once per ADD/DEL/CHECK/VERSION. Importing pyroute2 and an
etcd client would cost ~0.5 s per call, so the plugin does no work itself: it validates
the CNI environment, forwards the request as one JSON line over the warm agent's unix
socket and prints the agent's answer. When the agent is not there it fails at once with
CNI error code 11 ("try again later") naming the socket, so the runtime retries.

Socket: config ``agent_socket``, else ``<run_dir>/cni.sock`` (config ``run_dir``, else
env FELIXPY_RUN_DIR, else /var/run/felixpy).

Wire format (one JSON object per direction, newline-terminated)::

    -> {"command", "containerID", "netns", "ifname", "args", "path", "config"}
    <- {"result": {...}} | {"error": {"code", "msg", "details"}}
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_RUN_DIR = "/var/run/felixpy"
# CNI spec error codes.
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}


def socket_path(config: dict[str, Any], environ: dict[str, str]) -> str:
    if config.get("agent_socket"):
        return str(config["agent_socket"])
    run_dir = config.get("run_dir") or environ.get("FELIXPY_RUN_DIR") or DEFAULT_RUN_DIR
    return os.path.join(str(run_dir), "cni.sock")


def build_request(command: str, config: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    required = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if command in ("ADD", "CHECK") else [])
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CNIError(ERR_INVALID_ENV, "missing CNI environment variables", ", ".join(missing))
    version = str(config.get("cniVersion", ""))
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            f"unsupported cniVersion {version!r}",
            "supported: " + ", ".join(SUPPORTED_VERSIONS),
        )
    return {
        "command": command,
        "containerID": environ["CNI_CONTAINERID"],
        "netns": environ.get("CNI_NETNS", ""),
        "ifname": environ["CNI_IFNAME"],
        "args": environ.get("CNI_ARGS", ""),
        "path": environ.get("CNI_PATH", ""),
        "config": config,
    }


def call_agent(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise CNIError(ERR_TRY_AGAIN, f"felixpy agent is not running (socket {path})", str(exc)) from exc
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except TimeoutError as exc:
        raise CNIError(
            ERR_TRY_AGAIN, f"felixpy agent did not answer in {timeout:g}s (socket {path})"
        ) from exc
    except OSError as exc:
        raise CNIError(ERR_IO, f"talking to the felixpy agent at {path} failed", str(exc)) from exc
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise CNIError(ERR_IO, f"bad answer from the felixpy agent at {path}", str(exc)) from exc


def run(environ: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """One invocation: returns (exit code, JSON to print or None)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, {"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}
    version = "1.0.0"
    try:
        try:
            config = json.loads(stdin or "{}")
        except ValueError as exc:
            raise CNIError(ERR_DECODE, "network configuration is not valid JSON", str(exc)) from exc
        if not isinstance(config, dict):
            raise CNIError(ERR_INVALID_CONFIG, "network configuration must be a JSON object")
        version = str(config.get("cniVersion") or version)
        if command not in ("ADD", "DEL", "CHECK"):
            raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
        request = build_request(command, config, environ)
        answer = call_agent(socket_path(config, environ), request, float(config.get("timeout_seconds", 120)))
    except CNIError as exc:
        return 1, exc.to_json(version if version in SUPPORTED_VERSIONS else "1.0.0")
    if "error" in answer:
        err = answer["error"]
        return 1, {
            "cniVersion": version,
            "code": err.get("code", 999),
            "msg": err.get("msg", ""),
            "details": err.get("details", ""),
        }
    return 0, answer.get("result")


def main() -> None:
    stdin = "" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.read()
    code, out = run(dict(os.environ), stdin)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
