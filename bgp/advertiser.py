"""Per-peer Adj-RIB-Out as the agent wants it, and the ExaBGP commands to get there (pure).

``outbound`` decides what one prefix looks like towards one peer: our own exports with next
hop self, otherwise the best learned path passed through ``reflect`` (and only inside
exportable pools). ``Advertiser`` remembers what was sent per peer and turns changes into
batched ``announce attributes``/``withdraw attributes`` commands, grouping prefixes that share
next hop and attributes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from bgp.exabgp_api import announce_commands, withdraw_commands
from bgp.filters import PoolInfo, exportable
from bgp.reflect import NEXT_HOP_SELF, LocalInfo, reflect
from bgp.route import PathAttrs, PeerInfo, Route, family_of
from bgp.topology import PeerSpec

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
) -> Advert | None:
    if family_of(prefix) not in peer.families:
        return None
    if prefix in exports:
        return (NEXT_HOP_SELF, exports[prefix])
    if not best or not exportable(prefix, pools):
        return None
    route = reflect(best[0], best[0].source, to_peer, local=local, keep_next_hop=peer.keep_original_next_hop)
    if route is None:
        return None
    return (route.next_hop, route.attrs)


class Advertiser:
    def __init__(self) -> None:
        self._sent: dict[str, dict[str, Advert]] = {}

    def sent(self, peer: str) -> dict[str, Advert]:
        return dict(self._sent.get(peer, {}))

    def known(self, peer: str) -> bool:
        return peer in self._sent

    def forget(self, peer: str) -> None:
        self._sent.pop(peer, None)

    def forget_all(self) -> None:
        self._sent.clear()

    def plan(self, peer: PeerSpec, changes: Mapping[str, Advert | None], *, full: bool = False) -> list[str]:
        """Commands moving ``peer`` to ``changes`` (for ``full``, prefixes absent are withdrawn)."""
        sent = self._sent.setdefault(peer.address, {})
        targets = dict(changes)
        if full:
            for prefix in sent:
                targets.setdefault(prefix, None)
        groups: dict[Advert, list[str]] = defaultdict(list)
        withdraw: list[str] = []
        for prefix, advert in targets.items():
            if advert is None:
                if sent.pop(prefix, None) is not None:
                    withdraw.append(prefix)
            elif sent.get(prefix) != advert:
                sent[prefix] = advert
                groups[advert].append(prefix)
        lines = withdraw_commands(peer.address, withdraw) if withdraw else []
        for (next_hop, attrs), prefixes in sorted(groups.items(), key=lambda kv: kv[1][0]):
            lines += announce_commands(peer.address, next_hop, attrs, prefixes, ibgp=not peer.ebgp)
        return lines
