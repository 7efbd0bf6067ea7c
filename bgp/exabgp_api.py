"""ExaBGP 5 API: parse what ExaBGP writes, format what we send (pure).

The stream from ExaBGP is mixed: JSON objects (one per line), bare ``done``/``error`` acks,
and ``show`` output. ``parse_line`` dispatches on the first character. Note that
``neighbor."router-id"`` in ExaBGP's JSON is *our* router ID: the peer's comes only with
the OPEN message.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bgp import wire
from bgp.route import PathAttrs

MAX_NLRI_PER_COMMAND = 100


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool


@dataclass(frozen=True, slots=True)
class StateChange:
    peer: str
    state: str  # connected | up | down
    reason: str = ""
    local: str = ""  # our address on the session


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the session agreed on (ExaBGP sends it before ``up`` when the api asks for it)."""

    peer: str
    asn4: bool
    add_path: bool  # ADD-PATH negotiated in either direction for any family


@dataclass(frozen=True, slots=True)
class Open:
    peer: str
    router_id: str
    asn: int
    graceful_restart_time: int | None  # None: the peer did not offer graceful restart
    hold_time: int = 0  # the peer's offer (the session uses the smaller of both sides')
    capabilities: tuple[str, ...] = ()  # the peer's, by ExaBGP's names ("asn4", "route-refresh", ...)


@dataclass(frozen=True, slots=True)
class Announce:
    prefix: str
    next_hop: str
    path_id: str | None = None


@dataclass(frozen=True, slots=True)
class Update:
    peer: str
    peer_as: int
    attrs: PathAttrs
    announce: tuple[Announce, ...] = ()
    withdraw: tuple[str, ...] = ()
    canonical: bool = False  # prefixes already as normalize_prefix writes them (wire decoder)
    # more announced prefixes, by next hop: what the wire decoder gives (hundreds of prefixes
    # per UPDATE share one next hop; no object per prefix)
    nlri: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def announced(self) -> list[Announce]:
        """Every announced prefix (``announce`` then ``nlri``) with its next hop."""
        return list(self.announce) + [Announce(p, hop) for hop, prefixes in self.nlri for p in prefixes]


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """The peer asked for our routes again (wire mode: ExaBGP cannot answer it itself)."""

    peer: str


