"""A bounded TCP and UDP responder for probes, run inside a pod's namespace.

``python -m felixpy.lab.responder --ports 80,81 [--lifetime S]``: on every port, TCP
connections get one byte (``.``) and are closed; UDP datagrams are echoed back, so a UDP
probe can tell "connected" (an answer) from "blocked" (silence). One thread, one selector;
it exits after ``--lifetime`` seconds (default a day) so nothing runs forever. Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
import time

MAX_DATAGRAM = 2048


def _listen(port: int) -> tuple[socket.socket, socket.socket]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(64)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    udp.setblocking(False)
    return tcp, udp


def _on_tcp(sock: socket.socket) -> None:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return
    with conn:
        conn.settimeout(0.5)
        with contextlib.suppress(OSError):
            conn.sendall(b".")


def _on_udp(sock: socket.socket) -> None:
    try:
        data, peer = sock.recvfrom(MAX_DATAGRAM)
        sock.sendto(data or b".", peer)
    except OSError:
        pass


def serve(ports: list[int], lifetime: float) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        tcp, udp = _listen(port)
        sel.register(tcp, selectors.EVENT_READ, _on_tcp)
        sel.register(udp, selectors.EVENT_READ, _on_udp)
    print(f"responder: tcp+udp on {ports} for {lifetime:.0f}s", flush=True)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            key.data(key.fileobj)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", required=True, help="comma-separated ports")
    ap.add_argument("--lifetime", type=float, default=86400.0)
    args = ap.parse_args()
    ports = [int(p) for p in args.ports.split(",") if p]
    if not ports or any(not 0 < p < 65536 for p in ports):
        sys.exit("responder: bad --ports")
    serve(ports, args.lifetime)


if __name__ == "__main__":
    main()
