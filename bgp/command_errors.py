"""What an API command ExaBGP answered with ``error`` was about (pure).

ExaBGP acknowledges every command on its API with ``done`` or ``error``, in order
(``exabgp.api.ack``). An ``error`` means the command changed nothing: a withdrawal that errored
leaves the route announced, an announcement leaves the peer without it. ``bgp.channel`` pairs
each ack with the command it answers; the engine then asks this module which sessions and which
prefixes the failed command named, marks exactly those as unknown in its Adj-RIB-Out and
re-sends what it wants *now* for them (so a later command for the same prefix is never undone).

Commands are the ones ``bgp.exabgp_api`` writes:
``neighbor A [, neighbor B ...] announce|withdraw attributes ... nlri P1 P2 ...``,
``neighbor A ... felixpy-wire HEX ...`` (whole UPDATE messages), ``neighbor A announce eor FAMILY``
and ``neighbor A teardown N``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgp.exabgp_api import WIRE_COMMAND
from bgp.wire import HEADER_LEN, decode_update


@dataclass(frozen=True, slots=True)
class FailedCommand:
    """``kind``: "routes" (announce/withdraw, text or wire), "eor", "teardown" or "other".
    ``prefixes`` is None when the command named prefixes that could not be read back (every
    route sent to ``peers`` is then in doubt); ``family`` is the End-of-RIB's."""

    kind: str
    peers: tuple[str, ...] = ()
    prefixes: frozenset[str] | None = frozenset()
    family: str = ""


def _split_neighbors(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """``neighbor a , neighbor b rest...`` → ((a, b), rest)."""
    peers: list[str] = []
    i = 0
    while i + 1 < len(words) and words[i] == "neighbor":
        peers.append(words[i + 1])
        i += 2
        if i < len(words) and words[i] == ",":
            i += 1
    return tuple(peers), words[i:]


def _wire_prefixes(hexes: list[str]) -> frozenset[str] | None:
    found: set[str] = set()
    try:
        for word in hexes:
            update = decode_update(bytes.fromhex(word)[HEADER_LEN:])
            found.update(update.announce, update.withdraw, update.announce6, update.withdraw6)
    except ValueError:
        return None
    return frozenset(found)


def classify(line: str) -> FailedCommand:
    peers, rest = _split_neighbors(line.split())
    if not peers or not rest:
        return FailedCommand("other")
    verb = rest[0]
    if verb == WIRE_COMMAND:
        return FailedCommand("routes", peers, _wire_prefixes(rest[1:]))
    if verb == "teardown":
        return FailedCommand("teardown", peers)
    if verb == "announce" and len(rest) > 2 and rest[1] == "eor":
        return FailedCommand("eor", peers, family=" ".join(rest[2:]))
    if verb in ("announce", "withdraw") and "nlri" in rest:
        return FailedCommand("routes", peers, frozenset(rest[rest.index("nlri") + 1 :]))
    return FailedCommand("other", peers)
