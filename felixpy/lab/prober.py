"""Connectivity probes from inside one pod's namespace (stdlib only, fast to start).

``python -m felixpy.lab.prober`` reads ``{"timeout": S, "targets": [{"ip", "port", "proto"}]}``
on stdin and prints one JSON list of ``{"ip", "port", "proto", "connected", "ms", "error"}``.
TCP is connected when the handshake completes; UDP when the responder's echo comes back.
Probes run in a bounded thread pool: waiting on a timeout costs no CPU.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_THREADS = 32


def probe_tcp(ip: str, port: int, timeout: float) -> str:
    with socket.create_connection((ip, port), timeout=timeout):
        return ""


def probe_udp(ip: str, port: int, timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.send(b"probe")
        sock.recv(2048)
    return ""


def probe(target: dict[str, Any], timeout: float) -> dict[str, Any]:
    ip, port, proto = str(target["ip"]), int(target["port"]), str(target.get("proto", "tcp")).lower()
    start = time.monotonic()
    try:
        (probe_udp if proto == "udp" else probe_tcp)(ip, port, timeout)
        connected, error = True, ""
    except TimeoutError:
        connected, error = False, "timeout"
    except OSError as exc:
        connected, error = False, exc.strerror or str(exc)
    ms = round((time.monotonic() - start) * 1000, 1)
    return {"ip": ip, "port": port, "proto": proto, "connected": connected, "ms": ms, "error": error}


def main() -> None:
    request = json.loads(sys.stdin.read())
    timeout = float(request.get("timeout", 1.0))
    targets = list(request.get("targets", []))
    workers = max(1, min(MAX_THREADS, len(targets)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda t: probe(t, timeout), targets))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
