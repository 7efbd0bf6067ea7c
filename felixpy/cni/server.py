"""The agent's unix socket for felixpy-cni: one JSON request line in, one answer line out.

The answer is ``<exit code> <JSON to print>`` when the request asks for ``"reply": "cni"`` (what
the plugin sends), else the older ``{"result"} | {"error"}`` object; see felixpy.cni.plugin.

A thread per connection (CNI calls for different pods run concurrently; IPAM and the
datastore resolve races with compare-and-swap, and the writer loop serialises the kernel).
"""

from __future__ import annotations

import contextlib
import json
import os
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import structlog

from felixpy.cni.plugin import SUPPORTED_VERSIONS

log = structlog.get_logger(__name__)
MAX_REQUEST = 1 << 20


class _Handler(socketserver.StreamRequestHandler):
    server: CNIServer

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except ValueError as exc:
            answer: dict[str, Any] = {"error": {"code": 6, "msg": "bad request", "details": str(exc)}}
        else:
            answer = self.server.handle_request_json(request)
            if request.get("reply") == "cni":
                self.wfile.write(cni_reply(answer, request.get("config")).encode() + b"\n")
                return
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def cni_reply(answer: dict[str, Any], config: Any) -> str:
    """``<exit code> <JSON the plugin prints>``: the plugin then needs no JSON encoder of its own."""
    if "error" in answer:
        err = answer["error"]
        version = config.get("cniVersion") if isinstance(config, dict) else None
        body = {
            "cniVersion": version if version in SUPPORTED_VERSIONS else "1.0.0",
            "code": err.get("code", 999),
            "msg": err.get("msg", ""),
            "details": err.get("details", ""),
        }
        return "1 " + json.dumps(body)
    result = answer.get("result")
    return "0" if result is None else "0 " + json.dumps(result)


class CNIServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # left by a previous (crashed) agent: we are its successor
        self.path = path
        self.handle_request_json = handle
        super().__init__(path, _Handler)
        os.chmod(path, 0o600)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="felixpy-cni-server", daemon=True)
        thread.start()
        log.info("cni.listening", socket=self.path)
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
