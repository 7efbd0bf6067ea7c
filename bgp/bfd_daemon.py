"""``felixpy-bfd``: the BFD daemon (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5883 multihop).

Its own process, started by the agent's BGP service and adopted again by the next agent, so a
restart (SIGTERM or kill -9) of the agent or of ExaBGP leaves every BFD session Up: forwarding
does not depend on them, which is what the C bit (control plane independent) we send says.

Control: a unix socket (0600) speaking JSON lines. The client sends
``{"op": "configure", "sessions": [SessionConfig...]}`` (the full desired set, latest wins) and
``{"op": "status"}``; the daemon sends ``{"hello": ...}`` with a status snapshot on connect,
``{"event": "state", ...}`` on every state change and ``{"status": [...], "drops": {...}}``
when asked. With no client for ``--orphan-timeout`` seconds (the agent is gone for good) the
daemon tells its peers AdminDown and exits; SIGTERM does the same. AdminDown is not a failure
to the peer (RFC 5882 §3.2): its routes stay.

Sockets: single-hop packets leave with TTL/hop limit 255 and arrive on port 3784 where any
other TTL is dropped (GTSM); multihop ones use port 4784 and need TTL >= 254 (FRR's default
minimum-ttl). Each session sends from its own source port in 49152-65535.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgp import bfd_packet as bp
from bgp.bfd_session import Change, Session, Timers

log = logging.getLogger("bgp.bfd")
ORPHAN_TIMEOUT = 600.0
RECHECK_SECONDS = 5.0  # retry sessions that could not bind, re-check directly-connected
MAX_WAIT = 1.0
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux value; Python's socket module lacks it


@dataclass(frozen=True, slots=True)
class SessionConfig:
    peer: str
    local: str | None = None
    mode: str = "auto"  # auto: single-hop if the peer is on a link, else multihop; direct: only if on a link
    min_tx: int = 300_000  # µs
    min_rx: int = 300_000
    multiplier: int = 3
    idle_tx: int = 1_000_000
    passive: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SessionConfig:
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        cfg = cls(**known)
        ipaddress.ip_address(cfg.peer)
        return cfg

    @property
    def timers(self) -> Timers:
        return Timers(self.min_tx, self.min_rx, self.multiplier, self.idle_tx, self.passive)


@dataclass
class _Entry:
    config: SessionConfig
    session: Session | None = None
    sock: socket.socket | None = None
    multihop: bool = False
    error: str = ""
    packets_in: int = 0
    packets_out: int = 0
    ups: int = 0
    downs: int = 0


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    lines: list[bytes] = field(default_factory=list)


def directly_connected(peer: str) -> tuple[bool, str | None]:
    """(on a link, our source address towards it) from the kernel's route lookup (``ip route get``)."""
    out = subprocess.run(["ip", "-j", "route", "get", peer], capture_output=True, text=True, timeout=5)
    if out.returncode != 0:  # no route (unreachable): not now
        return False, None
    [route] = json.loads(out.stdout)[:1] or [{}]
    return "gateway" not in route and route.get("type", "unicast") == "unicast", route.get("prefsrc")


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class Daemon:
    def __init__(self, socket_path: str, *, orphan_timeout: float = ORPHAN_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.orphan_timeout = orphan_timeout
        self.entries: dict[str, _Entry] = {}
        self.by_disc: dict[int, _Entry] = {}
        self.drops: Counter[str] = Counter()
        self._rx: dict[tuple[int, bool], socket.socket] = {}
        self._clients: list[_Client] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._alone_since = time.monotonic()
        self._rng = random.SystemRandom()
        self._lookup = directly_connected

    # --- configuration -------------------------------------------------------------------
    def configure(self, configs: list[SessionConfig]) -> None:
        now = time.monotonic()
        wanted = {c.peer: c for c in configs}
        for peer in list(self.entries):
            if peer not in wanted:
                self._remove(peer, now)
        for peer, cfg in wanted.items():
            entry = self.entries.get(peer)
            if entry is None or entry.config.local != cfg.local or entry.config.mode != cfg.mode:
                if entry is not None:
                    self._remove(peer, now)
                entry = self.entries[peer] = _Entry(cfg)
                self._open(entry, now)
            else:
                entry.config = cfg
                if entry.session is not None:
                    entry.session.configure(cfg.timers, now)
        self._wake.set()

    def _open(self, entry: _Entry, now: float) -> None:
        cfg = entry.config
        try:
            direct, source = self._lookup(cfg.peer)
        except Exception as exc:  # a route lookup never stops the daemon
            direct, source = False, None
            log.warning("bfd route lookup for %s failed: %s", cfg.peer, exc)
        if cfg.mode == "direct" and not direct:
            entry.error = "not directly connected"
            return
        entry.multihop = not direct
        local = cfg.local or source
        if entry.multihop and not local:
            entry.error = "no local address for a multihop session"
            return
        try:
            entry.sock = self._tx_socket(cfg.peer, local)
            self._rx_socket(_family(cfg.peer), entry.multihop)
        except OSError as exc:
            entry.error = f"socket: {exc.strerror or exc}"
            if entry.sock is not None:
                entry.sock.close()
                entry.sock = None
            return
        entry.error = ""
        disc = self._rng.randrange(1, 2**32)
        while disc in self.by_disc:
            disc = self._rng.randrange(1, 2**32)
        entry.session = Session(cfg.timers, disc, now=now)
        self.by_disc[disc] = entry
        hop = "multihop" if entry.multihop else "single-hop"
        log.info("bfd session to %s configured (%s, local %s, discriminator %d)", cfg.peer, hop, local, disc)

    def _remove(self, peer: str, now: float) -> None:
        entry = self.entries.pop(peer)
        if entry.session is not None:
            entry.session.admin_down(now)
            self._send(entry, now)
            self.by_disc.pop(entry.session.local_disc, None)
            log.info("bfd session to %s removed (peer told AdminDown)", peer)
        if entry.sock is not None:
            entry.sock.close()

    def _tx_socket(self, peer: str, local: str | None) -> socket.socket:
        fam = _family(peer)
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if fam == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, bp.TTL_SINGLE_HOP)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, bp.TTL_SINGLE_HOP)
            sock.setblocking(False)
            for _ in range(64):
                port = self._rng.randint(*bp.SOURCE_PORTS)
                try:
                    sock.bind((local or "", port))
                    return sock
                except OSError as exc:
                    if exc.errno != 98:  # EADDRINUSE: another port
                        raise
            raise OSError("no free source port in 49152-65535")
        except OSError:
            sock.close()
            raise

    def _rx_socket(self, fam: int, multihop: bool) -> None:
        if (fam, multihop) in self._rx:
            return
        sock = socket.socket(fam, socket.SOCK_DGRAM)  # no SO_REUSEADDR: a second BFD daemon must fail here
        if fam == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        port = bp.MULTIHOP_PORT if multihop else bp.SINGLE_HOP_PORT
        try:
            sock.bind(("", port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._rx[(fam, multihop)] = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, sock, multihop)

    # --- packets -------------------------------------------------------------------------
    def _on_readable(self, sock: socket.socket, multihop: bool) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, addr = sock.recvmsg(512, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("bfd receive failed: %s", exc)
                return
            ttl = None
            for level, kind, value in anc:
                if (level, kind) in (
                    (socket.IPPROTO_IP, socket.IP_TTL),
                    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
                ):
                    ttl = int.from_bytes(value[:4], sys.byteorder)
            self._receive(data, str(addr[0]).split("%")[0], ttl, multihop)

    def _receive(self, data: bytes, source: str, ttl: int | None, multihop: bool) -> None:
        try:
            pkt = bp.decode(data, ttl=ttl, single_hop=not multihop)
        except bp.BadPacket as exc:
            self._drop(exc.reason, source)
            return
        entry = self.by_disc.get(pkt.your_disc) if pkt.your_disc else self.entries.get(source)
        if (
            entry is None
            or entry.session is None
            or entry.config.peer != source
            or entry.multihop != multihop
        ):
            self._drop("unknown session", source)
            return
        now = time.monotonic()
        entry.packets_in += 1
        self._changed(entry, entry.session.receive(pkt, now))
        self._wake.set()

    def _drop(self, reason: str, source: str) -> None:
        self.drops[reason] += 1
        if self.drops[reason] in (1, 10, 100, 1000) or self.drops[reason] % 10000 == 0:
            log.warning("bfd packet from %s dropped: %s (%d so far)", source, reason, self.drops[reason])

    def _send(self, entry: _Entry, now: float) -> None:
        session, sock = entry.session, entry.sock
        if session is None or sock is None:
            return
        pkt = session.due(now)
        while pkt is not None:
            port = bp.MULTIHOP_PORT if entry.multihop else bp.SINGLE_HOP_PORT
            try:
                sock.sendto(bp.encode(pkt), (entry.config.peer, port))
                entry.packets_out += 1
            except OSError as exc:  # no route, link down: the detection timer decides
                log.debug("bfd send to %s failed: %s", entry.config.peer, exc)
            pkt = session.due(now)

    def _changed(self, entry: _Entry, changes: list[Change]) -> None:
        for change in changes:
            if change.new == bp.UP:
                entry.ups += 1
            elif change.old == bp.UP:
                entry.downs += 1
            event = {
                "event": "state",
                "peer": entry.config.peer,
                "old": bp.STATE_NAMES[change.old],
                "state": bp.STATE_NAMES[change.new],
                "diag": change.diag,
                "diag_text": bp.DIAG_NAMES.get(change.diag, str(change.diag)),
                "remote_cpi": change.remote_cpi,
                "remote_state": bp.STATE_NAMES[entry.session.remote_state] if entry.session else "Down",
                "time": time.time(),
            }
            level = logging.WARNING if change.old == bp.UP else logging.INFO
            log.log(
                level,
                "bfd session to %s %s -> %s (%s)",
                event["peer"],
                event["old"],
                event["state"],
                event["diag_text"],
            )
            self._broadcast(event)

    # --- time ----------------------------------------------------------------------------
    async def _timers(self) -> None:
        next_check = time.monotonic() + RECHECK_SECONDS
        while not self._stop.is_set():
            now = time.monotonic()
            for entry in list(self.entries.values()):
                if entry.session is not None:
                    self._changed(entry, entry.session.expire(now))
                    self._send(entry, now)
            if now >= next_check:
                next_check = now + RECHECK_SECONDS
                self._recheck(now)
            wake = [
                t for e in self.entries.values() if e.session for t in (e.session.wakeup(),) if t is not None
            ]
            delay = min([MAX_WAIT, *(t - time.monotonic() for t in wake)])
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    def _recheck(self, now: float) -> None:
        for entry in self.entries.values():
            if entry.session is None:
                self._open(entry, now)
        if self._clients:
            self._alone_since = now
        elif self.orphan_timeout > 0 and now - self._alone_since > self.orphan_timeout:
            log.warning("bfd: no agent for %.0fs; telling peers AdminDown and exiting", self.orphan_timeout)
            self._stop.set()

    # --- control socket ------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        now, wall = time.monotonic(), time.time()
        out = []
        for peer, e in sorted(self.entries.items()):
            s = e.session
            out.append(
                {
                    "peer": peer,
                    "local": e.config.local,
                    "multihop": e.multihop,
                    "state": bp.STATE_NAMES[s.state] if s else "Down",
                    "remote_state": bp.STATE_NAMES[s.remote_state] if s else "Down",
                    "diag": bp.DIAG_NAMES.get(s.diag, str(s.diag)) if s else "",
                    "since": wall - (now - s.since) if s else 0.0,
                    "detect_time": s.detection_time() if s else 0.0,
                    "tx_interval": s.tx_interval() if s else 0.0,
                    "remote_cpi": s.remote_cpi if s else False,
                    "local_disc": s.local_disc if s else 0,
                    "remote_disc": s.remote_disc if s else 0,
                    "packets_in": e.packets_in,
                    "packets_out": e.packets_out,
                    "ups": e.ups,
                    "downs": e.downs,
                    "error": e.error,
                }
            )
        return out

    def _broadcast(self, doc: dict[str, Any]) -> None:
        line = (json.dumps(doc) + "\n").encode()
        for client in list(self._clients):
            try:
                client.writer.write(line)
            except (ConnectionError, RuntimeError):
                self._clients.remove(client)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self._clients.append(client)
        writer.write((json.dumps({"hello": {"pid": os.getpid()}, "status": self.status()}) + "\n").encode())
        try:
            while line := await reader.readline():
                self._request(writer, line)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)
            self._alone_since = time.monotonic()
            writer.close()

    def _request(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        try:
            doc = json.loads(line)
            op = doc.get("op")
            if op == "configure":
                self.configure([SessionConfig.from_json(d) for d in doc.get("sessions", [])])
                reply: dict[str, Any] = {"ok": "configure"}
            elif op == "status":
                reply = {"status": self.status(), "drops": dict(self.drops)}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except (ValueError, TypeError, AttributeError) as exc:
            reply = {"error": f"bad request: {exc}"}
        writer.write((json.dumps(reply) + "\n").encode())

    async def run(self) -> None:
        path = Path(self.socket_path)
        if _answers(path):
            raise SystemExit(f"felixpy-bfd: another daemon already serves {path}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._serve, path=str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        timers = asyncio.create_task(self._timers())
        log.info("bfd daemon listening on %s (pid %d)", path, os.getpid())
        await self._stop.wait()
        self._wake.set()
        await timers
        now = time.monotonic()
        for peer in list(self.entries):
            self._remove(peer, now)
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("bfd daemon stopped")


def _answers(path: Path) -> bool:
    """Whether a daemon is listening on ``path`` (never take over a live daemon's socket)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def build_parser() -> argparse.ArgumentParser:
    """``felixpy-bfd``'s command line (the Helm chart's sidecar command is checked against it)."""
    parser = argparse.ArgumentParser(prog="felixpy-bfd", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="control socket (created 0600)")
    parser.add_argument("--pid-file", help="write our pid here")
    parser.add_argument(
        "--orphan-timeout",
        type=float,
        default=ORPHAN_TIMEOUT,
        help="exit (peers told AdminDown) after this many seconds without a client; 0 = never "
        "(a sidecar container: its pod, not the agent, bounds its life)",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from felixpy import logs

    logs.configure(args.log_level)
    if args.pid_file:
        from felixpy.private_files import PRIVATE, write_file

        write_file(args.pid_file, str(os.getpid()), PRIVATE)
    asyncio.run(Daemon(args.socket, orphan_timeout=args.orphan_timeout).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
