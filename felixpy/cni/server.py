"""The agent's unix socket for felixpy-cni: one JSON request line in, one answer line out.

The answer is ``<exit code> <JSON to print>`` when the request asks for ``"reply": "cni"`` (what
the plugin sends), else the older ``{"result"} | {"error"}`` object; see felixpy.cni.plugin.

A thread per connection (CNI calls for different pods run concurrently; IPAM and the
datastore resolve races with compare-and-swap, and the writer loop serialises the kernel).

Bounded, so a stuck or hostile local client cannot use the agent up (only root reaches the
socket, 0600, but a crashed runtime can leave connections half-open):

- ``read_timeout``: a connection must deliver its request line within this many seconds, and
  take its answer within as many, or it is closed (``cni.connection_timeout``, debug level).
- ``backlog``: the listen queue (the kernel caps it at ``net.core.somaxconn``).
- ``max_connections``: connections open at once; one more is answered CNI error 11 ("try again
  later") at once and closed, without a thread.
- ``max_requests``: requests handled at once; one more waits for a slot (a bounded queue, at most
  ``queue_seconds``), then is answered error 11. Idle connections hold no slot.
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

from felixpy import servers
from felixpy.cni.plugin import SUPPORTED_VERSIONS

log = structlog.get_logger(__name__)
MAX_REQUEST = 1 << 20
READ_TIMEOUT = 10.0
BACKLOG = 1024
MAX_CONNECTIONS = 1024
MAX_REQUESTS = 64
QUEUE_SECONDS = 30.0
ERR_TRY_AGAIN = 11
REFUSE_READ_SECONDS = 0.2  # how long a connection over the cap may take to send before its answer


def _busy(msg: str) -> bytes:
    body = {"cniVersion": "1.0.0", "code": ERR_TRY_AGAIN, "msg": msg, "details": ""}
    return ("1 " + json.dumps(body)).encode() + b"\n"


class _Handler(socketserver.StreamRequestHandler):
    server: CNIServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # reads and writes alike

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST)
        except TimeoutError:
            log.debug("cni.connection_timeout", seconds=self.server.read_timeout, reason="no request line")
            return
        if not line.strip():
            return  # connected and closed without a request (a probe)
        slots = self.server.requests
        if not slots.acquire(timeout=self.server.queue_seconds):
            log.warning(
                "cni.busy",
                in_progress=self.server.max_requests,
                waited_seconds=self.server.queue_seconds,
                action="answered 'try again later' (11)",
            )
            self._write(_busy(f"agent busy: {self.server.max_requests} CNI requests in progress; try again"))
            return
        try:
            self._answer(line)
        finally:
            slots.release()

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except (TimeoutError, OSError) as exc:  # the client went away or stopped reading
            log.debug("cni.answer_not_delivered", error=str(exc))

    def _answer(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        except ValueError as exc:
            answer: dict[str, Any] = {"error": {"code": 6, "msg": "bad request", "details": str(exc)}}
        else:
            answer = self.server.handle_request_json(request)
            if request.get("reply") == "cni":
                self._write(cni_reply(answer, request.get("config")).encode() + b"\n")
                return
        self._write(json.dumps(answer).encode() + b"\n")


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
    request_queue_size = BACKLOG

    def __init__(
        self,
        path: str,
        handle: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        read_timeout: float = READ_TIMEOUT,
        backlog: int = BACKLOG,
        max_connections: int = MAX_CONNECTIONS,
        max_requests: int = MAX_REQUESTS,
        queue_seconds: float = QUEUE_SECONDS,
    ) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # left by a previous (crashed) agent: we are its successor
        self.path = path
        self.handle_request_json = handle
        self.read_timeout = read_timeout
        self.request_queue_size = backlog
        self.max_connections = max_connections
        self.max_requests = max_requests
        self.queue_seconds = queue_seconds
        self.requests = threading.BoundedSemaphore(max_requests)
        self._open = 0
        self._open_lock = threading.Lock()
        super().__init__(path, _Handler)
        os.chmod(path, 0o600)

    @property
    def open_connections(self) -> int:
        return self._open

    def process_request(self, request: Any, client_address: Any) -> None:
        """Accepted (serve_forever's thread): over the connection cap, answer 11 and close at once."""
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            log.warning("cni.connection_refused", open=self.max_connections, reason="connection cap reached")
            with contextlib.suppress(OSError):
                # Take what the client sent first (bounded: this is the accepting thread), so that
                # its write never meets a closed socket and it reads the answer, not EPIPE.
                request.settimeout(REFUSE_READ_SECONDS)
                request.recv(MAX_REQUEST)
            with contextlib.suppress(OSError):
                request.sendall(_busy(f"agent busy: {self.max_connections} CNI connections open; try again"))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed()

    def _closed(self) -> None:
        with self._open_lock:
            self._open -= 1

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=servers.serve, args=(self,), name="felixpy-cni-server", daemon=True)
        thread.start()
        log.info("cni.listening", socket=self.path)
        return thread

    def stop(self) -> None:
        servers.shutdown(self)
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
