"""Per-peer Adj-RIB-Out as the agent wants it, and the ExaBGP commands to get there (pure).

``outbound`` decides what one prefix looks like towards one peer: our own exports with next
hop self, otherwise the best learned path passed through ``reflect`` (and only inside
exportable pools); then the session's BGPFilter export rules may withhold it.
``Advertiser`` remembers what was sent per peer and turns changes into
batched ``announce attributes``/``withdraw attributes`` commands, grouping prefixes that share
next hop and attributes — or, for a session in wire mode (``bgp.exabgp_wire``), into UPDATE
messages encoded here (``bgp.wire``) and handed to ExaBGP as bytes.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import compress, repeat

from bgp import wire
from bgp.exabgp_api import WireCommands, announce_commands, wire_commands, withdraw_commands
from bgp.filters import PoolInfo, exportable
from bgp.peer_filters import PeerFilter, export_rule, facts_of, operate
from bgp.reflect import NEXT_HOP_SELF, LocalInfo, reflect
from bgp.route import PathAttrs, PeerInfo, Route, family_of
from bgp.topology import PeerSpec

log = logging.getLogger(__name__)
Advert = tuple[str, PathAttrs]  # (next hop, attributes)


def outbound(
    prefix: str,
    peer: PeerSpec,
    to_peer: PeerInfo,
    *,
    exports: Mapping[str, PathAttrs],
    best: tuple[Route, ...],
    pools: Iterable[PoolInfo],
    local: LocalInfo,
    is_exportable: bool | None = None,
    filtered: bool = True,
    interface_of: Callable[[str], str] | None = None,
) -> Advert | None:
    """``is_exportable``: ``exportable(prefix, pools)`` when the caller already knows it.
    ``filtered=False``: leave the session's export rules out (the caller applies them).
    ``interface_of``: the interface a next hop is reached over (BGPFilter ``interface`` rules)."""
    if family_of(prefix) not in peer.families:
        return None
    rules = peer.route_filter if filtered else None
    if prefix in exports:
        own: Advert = (NEXT_HOP_SELF, exports[prefix])
        if rules is None:
            return own
        return filter_advert(rules, prefix, peer, exports[prefix], own, learned=False)
    if not best:
        return None
    if not (exportable(prefix, pools) if is_exportable is None else is_exportable):
        return None
    route = best[0]
    keep = peer.keep_original_next_hop
    advert = _reflected(route.next_hop, route.attrs, route.source, to_peer, local, keep)
    if advert is not None and rules is not None:
        advert = filter_advert(
            rules,
            prefix,
            peer,
            route.attrs,
            advert,
            learned=True,
            next_hop=route.next_hop,
            interface_of=interface_of,
        )
    return advert


def filter_advert(
    rules: PeerFilter,
    prefix: str,
    peer: PeerSpec,
    attrs: PathAttrs,
    advert: Advert,
    *,
    learned: bool,
    next_hop: str = "",
    interface_of: Callable[[str], str] | None = None,
) -> Advert | None:
    """The session's export rules on one advert: None when rejected, else the advert after the
    deciding Accept rule's operations. They match the route as it is here (``attrs``: before this
    node's AS is prepended towards eBGP)."""
    lookup = None if interface_of is None or not next_hop else functools.partial(interface_of, next_hop)
    facts = facts_of(
        attrs, learned=learned, ebgp=peer.ebgp, version=6 if ":" in prefix else 4, interface=lookup
    )
    allowed, rule = export_rule(rules, prefix, facts, learned=learned)
    if not allowed:
        return None
    if rule is None or not rule.operates:
        return advert
    return (advert[0], operate(rule, advert[1], ebgp_as=peer.local_as if peer.ebgp else None))


@functools.lru_cache(maxsize=4096)
def _reflected(
    next_hop: str, attrs: PathAttrs, source: PeerInfo, to_peer: PeerInfo, local: LocalInfo, keep: bool
) -> Advert | None:
    """``reflect`` depends on everything about a route but its prefix: a reflector sends
    thousands of prefixes with one set of attributes, so the answer is computed once."""
    route = reflect(Route("", next_hop, attrs, source), source, to_peer, local=local, keep_next_hop=keep)
    return None if route is None else (route.next_hop, route.attrs)


# what ExaBGP holds after it answered ``error``: equal to no real advert, not None (not "nothing")
UNCERTAIN: Advert = ("", PathAttrs())
ENCODED_CACHE_BYTES = 8 << 20  # hex of encoded groups kept for the next peers (a few MB)


