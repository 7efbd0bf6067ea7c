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
"""

from __future__ import annotations

import copy
import sys
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


def _wait_for_io(self: Any, sleeptime: int) -> Any:
    if not self.asynchronous.ready():  # queued API work left: take the next turn now, not in speed/100 s
        sleeptime = 0
    return _ORIGINAL_WAIT(self, sleeptime)


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
