"""Which learned route goes to which peer, and with which attributes (RFC 4271 + RFC 4456).

``reflect(route, from_peer, to_peer, local=...)`` is the whole rule set, as one pure function:
* never back to the peer it came from, nor to the peer whose router ID is its ORIGINATOR_ID;
* iBGP → iBGP only through a route reflector (``local.cluster_id`` set): from a client to
  every iBGP peer, from a non-client to clients only; the reflected copy carries
  ORIGINATOR_ID (the source's router ID when absent) and our cluster ID prepended to
  CLUSTER_LIST;
* towards eBGP: our AS prepended (the one the session presents, ``to_peer.local_as``),
  LOCAL_PREF / ORIGINATOR_ID / CLUSTER_LIST removed and next hop set to ourselves
  (``"self"``) unless the session keeps the original next hop;
* eBGP-learned → iBGP: unchanged (next hop kept, as BIRD does by default).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bgp.route import PeerInfo, Route

NEXT_HOP_SELF = "self"


@dataclass(frozen=True, slots=True)
class LocalInfo:
    router_id: str
    local_as: int
    cluster_id: str | None = None  # set on route reflectors


def reflect(
    route: Route,
    from_peer: PeerInfo,
    to_peer: PeerInfo,
    *,
    local: LocalInfo,
    keep_next_hop: bool = False,
) -> Route | None:
    if from_peer.address and from_peer.address == to_peer.address:
        return None
    if route.attrs.originator_id and route.attrs.originator_id == to_peer.router_id:
        return None
    if to_peer.ebgp:
        return _to_ebgp(route, to_peer.local_as or local.local_as, keep_next_hop)
    if not from_peer.address or from_peer.ebgp:
        return route
    return _ibgp_to_ibgp(route, from_peer, to_peer, local)


def _to_ebgp(route: Route, local_as: int, keep_next_hop: bool) -> Route:
    attrs = replace(
        route.attrs,
        as_path=(local_as, *route.attrs.as_path),
        local_pref=None,
        originator_id=None,
        cluster_list=(),
    )
    return replace(route, attrs=attrs, next_hop=route.next_hop if keep_next_hop else NEXT_HOP_SELF)


def _ibgp_to_ibgp(route: Route, from_peer: PeerInfo, to_peer: PeerInfo, local: LocalInfo) -> Route | None:
    if local.cluster_id is None:
        return None
    if not from_peer.rr_client and not to_peer.rr_client:
        return None
    originator = route.attrs.originator_id or from_peer.router_id or from_peer.address
    attrs = replace(
        route.attrs,
        originator_id=originator,
        cluster_list=(local.cluster_id, *route.attrs.cluster_list),
    )
    return replace(route, attrs=attrs)
