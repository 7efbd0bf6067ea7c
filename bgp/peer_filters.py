"""BGPFilter rules, compiled per session and evaluated per route (pure).

A BGPPeer's ``filters`` name BGPFilters; their rules for one direction and address family are
joined in that order into one list. The first rule that matches a route decides (Accept or
Reject); when none matches, the route is left to felixpy's default behaviour.

Where they run (see ``bgp.engine`` and ``bgp.advertiser``):
* import: after felixpy's own import checks (AS loop, default route, own blocks, inside IP
  pools). Those refuse first and cannot be overridden: an Accept rule never lets in what they
  refuse, it only stops later rules from rejecting;
* export: on what felixpy would send to the peer anyway, so an Accept rule never adds a route,
  and a Reject rule withdraws one.

Matching (Calico's definitions; every match a rule sets must hold):
* no ``cidr``: every prefix of the family;
* ``Equal`` / ``NotEqual``: the prefix is (is not) exactly ``cidr`` — ``prefixLength`` is not used;
* ``In`` / ``NotIn``: the prefix lies (does not lie) inside ``cidr`` with a length between
  ``prefixLength.min`` (default: the cidr's own length) and ``prefixLength.max`` (default 32 or 128);
* ``source: RemotePeers`` (export only): the route was learned from a peer, not one of the
  node's own blocks and borrowed addresses;
* ``interface``: the interface the route's next hop is reached over (``*`` matches any run of
  characters, BIRD's ``ifname ~``). The node's own blocks and borrowed addresses have none, so
  they never match an interface rule;
* ``peerType``: the session the rule runs for is eBGP (peer AS differs from the AS the session
  presents) or iBGP;
* ``communities``: the route carries the community (standard ``aa:nn`` or large ``aa:nn:mm``);
* ``asPathPrefix``: the route's AS_PATH starts with these AS numbers (on export: as the route is
  before this node prepends its own AS towards an eBGP peer);
* ``priority``: the kernel metric of the route: a learned route's is the one felixpy installs it
  at (``LEARNED_PRIORITY``: 32 for IPv4, 1056 for IPv6, unless an import rule's ``setPriority``
  chose another); the node's own exports have none.

Operations (Accept rules): ``addCommunity`` adds a community; ``prependASPath`` prepends AS
numbers to AS_PATH; ``setPriority`` sets the route's kernel metric (Calico renders it as BIRD's
``krt_metric = N``). On import they change the route as stored (what best path sees and what is
passed on), and ``setPriority`` the metric the route is installed at in the kernel (``bgp.fib``;
the last ``setPriority`` of a rule wins); on export only what that peer receives (towards eBGP the
node's own AS still comes first, as BIRD's ``bgp_path.prepend`` in an export filter), where
``setPriority`` changes nothing: BGP carries no kernel metric (as in BIRD).

A refusal reads ``"rejected by BGPFilter <name>: <list>[<index>]"``: the kind before ``": "``
(``bgp.filters.reason_kind``) labels the refusal metric, the rest says which rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from bgp.route import PathAttrs, PrefixKey, key_inside, prefix_key
from felixpy.resources.bgp import BGPFilter, BGPFilterRule

ACCEPT, REJECT = True, False
# the kernel metric felixpy installs learned routes at (bgp.rtnl.BGP_METRIC, by IP version)
LEARNED_PRIORITY = {4: 32, 6: 1056}


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What the matches other than the prefix look at, for one route and one session."""

    learned: bool = True  # from a peer (False: one of the node's own exports)
    ebgp: bool = False  # the session the rules run for
    communities: tuple[str, ...] = ()  # standard and large, as text
    as_path: tuple[int, ...] = ()
    priority: int | None = None
    interface: Callable[[], str] | None = None  # asked only by interface rules ("" = none)