class Advertiser:
    def __init__(self) -> None:
        self._sent: dict[str, dict[str, Advert]] = {}
        # a reflector sends the same groups to every client: encode each once (a pure function)
        self._encoded: dict[tuple[object, ...], list[str]] = {}
        self._encoded_bytes = 0

    def sent(self, peer: str) -> dict[str, Advert]:
        return dict(self._sent.get(peer, {}))

    def count(self, peer: str) -> int:
        return len(self._sent.get(peer, ()))

    def known(self, peer: str) -> bool:
        return peer in self._sent

    def forget(self, peer: str) -> None:
        self._sent.pop(peer, None)

    def forget_all(self) -> None:
        self._sent.clear()

    def mark_uncertain(self, peer: str, prefixes: Iterable[str] | None) -> list[str]:
        """ExaBGP refused a command for ``peer``: what it holds for ``prefixes`` (None: for every
        prefix sent) is unknown. They are recorded as sent with an advert equal to none, so the
        next ``plan`` withdraws each again if unwanted and announces it again if wanted.
        Returns the prefixes marked."""
        sent = self._sent.setdefault(peer, {})
        marked = list(sent) if prefixes is None else list(prefixes)
        for prefix in marked:
            sent[prefix] = UNCERTAIN
        return marked

    def plan(
        self,
        peer: PeerSpec,
        changes: Mapping[str, Advert | None],
        *,
        full: bool = False,
        resend: bool = False,
        wire_self: str | None = None,
        groups: Iterable[tuple[Advert | None, list[str]]] = (),
    ) -> list[str]:
        """Commands moving ``peer`` to ``changes`` (for ``full``, prefixes absent are withdrawn).

        ``resend``: the session is new and holds nothing of ours — announce every target again
        and withdraw what was sent before and is no longer wanted. ``wire_self``: encode UPDATE
        messages for a wire-mode session whose local address (next hop self) this is.
        ``groups``: more changes, as (advert, prefixes) — a reflector's thousands of prefixes
        with one advert, checked against what was sent in bulk rather than one by one.
        """
        sent = self._sent.setdefault(peer.address, {})
        targets = dict(changes)
        bulk = list(groups)
        if full or resend:
            for advert, members in bulk:
                targets.update(dict.fromkeys(members, advert))
            bulk = []
            for prefix in sent:
                targets.setdefault(prefix, None)
        by_id: dict[int, tuple[Advert, list[str]]] = {}  # adverts are mostly shared objects: no hashing
        withdraw: list[str] = []
        for prefix, advert in targets.items():
            if advert is None:
                if sent.pop(prefix, None) is not None:
                    withdraw.append(prefix)
            elif resend or sent.get(prefix) != advert:
                sent[prefix] = advert
                group = by_id.get(id(advert))
                if group is None:
                    group = by_id[id(advert)] = (advert, [])
                group[1].append(prefix)
        for advert, members in bulk:
            untouched = not sent or sent.keys().isdisjoint(members)
            if advert is None:
                if untouched:
                    continue
                # withdrawing what was sent (a peer's table going): one pass in C, popping as it
                # checks; prefixes this peer was not sent are left out (no advert is None)
                popped = list(map(sent.pop, members, repeat(None)))
                withdraw += members if None not in popped else list(compress(members, popped))
                continue
            fresh = members if untouched else [p for p in members if sent.get(p) != advert]
            if not fresh:
                continue
            sent.update(dict.fromkeys(fresh, advert))
            group = by_id.get(id(advert))
            if group is None:
                by_id[id(advert)] = (advert, list(fresh))
            else:
                group[1].extend(fresh)
        merged: dict[Advert, list[str]] = defaultdict(list)
        for advert, prefixes in by_id.values():
            merged[advert] += prefixes
        ordered = sorted(merged.items(), key=lambda kv: kv[1][0])
        if wire_self is not None:
            return self._wire(peer, ordered, withdraw, wire_self)
        lines = withdraw_commands(peer.address, withdraw) if withdraw else []
        for (next_hop, attrs), prefixes in ordered:
            lines += announce_commands(peer.address, next_hop, attrs, prefixes, ibgp=not peer.ebgp)
        return lines

    def _wire(
        self, peer: PeerSpec, groups: list[tuple[Advert, list[str]]], withdraw: list[str], local: str
    ) -> list[str]:
        # in the order given (the engine's classification, the same for every peer): a reflector's
        # clients share one encoding, and a withdrawn table is not sorted again per client
        messages = list(self._encode(("withdraw", tuple(withdraw)))) if withdraw else []
        sent = self._sent[peer.address]
        for (next_hop, attrs), prefixes in groups:
            by_family: dict[bool, list[str]] = defaultdict(list)
            if ":" not in "".join(prefixes):  # one C-speed test instead of one per prefix
                by_family[False] = prefixes
            else:
                for prefix in prefixes:
                    by_family[":" in prefix].append(prefix)
            for v6, members in sorted(by_family.items()):
                hop = local if next_hop == NEXT_HOP_SELF else next_hop
                if (":" in hop) != v6:
                    # next hop self of the other family than the session's: nothing to put there
                    log.warning(
                        "bgp %s: no %s next hop self for %d prefixes",
                        peer.address,
                        "IPv6" if v6 else "IPv4",
                        len(members),
                    )
                    for prefix in members:
                        sent.pop(prefix, None)
                    continue
                # in the order given: the engine's groups, the same lists for every peer
                messages += self._encode((hop, attrs, not peer.ebgp, tuple(members)))
        return WireCommands(wire_commands(peer.address, messages), messages)

    def _encode(self, key: tuple[object, ...]) -> list[str]:
        found = self._encoded.get(key)
        if found is None:
            if key[0] == "withdraw":
                raw = wire.encode_withdraw(key[1])  # type: ignore[arg-type]
            else:
                hop, attrs, ibgp, prefixes = key
                raw = wire.encode_announce(hop, attrs, prefixes, ibgp=ibgp)  # type: ignore[arg-type]
            found = [m.hex() for m in raw]
            size = sum(map(len, found))
            if self._encoded_bytes + size > ENCODED_CACHE_BYTES:
                self._encoded.clear()
                self._encoded_bytes = 0
            self._encoded[key] = found
            self._encoded_bytes += size
        return found
