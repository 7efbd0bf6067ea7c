"""Run ExaBGP (``python -m bgp.exabgp_launch server <conf>``) with one hot spot made cheap.

Every route a process announces is copied once per neighbour it goes to
(``Neighbor.remove_self``, so "next-hop self" can be rewritten per session), and that copy is
a ``copy.deepcopy`` of the NLRI *and* the attributes: about half of ExaBGP's CPU when a route
reflector fans 10,000 routes out to several clients (profiled: 16,000 deep copies took 8 s of
19 s). The replacement copies what the outgoing RIB then changes — the change, its NLRI
(``action``, ``nexthop`` are reassigned there), and the attributes only when "next-hop self"
rewrites NEXT_HOP — and shares the rest, as ExaBGP already does between the NLRIs of one
``announce attributes ... nlri`` command. Applied only to the version it was read from;
anything else runs unpatched. With ``FELIXPY_BGP_WIRE=1`` (route reflectors) it also installs
``bgp.exabgp_wire``: UPDATEs pass as bytes between the agent and the socket. Everything else is
ExaBGP's own ``main``.

A second patch lets a slow reactor (``exabgp.reactor.speed`` > 1, for low idle CPU) keep its
burst throughput: the main loop sleeps up to speed/100 s in ``poll()`` whenever it has nothing
to do *by its own account*, and it does not count the API commands it has queued but not run
yet (``Reactor.asynchronous``, at most 50 steps per turn). With work queued the poll does not
wait; with none it waits as ExaBGP would (peer sockets and API pipes still wake it at once).

A third keeps an idle speaker asleep (issue 15, idle CPU). ExaBGP's loop gives every peer a turn
on every wake-up, so at speed/100 s its idle cost was wake rate x peers. When nothing is in
flight -- no API work queued, no peer asked for another turn, every running peer Established
(or waiting out its reconnect back-off, whose end bounds the sleep) -- the poll waits up to
``IDLE_WAIT_MS``. What could need ExaBGP sooner wakes it at once: peer sockets and API pipes (as
before), and now also its listening sockets and any signal (SIGUSR1 reload, SIGTERM), through an
epoll set (``set_wakeup_fd`` for signals) registered in the loop's own poller. What the longer
sleep still bounds: sending a KEEPALIVE (hold time / 3, so <= 1 s late of 30 s) and noticing an
expired hold timer (<= 1 s late of 90 s; BFD is the fast detector).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

PATCHED_VERSIONS = ("5.0.15",)
_ORIGINAL: Any = None  # ExaBGP's own remove_self, once patched


def _remove_self(neighbor: Any, changes: Any) -> Any:
    from exabgp.bgp.message.update.attribute import Attribute, NextHop

    change = copy.copy(changes)
    change.nlri = copy.copy(changes.nlri)
    if not change.nlri.nexthop.SELF:
        return change
    neighbor_self = neighbor.ip_self(change.nlri.afi)
    change.nlri.nexthop = neighbor_self
    if Attribute.CODE.NEXT_HOP in change.attributes:
        change.attributes = copy.copy(changes.attributes)
        change.attributes[Attribute.CODE.NEXT_HOP] = NextHop(str(neighbor_self), neighbor_self.pack())
    return change


def patch() -> bool:
    """Install the cheaper copy when the installed ExaBGP is one it was written for."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.version import version

    global _ORIGINAL
    if version not in PATCHED_VERSIONS or not hasattr(Neighbor, "remove_self"):
        return False
    if Neighbor.remove_self is not _remove_self:
        _ORIGINAL = Neighbor.remove_self
    Neighbor.remove_self = _remove_self
    return True


_ORIGINAL_WAIT: Any = None  # ExaBGP's own Reactor._wait_for_io, once patched


IDLE_WAIT_MS = 1000  # longest poll when idle: keepalives (30 s at hold 90) go out <= 1 s late