def facts_of(
    attrs: PathAttrs, *, learned: bool, ebgp: bool, version: int, interface: Callable[[], str] | None = None
) -> RouteFacts:
    return RouteFacts(
        learned,
        ebgp,
        (*attrs.communities, *attrs.large_communities),
        attrs.as_path,
        (LEARNED_PRIORITY[version] if attrs.priority is None else attrs.priority) if learned else None,
        interface if learned else None,
    )


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


@dataclass(frozen=True, slots=True)
class FilterRule:
    accept: bool
    net: PrefixKey | None = None  # None: every prefix of the family
    operator: str = ""  # Equal | NotEqual | In | NotIn ("" with no net)
    min_len: int = 0
    max_len: int = 128
    remote_only: bool = False  # source: RemotePeers
    interface: re.Pattern[str] | None = None
    peer_type: str = ""  # eBGP | iBGP | "" (any)
    community: str = ""
    as_path_prefix: tuple[int, ...] = ()
    priority: int | None = None
    add_communities: tuple[str, ...] = ()  # operations, in order
    prepend: tuple[int, ...] = ()
    set_priority: int | None = None  # setPriority (the last one of the rule's operations)
    origin: str = ""  # "<BGPFilter name>: <list>[<index>]"

    def matches(self, key: PrefixKey, facts: RouteFacts | None = None, *, learned: bool = True) -> bool:
        if facts is None:
            facts = RouteFacts(learned=learned)
        if self.remote_only and not facts.learned:
            return False
        net = self.net
        if net is not None:
            if self.operator in ("Equal", "NotEqual"):
                if (key == net) != (self.operator == "Equal"):
                    return False
            else:
                inside = key_inside(key, net) and self.min_len <= key[2] <= self.max_len
                if inside != (self.operator == "In"):
                    return False
        if self.peer_type and (self.peer_type == "eBGP") != facts.ebgp:
            return False
        if self.community and self.community not in facts.communities:
            return False
        if self.as_path_prefix and facts.as_path[: len(self.as_path_prefix)] != self.as_path_prefix:
            return False
        if self.priority is not None and facts.priority != self.priority:
            return False
        if self.interface is not None:
            name = facts.interface() if facts.interface is not None else ""
            if not name or not self.interface.match(name):
                return False
        return True

    @property
    def operates(self) -> bool:
        return bool(self.add_communities or self.prepend or self.set_priority is not None)


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


def first_match(
    rules: Iterable[FilterRule], key: PrefixKey, facts: RouteFacts | None = None, *, learned: bool = True
) -> FilterRule | None:
    """The rule that decides for a route, None when no rule matches."""
    if facts is None:
        facts = RouteFacts(learned=learned)
    for rule in rules:
        if rule.matches(key, facts):
            return rule
    return None


def verdict(
    rules: Iterable[FilterRule], key: PrefixKey, facts: RouteFacts | None = None, *, learned: bool = True
) -> bool | None:
    """ACCEPT or REJECT from the first matching rule, None when no rule matches."""
    rule = first_match(rules, key, facts, learned=learned)
    return None if rule is None else rule.accept


def rejection(rule: FilterRule) -> str:
    return f"rejected by BGPFilter {rule.origin}"


def import_decision(
    peer_filter: PeerFilter | None, prefix: str, attrs: PathAttrs, facts: RouteFacts | None = None
) -> tuple[str | None, PathAttrs]:
    """(why the session's import rules refuse a route the default checks accepted, or None;
    its attributes after the deciding Accept rule's operations)."""
    if peer_filter is None:
        return None, attrs
    key = prefix_key(prefix)
    rules = peer_filter.rules(key, export=False)
    if not rules:
        return None, attrs
    if facts is None:
        facts = facts_of(attrs, learned=True, ebgp=False, version=key[0])
    rule = first_match(rules, key, facts)
    if rule is None:
        return None, attrs
    if not rule.accept:
        return rejection(rule), attrs
    return None, operate(rule, attrs)