@dataclass(frozen=True, slots=True)
class EndOfRib:
    peer: str
    family: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class BridgeNote:
    """Written by our bridge (not ExaBGP): ``dropped`` lines were lost while the agent was away."""

    dropped: int


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """ExaBGP answered ``error`` to ``command`` (paired by ``bgp.channel``): it changed nothing."""

    command: str


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A line from ExaBGP not parsed yet (``ApiChannel(defer_parse=True)``): the agent's service
    thread parses it with ``parse_line``, so the reader thread does not decode UPDATEs under the
    GIL while the engine runs (a reflector's burst: the two threads took turns every switch
    interval and each ran at a fraction of its speed)."""

    line: str


@dataclass(frozen=True, slots=True)
class Other:
    text: str
    data: dict[str, Any] = field(default_factory=dict)


Event = (
    Ack
    | StateChange
    | Negotiated
    | Open
    | Update
    | RouteRefresh
    | EndOfRib
    | Shutdown
    | BridgeNote
    | CommandFailed
    | Unparsed
    | Other
)


def parse_line(line: str) -> Event:
    text = line.strip()
    if text in ("done", "error"):
        return Ack(ok=text == "done")
    if not text.startswith("{"):
        return Other(text)
    try:
        data = json.loads(text)
    except ValueError:
        return Other(text)
    return parse_message(data) if isinstance(data, dict) else Other(text)


def parse_message(data: dict[str, Any]) -> Event:
    kind = data.get("type")
    if kind == "felixpy-bridge":
        return BridgeNote(dropped=int(data.get("dropped", 0)))
    neighbor = data.get("neighbor", {})
    peer = neighbor.get("address", {}).get("peer", "") if isinstance(neighbor, dict) else ""
    if kind == "state":
        local = neighbor.get("address", {}).get("local", "") if isinstance(neighbor, dict) else ""
        return StateChange(peer, neighbor.get("state", ""), neighbor.get("reason", ""), str(local or ""))
    if kind == "felixpy-refresh":
        return RouteRefresh(peer)
    if kind == "negotiated":
        agreed = neighbor.get("negotiated", {})
        add_path = agreed.get("add_path", {})
        return Negotiated(
            peer, bool(agreed.get("asn4")), bool(add_path.get("send") or add_path.get("receive"))
        )
    if kind == "open":
        return _open(peer, neighbor.get("open", {}))
    if kind == "notification" and data.get("notification") == "shutdown":
        return Shutdown()
    if kind == "update":
        message = neighbor.get("message", {})
        if "body" in message:  # wire mode (bgp.exabgp_wire): the UPDATE as it came off the socket
            return _wire_update(peer, int(neighbor.get("asn", {}).get("peer", 0)), message)
        if "eor" in message:
            eor = message["eor"]
            return EndOfRib(peer, f"{eor.get('afi')} {eor.get('safi')}")
        peer_as = int(neighbor.get("asn", {}).get("peer", 0))
        return _update(peer, peer_as, message.get("update", {}))
    return Other(kind or "", data)


def _wire_update(peer: str, peer_as: int, message: dict[str, Any]) -> Event:
    try:
        body = str(message["body"])  # ExaBGP writes "0x" + hex
        decoded = wire.decode_update(bytes.fromhex(body[2:] if body[:2] in ("0x", "0X") else body))
    except (wire.WireError, ValueError) as exc:
        return Other("wire-error", {"peer": peer, "error": str(exc)})
    if decoded.eor:
        return EndOfRib(peer, decoded.eor)
    nlri = tuple(
        (hop, prefixes)
        for hop, prefixes in ((decoded.next_hop, decoded.announce), (decoded.next_hop6, decoded.announce6))
        if prefixes
    )
    return Update(
        peer, peer_as, decoded.attrs, (), decoded.withdraw + decoded.withdraw6, canonical=True, nlri=nlri
    )


def _open(peer: str, open_msg: dict[str, Any]) -> Open:
    gr_time = None
    names: list[str] = []
    for cap in open_msg.get("capabilities", {}).values():
        if not isinstance(cap, dict):
            continue
        name = str(cap.get("name", ""))
        if name == "graceful restart":
            gr_time = int(cap.get("time", 0))
        if name == "multiprotocol":
            names += [f"multiprotocol {f}" for f in cap.get("families", [])]
        elif name and name not in names:
            names.append(name)
    hold = int(open_msg.get("hold_time", 0) or 0)
    return Open(
        peer, str(open_msg.get("router_id", "")), int(open_msg.get("asn", 0)), gr_time, hold, tuple(names)
    )


def parse_attributes(attr: dict[str, Any]) -> PathAttrs:
    as_path: list[int] = []
    segments = attr.get("as-path", {})
    if isinstance(segments, dict):
        for key in sorted(segments, key=lambda k: int(k) if str(k).isdigit() else 0):
            segment = segments[key]
            values = [int(v) for v in segment.get("value", [])]
            # an AS_SET counts as one AS for path length; keep its members for loop detection
            as_path.extend(values)
    elif isinstance(segments, list):
        as_path = [int(v) for v in segments]
    return PathAttrs(
        origin=sys.intern(str(attr.get("origin", "igp"))),
        as_path=tuple(as_path),
        med=attr.get("med"),
        local_pref=attr.get("local-preference"),
        communities=tuple(sys.intern(f"{a}:{b}") for a, b in attr.get("community", [])),
        large_communities=tuple(
            sys.intern(":".join(str(x) for x in c)) for c in attr.get("large-community", [])
        ),
        originator_id=attr.get("originator-id"),
        cluster_list=tuple(attr.get("cluster-list", [])),
    )


def _nlri(item: Any) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    return str(item.get("nlri")), item.get("path-information")


def _update(peer: str, peer_as: int, update: dict[str, Any]) -> Update:
    announce: list[Announce] = []
    for by_nexthop in update.get("announce", {}).values():
        for hop, items in by_nexthop.items():
            next_hop = sys.intern(str(hop))
            for item in items:
                prefix, path_id = _nlri(item)
                announce.append(Announce(prefix, next_hop, path_id))
    withdraw = [_nlri(item)[0] for items in update.get("withdraw", {}).values() for item in items]
    return Update(
        peer, peer_as, parse_attributes(update.get("attribute", {})), tuple(announce), tuple(withdraw)
    )


# --- commands -------------------------------------------------------------------------------


def format_attributes(next_hop: str, attrs: PathAttrs, *, ibgp: bool = True) -> str:
    parts = [f"next-hop {next_hop}", f"origin {attrs.origin}"]
    if attrs.as_path:
        parts.append(f"as-path [ {' '.join(str(a) for a in attrs.as_path)} ]")
    if attrs.med is not None:
        parts.append(f"med {attrs.med}")
    if attrs.local_pref is not None and ibgp:
        parts.append(f"local-preference {attrs.local_pref}")
    if attrs.communities:
        parts.append(f"community [ {' '.join(attrs.communities)} ]")
    if attrs.large_communities:
        parts.append(f"large-community [ {' '.join(attrs.large_communities)} ]")
    if attrs.originator_id and ibgp:
        parts.append(f"originator-id {attrs.originator_id}")
    if attrs.cluster_list and ibgp:
        parts.append(f"cluster-list [ {' '.join(attrs.cluster_list)} ]")
    return " ".join(parts)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def announce_commands(
    neighbor: str,
    next_hop: str,
    attrs: PathAttrs,
    prefixes: Iterable[str],
    *,
    ibgp: bool = True,
    batch: int = MAX_NLRI_PER_COMMAND,
) -> list[str]:
    """``neighbor N announce attributes ... nlri P1 P2 ...`` lines, ``batch`` prefixes each."""
    attributes = format_attributes(next_hop, attrs, ibgp=ibgp)
    return [
        f"neighbor {neighbor} announce attributes {attributes} nlri {' '.join(chunk)}"
        for chunk in _chunks(sorted(prefixes), batch)
    ]


def withdraw_commands(
    neighbor: str, prefixes: Iterable[str], *, batch: int = MAX_NLRI_PER_COMMAND
) -> list[str]:
    by_family: dict[bool, list[str]] = {}
    for prefix in sorted(prefixes):
        by_family.setdefault(":" in prefix, []).append(prefix)
    lines = []
    for v6, items in sorted(by_family.items()):
        hop = "::" if v6 else "0.0.0.0"
        lines += [
            f"neighbor {neighbor} withdraw attributes next-hop {hop} nlri {' '.join(chunk)}"
            for chunk in _chunks(items, batch)
        ]
    return lines


# one UPDATE (<= 4,096 bytes, 8 KB of hex) per command: with ExaBGP reading the API pipe whole
# (bgp.exabgp_wire), reflecting 10,000 routes to 4 clients took 44-55 ms this way and 45-85 ms
# with 16 messages per command (bench/bench_bgp.py --only reflect, 8 runs each)
WIRE_MESSAGES_PER_COMMAND = 1
WIRE_COMMAND = "felixpy-wire"  # bgp.exabgp_wire.COMMAND (that module runs inside ExaBGP)


def wire_commands(neighbor: str, messages: list[str], *, batch: int = WIRE_MESSAGES_PER_COMMAND) -> list[str]:
    """``neighbor N felixpy-wire HEX ...``: complete UPDATE messages (hex) for ``bgp.exabgp_wire``."""
    return [
        f"neighbor {neighbor} {WIRE_COMMAND} {' '.join(messages[i : i + batch])}"
        for i in range(0, len(messages), batch)
    ]


class WireCommands(list[str]):
    """``wire_commands`` lines that also carry their ``messages`` (hex, in order): peers whose
    messages are the very same objects (the advertiser's encoding cache) are merged by identity,
    without hashing or slicing 100 KB of hex per client."""

    def __init__(self, lines: Iterable[str], messages: list[str]) -> None:
        super().__init__(lines)
        self.messages = messages


def merge_wire_commands(per_peer: list[tuple[str, list[str]]]) -> list[str]:
    """Peers whose ``wire_commands`` carry the same messages, in the same order, get them in
    one command each (``neighbor a , neighbor b felixpy-wire ...``): ExaBGP decodes and the
    bridge carries one copy instead of one per reflector client. Each peer's commands keep
    their order; peers with different messages keep their own commands, and lines that are not
    wire commands are passed on as they are."""
    by_payload: dict[tuple[str, ...], list[str]] = {}
    by_identity: dict[tuple[int, ...], tuple[list[str], list[str]]] = {}
    out: list[str] = []
    for neighbor, lines in per_peer:
        if isinstance(lines, WireCommands) and lines.messages:
            key = tuple(map(id, lines.messages))  # the messages are alive while merging
            found = by_identity.get(key)
            if found is None:
                by_identity[key] = (lines.messages, [neighbor])
            else:
                found[1].append(neighbor)
            continue
        prefix = f"neighbor {neighbor} {WIRE_COMMAND} "
        if not all(line.startswith(prefix) for line in lines):
            out += lines
            continue
        payload = tuple(line[len(prefix) :] for line in lines)
        by_payload.setdefault(payload, []).append(neighbor)
    for payload, neighbors in by_payload.items():
        head = " , ".join(f"neighbor {n}" for n in neighbors)
        out += [f"{head} {WIRE_COMMAND} {words}" for words in payload]
    for messages, neighbors in by_identity.values():
        head = " , ".join(f"neighbor {n}" for n in neighbors)
        out += [f"{head} {WIRE_COMMAND} {word}" for word in messages]
    return out


def eor_command(neighbor: str, family: str) -> str:
    return f"neighbor {neighbor} announce eor {family}"


def teardown_command(neighbor: str, subcode: int) -> str:
    """Close one session with a Cease of ``subcode`` (ExaBGP closes silently, without the
    NOTIFICATION, when graceful restart was negotiated); ExaBGP then reconnects."""
    return f"neighbor {neighbor} teardown {subcode}"
