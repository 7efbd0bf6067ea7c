"""socketserver loops that sleep until a client comes (issue 15: an idle agent's CPU).

``BaseServer.serve_forever`` wakes every ``poll_interval`` (0.5 s by default) only to see whether
``shutdown()`` was asked for; the agent runs three such servers (health, metrics, CNI), six
wake-ups a second for nothing. ``serve`` polls every ``IDLE_POLL_SECONDS`` instead, and
``shutdown`` does not wait that out: once the server has seen the request (``shutdown()``'s
flag is set), it connects to the server's own address, which wakes its ``select`` at once;
the loop then ends before it accepts (it checks the flag first). A leaf: imports nothing of
the project.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time

IDLE_POLL_SECONDS = 30.0
_FLAG = "_BaseServer__shutdown_request"  # set by BaseServer.shutdown, read by serve_forever


def serve(server: socketserver.BaseServer) -> None:
    """``serve_forever`` with a long poll (the target of the server's thread)."""
    server.serve_forever(poll_interval=IDLE_POLL_SECONDS)


def _poke(server: socketserver.BaseServer) -> None:
    sock = getattr(server, "socket", None)
    if sock is None:
        return
    with contextlib.suppress(OSError), socket.socket(sock.family, sock.type) as client:
        client.settimeout(0.5)
        client.connect(server.server_address)


def shutdown(server: socketserver.BaseServer, timeout: float = 5.0) -> bool:
    """``server.shutdown()`` that returns as soon as the loop has ended; False if it did not in time."""
    stopper = threading.Thread(target=server.shutdown, name="server-shutdown", daemon=True)
    stopper.start()
    deadline = time.monotonic() + timeout
    while stopper.is_alive() and time.monotonic() < deadline:
        if getattr(server, _FLAG, True):
            _poke(server)
        stopper.join(0.05)
    return not stopper.is_alive()
