"""The agent's side of ``felixpy-bfd``: find or start the daemon, configure it, relay its events.

The daemon is not the agent's child in lifetime: ``stop`` only closes the connection, so the
sessions stay Up while the agent (or ExaBGP) restarts, and the next agent adopts the running
daemon through its socket (``<run_dir>/bfd.sock``). When the socket does not answer, a daemon is
started (``python -m bgp.bfd_daemon``, in ``netns`` when given) with backoff.

``external`` (``FELIXPY_BFD_EXTERNAL=true``; the Helm chart's ``bfd`` sidecar container): another
container runs the daemon on the shared run directory, so a restart of the agent's container does
not end it. The client then never starts one and never signals one (its pid, in the sidecar's pid
namespace, means nothing here): it waits for the socket, and when nothing answers for
``external_wait`` seconds while sessions are wanted it logs one error naming the socket and keeps
retrying (``external_missing`` is then true).

Thread ``bgp-bfd`` connects, sends the desired sessions (again after every reconnection), turns
every line into a call of ``on_message`` (hello with a status snapshot, state events, status
replies) and asks for status every ``STATUS_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from felixpy.private_files import log_file

log = logging.getLogger(__name__)
SOCKET_NAME = "bfd.sock"
PID_NAME = "bfd.pid"
LOG_NAME = "bfd.log"
STATUS_SECONDS = 2.0
BACKOFF_MAX = 10.0
EXTERNAL_BACKOFF_MAX = 2.0  # a connect attempt is cheap; the sidecar's daemon is adopted within 2 s
EXTERNAL_WAIT = 30.0  # seconds without the sidecar's daemon before the error is logged


class BfdClient:
    def __init__(
        self,
        run_dir: str | Path,
        on_message: Callable[[dict[str, Any]], None],
        *,
        netns: str | None = None,
        python: str = sys.executable,
        orphan_timeout: float | None = None,
        external: bool = False,
        external_wait: float = EXTERNAL_WAIT,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.socket_path = self.run_dir / SOCKET_NAME
        self.pid_path = self.run_dir / PID_NAME
        self._on_message = on_message
        self._netns = netns
        self._python = python
        self._orphan_timeout = orphan_timeout
        self._sessions: list[dict[str, Any]] | None = None  # None: not told yet (keep the daemon's)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._kick = threading.Event()  # sessions to run: start a daemon now rather than after the backoff
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.spawned = 0
        self.connected = threading.Event()
        self.external = external
        self.external_wait = external_wait
        self.external_missing = False  # external, sessions wanted, no daemon for external_wait seconds

    # --- public --------------------------------------------------------------------------
    def configure(self, sessions: list[dict[str, Any]]) -> None:
        with self._lock:
            if sessions == self._sessions:
                return
            self._sessions = sessions
        if not self._send({"op": "configure", "sessions": sessions}):
            self._kick.set()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="bgp-bfd", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect; the daemon keeps running (and keeps the sessions Up)."""
        self._stopping.set()
        self._kick.set()
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(3.0)

    def daemon_pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop_daemon(self, timeout: float = 5.0) -> None:
        """End the daemon (its peers are told AdminDown): uninstall, tests. Not an external one."""
        if self.external:
            log.info("bfd daemon is external (FELIXPY_BFD_EXTERNAL): left running; its container owns it")
            return
        pid = self.daemon_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1.0)

    # --- internals -----------------------------------------------------------------------
    def _send(self, doc: dict[str, Any]) -> bool:
        with self._lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall((json.dumps(doc) + "\n").encode())
                return True
            except OSError:
                return False

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            return None
        return sock

    def _spawn(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return  # ours, still starting
        argv = [
            self._python,
            "-m",
            "bgp.bfd_daemon",
            "--socket",
            str(self.socket_path),
            "--pid-file",
            str(self.pid_path),
        ]
        if self._orphan_timeout is not None:
            argv += ["--orphan-timeout", str(self._orphan_timeout)]
        if self._netns:
            argv = ["ip", "netns", "exec", self._netns, *argv]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")])
        )
        with log_file(self.run_dir / LOG_NAME) as out:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # not in the agent's process group: it outlives the agent
            )
        self.spawned += 1
        log.info("bfd daemon started pid=%s", self._proc.pid)

    def _run(self) -> None:
        backoff = 0.1
        if self.external:
            log.info(
                "bfd daemon is external (FELIXPY_BFD_EXTERNAL): waiting for it on %s; not starting one",
                self.socket_path,
            )
        missing_since: float | None = None  # external: since when sessions are wanted and nothing answers
        while not self._stopping.is_set():
            sock = self._connect()
            if sock is None:
                if self.external:
                    missing_since = self._external_missing(missing_since)
                elif self.daemon_pid() is None and self._sessions:  # no daemon until a session needs one
                    self._spawn()
                self._kick.wait(backoff)
                if self._kick.is_set():
                    self._kick.clear()
                    backoff = 0.05
                backoff = min(backoff * 2, EXTERNAL_BACKOFF_MAX if self.external else BACKOFF_MAX)
                continue
            backoff = 0.1
            if self.external_missing:
                log.info("bfd daemon (external) answers again on %s", self.socket_path)
            missing_since, self.external_missing = None, False
            with self._lock:
                self._sock = sock
                sessions = self._sessions
            if sessions is not None:  # a new agent adopts the daemon's sessions until it knows its own
                self._send({"op": "configure", "sessions": sessions})
            self.connected.set()
            log.info("bfd daemon connected (%s)", self.socket_path)
            try:
                self._read(sock)
            finally:
                self.connected.clear()
                with self._lock:
                    if self._sock is sock:
                        self._sock = None
                sock.close()
            if not self._stopping.is_set():
                log.warning("bfd daemon connection lost; reconnecting")

    def _external_missing(self, since: float | None) -> float | None:
        """Bounded wait for the sidecar's daemon: one error after ``external_wait`` s, then retries."""
        if not self._sessions:
            return None  # nothing to run yet: not missing
        now = time.monotonic()
        if since is None:
            return now
        if not self.external_missing and now - since >= self.external_wait:
            self.external_missing = True
            log.error(
                "bfd daemon (external, FELIXPY_BFD_EXTERNAL) does not answer on %s after %.0fs: "
                "BFD sessions are not running; is the bfd sidecar container up and sharing the run "
                "directory? Retrying",
                self.socket_path,
                now - since,
            )
        return since

    def _read(self, sock: socket.socket) -> None:
        sock.settimeout(STATUS_SECONDS)
        buf = b""
        asked = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - asked >= STATUS_SECONDS:
                asked = time.monotonic()
                self._send({"op": "status"})
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    doc = json.loads(line)
                except ValueError:
                    log.warning("bfd daemon sent an unreadable line: %r", line[:200])
                    continue
                self._on_message(doc)