def import_reason(peer_filter: PeerFilter | None, prefix: str, facts: RouteFacts | None = None) -> str | None:
    """Why a route the default checks accepted is refused by the session's import rules, or None."""
    return import_decision(peer_filter, prefix, PathAttrs(), facts)[0]


def export_rule(
    peer_filter: PeerFilter | None, prefix: str, facts: RouteFacts | None = None, *, learned: bool = True
) -> tuple[bool, FilterRule | None]:
    """(may the prefix go to the peer, the export rule that decided if any)."""
    if peer_filter is None:
        return True, None
    key = prefix_key(prefix)
    rules = peer_filter.rules(key, export=True)
    if not rules:
        return True, None
    rule = first_match(rules, key, facts, learned=learned)
    return (rule is None or rule.accept), rule


def export_allowed(
    peer_filter: PeerFilter | None, prefix: str, *, learned: bool, facts: RouteFacts | None = None
) -> bool:
    """False when the session's export rules reject a prefix felixpy would otherwise send.
    ``learned``: the route came from a peer (not one of this node's own exports)."""
    return export_rule(peer_filter, prefix, facts, learned=learned)[0]


def operate(rule: FilterRule | None, attrs: PathAttrs, *, ebgp_as: int | None = None) -> PathAttrs:
    """``attrs`` after ``rule``'s operations. ``ebgp_as``: on export towards eBGP, this node's AS,
    which stays first in AS_PATH (it is there already on a learned route's advert, and ExaBGP
    would not add it to an AS_PATH it is given)."""
    if rule is None or not rule.operates:
        return attrs
    standard, large = list(attrs.communities), list(attrs.large_communities)
    for value in rule.add_communities:
        target = large if value.count(":") == 2 else standard
        if value not in target:
            target.append(value)
    path = attrs.as_path
    if rule.prepend:
        if ebgp_as is not None:
            rest = path[1:] if path[:1] == (ebgp_as,) else path
            path = (ebgp_as, *rule.prepend, *rest)
        else:
            path = (*rule.prepend, *path)
    priority = attrs.priority if rule.set_priority is None else rule.set_priority
    return replace(
        attrs, communities=tuple(standard), large_communities=tuple(large), as_path=path, priority=priority
    )


def compile_rule(rule: BGPFilterRule, version: int, origin: str = "") -> FilterRule:
    bits = 32 if version == 4 else 128
    extra = {
        "accept": rule.action == "Accept",
        "remote_only": rule.source == "RemotePeers",
        "interface": _glob(rule.interface) if rule.interface else None,
        "peer_type": rule.peer_type or "",
        "community": rule.communities.values[0] if rule.communities else "",
        "as_path_prefix": tuple(rule.as_path_prefix or ()),
        "priority": rule.priority,
        "add_communities": tuple(o.add_community.value for o in rule.operations or () if o.add_community),
        "prepend": tuple(
            a for o in rule.operations or () if o.prepend_as_path for a in o.prepend_as_path.prefix
        ),
        "set_priority": next(
            (o.set_priority.value for o in reversed(rule.operations or ()) if o.set_priority), None
        ),
        "origin": origin,
    }
    if rule.cidr is None:
        return FilterRule(**extra)  # type: ignore[arg-type]
    net = prefix_key(rule.cidr)
    length = rule.prefix_length
    low = length.min if length is not None and length.min is not None else net[2]
    high = length.max if length is not None and length.max is not None else bits
    return FilterRule(net=net, operator=rule.match_operator or "In", min_len=low, max_len=high, **extra)  # type: ignore[arg-type]


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

    lists = {
        "import_v4": "importV4",
        "import_v6": "importV6",
        "export_v4": "exportV4",
        "export_v6": "exportV6",
    }

    def join(attr: str, version: int) -> tuple[FilterRule, ...]:
        return tuple(
            compile_rule(r, version, f"{f.metadata.name}: {lists[attr]}[{i}]")
            for f in found
            for i, r in enumerate(getattr(f.spec, attr))
        )

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
