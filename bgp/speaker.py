"""Supervise the ExaBGP child: write its config, start it, reload it, restart it with backoff.

Peer-set changes are applied with SIGUSR1 (ExaBGP reloads the file and only touches the
neighbours that changed); a change of listen addresses/port needs a restart because they
come from the environment. A previous agent's orphaned ExaBGP (pid file) is ended first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bgp.exabgp_config import exabgp_env, render_config
from bgp.topology import PeerSpec
from felixpy.private_files import PRIVATE, SECRET, log_file, write_file

log = logging.getLogger(__name__)
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
IDLE_WAIT = 1.0  # bound of the supervisor's wait for a first configuration (configure() wakes it)


def default_exabgp() -> str:
    """An empty string: run ExaBGP through ``bgp.exabgp_launch`` (settings.exabgp = a binary to use one)."""
    return ""


@dataclass
class SpeakerSettings:
    run_dir: Path
    exabgp: str = field(default_factory=default_exabgp)
    python: str = sys.executable
    netns: str | None = None  # run ExaBGP with `ip netns exec` (tests, lab); None = where we are
    reactor_speed: float = 1.0
    log_level: str = "INFO"
    hold_time: int = 90
    wire: bool = False  # raw UPDATEs on iBGP sessions (bgp.exabgp_wire), route reflectors
    env: dict[str, str] = field(default_factory=dict)  # more environment for ExaBGP (tests)


class Speaker:
    def __init__(self, settings: SpeakerSettings, *, socket_path: str) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.config_path = settings.run_dir / "exabgp.conf"
        self.pid_path = settings.run_dir / "exabgp.pid"
        self.log_path = settings.run_dir / "exabgp.log"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._bind: tuple[tuple[str, ...], int, bool] = ((), 179, False)
        self._config = ""
        self._stopping = threading.Event()
        # set by the first configure() and by stop(): the supervisor starts ExaBGP as soon as it has
        # a configuration (it polled every 0.2 s until session 10, up to 0.2 s more on every start)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    # --- public --------------------------------------------------------------------------
    def configure(self, peers: list[PeerSpec], *, bind: list[str], port: int) -> None:
        """Write the config; reload or restart a running ExaBGP only if something changed."""
        command = [self.settings.python, "-m", "bgp.bridge", self.socket_path]
        text = render_config(
            peers, run_command=command, hold_time=self.settings.hold_time, wire=self.settings.wire
        )
        new_bind = (tuple(bind), port, self.settings.wire)
        with self._lock:
            if text == self._config and new_bind == self._bind:
                return
            bind_changed = new_bind != self._bind
            self._config, self._bind = text, new_bind
            write_file(self.config_path, text, SECRET)  # holds the peers' MD5 passwords
            proc = self._proc
        self._wake.set()
        if proc is None or proc.poll() is not None:
            return
        if bind_changed:
            log.info("bgp listen addresses or wire mode changed: restarting exabgp")
            self._signal(proc, signal.SIGTERM)
        else:
            log.info("bgp peer set changed: reloading exabgp")
            self._signal(proc, signal.SIGUSR1)

    def start(self) -> None:
        self._kill_orphan()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="bgp-exabgp", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- internals -----------------------------------------------------------------------
    def _argv(self) -> list[str]:
        launch = [self.settings.python, "-m", "bgp.exabgp_launch"]
        exabgp = [self.settings.exabgp] if self.settings.exabgp else launch
        argv = [*exabgp, "server", str(self.config_path)]
        if self.settings.netns:
            argv = ["ip", "netns", "exec", self.settings.netns, *argv]
        return argv

    def _spawn(self) -> subprocess.Popen[bytes]:
        bind, port, wire = self._bind
        env = dict(os.environ)
        env["FELIXPY_BGP_WIRE"] = "1" if wire else "0"
        env.update(
            exabgp_env(
                bind=list(bind),
                port=port,
                log_level=self.settings.log_level,
                reactor_speed=self.settings.reactor_speed,
            )
        )
        env.update(self.settings.env)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")])
        )
        with log_file(self.log_path) as logfile:
            proc = subprocess.Popen(
                self._argv(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        write_file(self.pid_path, str(proc.pid), PRIVATE)
        return proc

    def _supervise(self) -> None:
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            with self._lock:
                if not self._config:
                    proc = None
                else:
                    proc = self._proc = self._spawn()
            if proc is None:
                self._wake.wait(IDLE_WAIT)  # configure() and stop() set it
                self._wake.clear()
                continue
            started = time.monotonic()
            log.info("exabgp started pid=%s", proc.pid)
            rc = proc.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            backoff = BACKOFF_START if time.monotonic() - started > 60 else min(backoff * 2, BACKOFF_MAX)
            log.warning("exabgp exited rc=%s; restarting in %.1fs", rc, backoff)
            self._stopping.wait(backoff)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    def _kill_orphan(self) -> None:
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"exabgp" not in cmdline or str(self.config_path).encode() not in cmdline:
            return
        log.warning("ending orphaned exabgp pid=%s", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    return
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