class _Wakeups:
    """An epoll set, in the reactor's poller, of what must wake an idle loop that ExaBGP does not poll.

    Its listening sockets (a peer connecting in) and a pipe that receives a byte on every signal
    (``signal.set_wakeup_fd``). Level-triggered: a pending connection keeps waking the loop until
    the listener accepts it on the next turn.
    """

    def __init__(self, reactor: Any) -> None:
        import select
        import signal

        self.epoll = select.epoll()
        self.listening: dict[int, Any] = {}
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        os.set_blocking(self.pipe_w, False)
        try:
            signal.set_wakeup_fd(self.pipe_w, warn_on_full_buffer=False)
            self.epoll.register(self.pipe_r, select.EPOLLIN)
        except ValueError:  # not the main thread (tests): signals are then not ExaBGP's to take
            pass
        self.fd = self.epoll.fileno()
        reactor._poller.register(self.fd, select.POLLIN)

    def sync(self, listener: Any) -> None:
        """Follow the listening sockets (a reload may open or close some)."""
        import select

        current = {}
        for sock in getattr(listener, "_sockets", {}) if listener is not None else {}:
            fd = sock.fileno()
            if fd >= 0:
                current[fd] = sock
        for fd, sock in list(self.listening.items()):
            if current.get(fd) is not sock:
                del self.listening[fd]
                with contextlib.suppress(OSError):  # closed sockets leave an epoll set by themselves
                    self.epoll.unregister(fd)
        for fd, sock in current.items():
            if fd not in self.listening:
                try:
                    self.epoll.register(fd, select.EPOLLIN)
                except FileExistsError:
                    self.epoll.modify(fd, select.EPOLLIN)
                self.listening[fd] = sock

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.pipe_r, 512):
                pass


def _idle_wait_ms(reactor: Any) -> float | None:
    """How long an idle loop may sleep, or None when a peer is on its way somewhere (ExaBGP's timer)."""
    from exabgp.bgp.fsm import FSM

    if reactor.signal.received:
        return None
    wait = float(IDLE_WAIT_MS)
    now = time.time()
    for peer in reactor._peers.values():
        if peer.stopping() or peer._teardown:
            return None
        if peer.neighbor["passive"] and not peer.proto:
            continue  # not run by the loop at all until a connection comes in (listener)
        if peer.generator:
            if peer.fsm == FSM.ESTABLISHED:
                continue
            return None  # connecting, OPEN/KEEPALIVE exchange: ExaBGP polls these by its timer
        if peer.generator is None and peer._restart:  # waiting out the reconnect back-off
            wait = min(wait, max(0.0, (peer._delay._time - now) * 1000.0) + 1.0)
    return wait


def _wait_for_io(self: Any, sleeptime: int) -> Any:
    wake = None
    if not self.asynchronous.ready():  # queued API work left: take the next turn now, not in speed/100 s
        sleeptime = 0
    elif sleeptime > 0:
        try:
            idle = _idle_wait_ms(self)
            if idle is not None and idle > sleeptime:
                wake = getattr(self, "_felixpy_wakeups", None)
                if wake is None:
                    wake = self._felixpy_wakeups = _Wakeups(self)
                wake.sync(self.listener)
                sleeptime = int(idle)
        except (AttributeError, KeyError, OSError):  # not a reactor this was written for: ExaBGP's sleep
            wake = None
    wake = wake or getattr(self, "_felixpy_wakeups", None)
    if wake is None:
        return _ORIGINAL_WAIT(self, sleeptime)
    return _filtered(_ORIGINAL_WAIT(self, sleeptime), wake)


def _filtered(fds: Any, wake: _Wakeups) -> Any:
    """ExaBGP's ready fds without ours (its loop maps every fd it is given to a peer)."""
    for fd in fds:
        if fd == wake.fd:
            wake.drain()
            continue
        yield fd


def patch_reactor() -> bool:
    """Do not sleep in poll() while API commands are queued (5.0.15's loop only)."""
    from exabgp.reactor.loop import Reactor
    from exabgp.version import version

    global _ORIGINAL_WAIT
    if version not in PATCHED_VERSIONS or not hasattr(Reactor, "_wait_for_io"):
        return False
    if Reactor._wait_for_io is not _wait_for_io:
        _ORIGINAL_WAIT = Reactor._wait_for_io
    Reactor._wait_for_io = _wait_for_io
    return True


def main() -> int:
    # ExaBGP finds its etc/ from argv[0] (at import): look like the venv's own script
    sys.argv[0] = str(Path(sys.executable).with_name("exabgp"))
    from exabgp.application.main import main as exabgp_main

    patch()
    patch_reactor()
    from bgp import exabgp_wire

    if exabgp_wire.enabled():
        exabgp_wire.install()
    result = exabgp_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
