"""BFD control packets (RFC 5880 §4.1): encode, decode and the reception checks of §6.8.6 (pure).

A decode either returns a ``ControlPacket`` or raises ``BadPacket`` whose ``reason`` is one of
``REASONS`` (the daemon counts drops by it). Times are in microseconds, as on the wire.
The TTL check (RFC 5881 §5 GTSM: single-hop packets must arrive with TTL/hop limit 255; RFC 5883
multihop: at least ``min_ttl``) is done here too, on the value the socket reported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
HEADER_LEN = 24
SINGLE_HOP_PORT = 3784  # RFC 5881
MULTIHOP_PORT = 4784  # RFC 5883
SOURCE_PORTS = (49152, 65535)  # RFC 5881 §4: the source port of control packets
TTL_SINGLE_HOP = 255

ADMIN_DOWN, DOWN, INIT, UP = 0, 1, 2, 3
STATE_NAMES = {ADMIN_DOWN: "AdminDown", DOWN: "Down", INIT: "Init", UP: "Up"}
DIAG_NAMES = {
    0: "none",
    1: "control detection time expired",
    2: "echo function failed",
    3: "neighbor signaled session down",
    4: "forwarding plane reset",
    5: "path down",
    6: "concatenated path down",
    7: "administratively down",
    8: "reverse concatenated path down",
}
REASONS = (
    "short",  # fewer bytes than the mandatory section
    "version",
    "length",  # Length field below 24 (26 with A) or beyond the datagram
    "detect mult 0",
    "multipoint",
    "my discriminator 0",
    "your discriminator 0 while not down",
    "ttl",
    "auth present when not configured",
    "auth missing",
    "unknown session",  # your discriminator names no session of ours (daemon)
)
_FMT = struct.Struct("!BBBBIIIII")
_P, _F, _C, _A, _D, _M = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


class BadPacket(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ControlPacket:
    state: int
    detect_mult: int
    my_disc: int
    your_disc: int
    desired_min_tx: int  # µs
    required_min_rx: int  # µs
    required_min_echo_rx: int = 0  # µs; we never do echo
    diag: int = 0
    poll: bool = False
    final: bool = False
    cpi: bool = False  # C: control plane independent
    auth: bool = False
    demand: bool = False
    multipoint: bool = False
    version: int = VERSION
    length: int = HEADER_LEN

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


def encode(p: ControlPacket) -> bytes:
    flags = (
        (p.state & 0x3) << 6
        | (_P if p.poll else 0)
        | (_F if p.final else 0)
        | (_C if p.cpi else 0)
        | (_A if p.auth else 0)
        | (_D if p.demand else 0)
        | (_M if p.multipoint else 0)
    )
    return _FMT.pack(
        (p.version & 0x7) << 5 | (p.diag & 0x1F),
        flags,
        p.detect_mult,
        p.length,
        p.my_disc,
        p.your_disc,
        p.desired_min_tx,
        p.required_min_rx,
        p.required_min_echo_rx,
    )


def decode(
    data: bytes,
    *,
    ttl: int | None = None,
    single_hop: bool = True,
    min_ttl: int = 254,
    auth_configured: bool = False,
) -> ControlPacket:
    """One received datagram → packet, or ``BadPacket`` (RFC 5880 §6.8.6 checks that need no session)."""
    if len(data) < HEADER_LEN:
        raise BadPacket("short")
    vd, flags, mult, length, mine, yours, tx, rx, echo = _FMT.unpack_from(data)
    if vd >> 5 != VERSION:
        raise BadPacket("version")
    auth = bool(flags & _A)
    if length < (HEADER_LEN + 2 if auth else HEADER_LEN) or length > len(data):
        raise BadPacket("length")
    if ttl is not None and (ttl != TTL_SINGLE_HOP if single_hop else ttl < min_ttl):
        raise BadPacket("ttl")
    if mult == 0:
        raise BadPacket("detect mult 0")
    if flags & _M:
        raise BadPacket("multipoint")
    if mine == 0:
        raise BadPacket("my discriminator 0")
    state = flags >> 6
    if yours == 0 and state not in (DOWN, ADMIN_DOWN):
        raise BadPacket("your discriminator 0 while not down")
    if auth and not auth_configured:
        raise BadPacket("auth present when not configured")
    if not auth and auth_configured:
        raise BadPacket("auth missing")
    return ControlPacket(
        state=state,
        detect_mult=mult,
        my_disc=mine,
        your_disc=yours,
        desired_min_tx=tx,
        required_min_rx=rx,
        required_min_echo_rx=echo,
        diag=vd & 0x1F,
        poll=bool(flags & _P),
        final=bool(flags & _F),
        cpi=bool(flags & _C),
        auth=auth,
        demand=bool(flags & _D),
        multipoint=False,
        length=length,
    )
