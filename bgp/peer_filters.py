"""BGPFilter rules, compiled per session and evaluated per prefix (pure).

A BGPPeer's ``filters`` name BGPFilters; their rules for one direction and address family are
joined in that order into one list. The first rule that matches a prefix decides (Accept or
Reject); when none matches, the route is left to felixpy's default behaviour.

Where they run (see ``bgp.engine`` and ``bgp.advertiser``):
* import: after felixpy's own import checks (AS loop, default route, own blocks, inside IP
  pools). Those refuse first and cannot be overridden: an Accept rule never lets in what they
  refuse, it only stops later rules from rejecting;
* export: on what felixpy would send to the peer anyway, so an Accept rule never adds a route,
  and a Reject rule withdraws one.

Matching (Calico's definitions):
* no ``cidr``: every prefix of the family;
* ``Equal`` / ``NotEqual``: the prefix is (is not) exactly ``cidr`` — ``prefixLength`` is not used;
* ``In`` / ``NotIn``: the prefix lies (does not lie) inside ``cidr`` with a length between
  ``prefixLength.min`` (default: the cidr's own length) and ``prefixLength.max`` (default 32 or 128);
* ``source: RemotePeers`` (export only): the rule only applies to routes learned from peers,
  never to the node's own blocks and borrowed addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bgp.route import PrefixKey, key_inside, prefix_key
from felixpy.resources.bgp import BGPFilter, BGPFilterRule

ACCEPT, REJECT = True, False


@dataclass(frozen=True, slots=True)
class FilterRule:
    accept: bool
    net: PrefixKey | None = None  # None: every prefix of the family
    operator: str = ""  # Equal | NotEqual | In | NotIn ("" with no net)
    min_len: int = 0
    max_len: int = 128
    remote_only: bool = False  # source: RemotePeers

    def matches(self, key: PrefixKey, *, learned: bool = True) -> bool:
        if self.remote_only and not learned:
            return False
        net = self.net
        if net is None:
            return True
        if self.operator in ("Equal", "NotEqual"):
            return (key == net) == (self.operator == "Equal")
        inside = key_inside(key, net) and self.min_len <= key[2] <= self.max_len
        return inside == (self.operator == "In")


@dataclass(frozen=True, slots=True)
class PeerFilter:
    """One session's rules: (import, export) per IP version, each in evaluation order."""

    import_v4: tuple[FilterRule, ...] = ()
    import_v6: tuple[FilterRule, ...] = ()
    export_v4: tuple[FilterRule, ...] = ()
    export_v6: tuple[FilterRule, ...] = ()
    names: tuple[str, ...] = ()  # the BGPFilters it was built from (logs)

    def rules(self, key: PrefixKey, *, export: bool) -> tuple[FilterRule, ...]:
        if export:
            return self.export_v4 if key[0] == 4 else self.export_v6
        return self.import_v4 if key[0] == 4 else self.import_v6

    @property
    def exports(self) -> bool:
        return bool(self.export_v4 or self.export_v6)


def verdict(rules: Iterable[FilterRule], key: PrefixKey, *, learned: bool = True) -> bool | None:
    """ACCEPT or REJECT from the first matching rule, None when no rule matches."""
    for rule in rules:
        if rule.matches(key, learned=learned):
            return rule.accept
    return None


def import_reason(peer_filter: PeerFilter | None, prefix: str) -> str | None:
    """Why a route the default checks accepted is refused by the session's import rules, or None."""
    if peer_filter is None:
        return None
    key = prefix_key(prefix)
    rules = peer_filter.rules(key, export=False)
    if rules and verdict(rules, key) is REJECT:
        return "rejected by BGPFilter " + "/".join(peer_filter.names)
    return None


def export_allowed(peer_filter: PeerFilter | None, prefix: str, *, learned: bool) -> bool:
    """False when the session's export rules reject a prefix felixpy would otherwise send.
    ``learned``: the route came from a peer (not one of this node's own exports)."""
    if peer_filter is None:
        return True
    key = prefix_key(prefix)
    rules = peer_filter.rules(key, export=True)
    return not rules or verdict(rules, key, learned=learned) is not REJECT


def compile_rule(rule: BGPFilterRule, version: int) -> FilterRule:
    bits = 32 if version == 4 else 128
    accept = rule.action == "Accept"
    remote = rule.source == "RemotePeers"
    if rule.cidr is None:
        return FilterRule(accept, remote_only=remote)
    net = prefix_key(rule.cidr)
    length = rule.prefix_length
    low = length.min if length is not None and length.min is not None else net[2]
    high = length.max if length is not None and length.max is not None else bits
    return FilterRule(accept, net, rule.match_operator or "In", low, high, remote)


def compile_filter(
    names: Sequence[str], filters: Mapping[str, BGPFilter]
) -> tuple[PeerFilter | None, list[str]]:
    """The session filter for a BGPPeer's ``filters`` (in order), and the names that do not exist.

    Missing BGPFilters are skipped (the caller logs them): a peer created just before its filter
    behaves as if it had none until the filter arrives.
    """
    found = [filters[n] for n in names if n in filters]
    missing = [n for n in names if n not in filters]
    if not found:
        return None, missing

    def join(attr: str, version: int) -> tuple[FilterRule, ...]:
        return tuple(compile_rule(r, version) for f in found for r in getattr(f.spec, attr))

    return (
        PeerFilter(
            import_v4=join("import_v4", 4),
            import_v6=join("import_v6", 6),
            export_v4=join("export_v4", 4),
            export_v6=join("export_v6", 6),
            names=tuple(f.metadata.name for f in found),
        ),
        missing,
    )
