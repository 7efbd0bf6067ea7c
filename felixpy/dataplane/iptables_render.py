"""Pure iptables logic: rule hashes, rendering, iptables-save parsing and the per-table write plan.

Rule hashes follow Calico (reference 2.13): h0 = sha224(chain); h_i = sha224(h_{i-1} + "-A <chain> HASH
<comments> <match> <action>"); the rule carries ``-m comment --comment "cali:<base64url(h_i)[:16]>"``
right after ``-A <chain>``. A hash depends on every earlier rule, so comparing hash lists tells which
chains drifted without ever parsing rule text. Calico spells actions long (``--jump cali-FORWARD``);
with the same text the hashes are the same as Go Felix's (``FORWARD`` hook: ``wUHhoiAYhphO9Mso``).
Hook rules in kernel chains hash with the kernel chain name (inserts) or ``<chain>*appends*``.

Two plans. :func:`plan_table` is Felix's: rewrite each chain from its first differing hash, delete
what is no longer wanted. :func:`plan_table_additive` only adds (new chains, ``-A``, ``-I``) or
returns None: with nf_tables a transaction that replaces, flushes or deletes anything waits for an
RCU grace period (~12 ms on a 2-core VM) while one that only adds costs what an empty one does
(~3 ms), so a new pod's chains and its dispatch rule go in additively and the rest (hash
comments of the rules after an insert, rules and chains no longer wanted) is left for the next
:func:`plan_table` (see ``IptablesWriter.apply``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from felixpy.dataplane.kernel_objects import Chain, Rule, Table

OUR_PREFIX = "cali-"
HASH_LEN = 16
_HASH_RE = re.compile(r'--comment "?cali:([A-Za-z0-9_-]{16})"?')
_CHAIN_RE = re.compile(r"^:(\S+)")
_OWN_PREFIX_RE = re.compile(r'^-m comment --comment "?cali:[A-Za-z0-9_-]{16}"?(?: |$)')
_TARGET_RE = re.compile(r"(?:^| )(?:-g|--goto|-j|--jump) (\S+)")


@dataclass(frozen=True, slots=True)
class Hook:
    """A rule the agent keeps in a kernel chain, e.g. FORWARD -> cali-FORWARD (insert at top)."""

    table: Table
    chain: str
    rule: Rule
    append: bool = False


def default_hooks() -> tuple[Hook, ...]:
    """Calico's hooks (reference 2.1), nat POSTROUTING appended so kube-proxy's MASQ runs first."""

    def jump(table: Table, chain: str, append: bool = False) -> Hook:
        return Hook(table, chain, Rule(action=f"--jump cali-{chain}"), append)

    return (
        jump("raw", "PREROUTING"),
        jump("raw", "OUTPUT"),
        jump("filter", "INPUT"),
        jump("filter", "FORWARD"),
        jump("filter", "OUTPUT"),
        jump("nat", "PREROUTING"),
        jump("nat", "POSTROUTING", append=True),
        jump("nat", "OUTPUT"),
        jump("mangle", "PREROUTING"),
        jump("mangle", "POSTROUTING"),
    )


@dataclass(frozen=True, slots=True)
class SavedRule:
    """One rule as the kernel has it: our hash (None for others' rules) and the text after -A chain."""

    hash: str | None
    spec: str


TableState = dict[str, list[SavedRule]]
OpKind = Literal["chain", "append", "insert", "replace", "delete", "delete_at", "delete_chain"]


@dataclass(frozen=True, slots=True)
class Op:
    """One step of a table transaction. ``chain``: create-or-flush (``:name - -``); ``replace``
    and ``delete_at`` address a rule of one of our chains by 1-based ``index`` (``-R``/``-D n``);
    ``delete`` removes one of our rules from a kernel chain and carries both the saved spec (for
    iptables-restore) and the index (for libiptc)."""

    kind: OpKind
    chain: str
    spec: str = ""
    index: int = 0


def comment_fragment(text: str) -> str:
    text = text.replace('"', "'")[:256]
    return f'-m comment --comment "{text}"'


def rule_body(rule: Rule) -> str:
    """Everything after the hash comment: our own comment, match, action (empty parts omitted)."""
    parts = [comment_fragment(rule.comment)] if rule.comment else []
    parts += [p for p in (rule.match.strip(), rule.action.strip()) if p]
    return " ".join(parts)


def rule_hashes(chain_name: str, rules: Sequence[Rule]) -> list[str]:
    return body_hashes(chain_name, [rule_body(rule) for rule in rules])


def body_hashes(chain_name: str, bodies: Sequence[str]) -> list[str]:
    """:func:`rule_hashes` of rules whose :func:`rule_body` is already known."""
    digest = hashlib.sha224(chain_name.encode()).digest()
    out = []
    for body in bodies:
        rendered = " ".join(p for p in ("-A", chain_name, "HASH", body) if p)
        digest = hashlib.sha224(digest + rendered.encode()).digest()
        out.append(base64.urlsafe_b64encode(digest).decode().rstrip("=")[:HASH_LEN])
    return out


def render_rule(hash_: str, rule: Rule) -> str:
    return rendered_spec(hash_, rule_body(rule))


def rendered_spec(hash_: str, body: str) -> str:
    """:func:`render_rule` of a rule whose :func:`rule_body` is already known."""
    # interned so that the spec parsed back from iptables-save shares this copy (x10: ~1 MB)
    return sys.intern(f'-m comment --comment "cali:{hash_}"' + (f" {body}" if body else ""))


def parse_save(text: str) -> dict[str, TableState]:
    """iptables-save output -> {table: {chain: [SavedRule]}}. Only chain names, -A lines and hashes."""
    tables: dict[str, TableState] = {}
    current: TableState = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), {})
        elif m := _CHAIN_RE.match(line):
            current.setdefault(m.group(1), [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            # interned: the same text as our rendered spec (also interned) shares one copy
            spec = sys.intern(rest[0]) if rest else ""
            h = _HASH_RE.search(spec)
            current.setdefault(chain, []).append(SavedRule(h.group(1) if h else None, spec))
    return tables


def count_rules(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def plan_table(
    desired: Mapping[str, Chain],
    hooks: Iterable[Hook],
    state: TableState,
    *,
    expected: Mapping[str, Sequence[str]] | None = None,
    only: Collection[str] | None = None,
    rendered: Mapping[str, Sequence[SavedRule]] | None = None,
) -> list[Op]:
    """The ops that take one table from ``state`` to ``desired`` chains + ``hooks`` (all one table).

    ``expected``: the desired chains' rule hashes if already known; ``rendered``: their rules as
    written (:func:`render_rule`, with those hashes) if already known. ``only``: the ``cali-``
    chains that may differ (the rest are known to match ``state``); None compares every chain. Our
    hook rules in kernel chains are always checked (a handful of rules).
    """
    if expected is None:
        expected = {name: rule_hashes(name, chain.rules) for name, chain in desired.items()}
    names = set(desired) | {n for n in state if n.startswith(OUR_PREFIX)} if only is None else set(only)
    new = sorted(n for n in names if n in desired and n not in state)
    obsolete = sorted(n for n in names if n not in desired and n in state and n.startswith(OUR_PREFIX))
    ops = [Op("chain", n) for n in new + obsolete]
    ops += _plan_all_hooks(hooks, state)
    for name in sorted(n for n in names if n in desired):
        written = None if rendered is None else rendered[name]
        ops += plan_chain(name, desired[name].rules, expected[name], state.get(name, []), written)
    ops += [Op("delete_chain", n) for n in obsolete]
    return ops


def plan_chain(
    name: str,
    rules: Sequence[Rule],
    want: Sequence[str],
    have: Sequence[SavedRule],
    rendered: Sequence[SavedRule] | None = None,
) -> list[Op]:
    """Felix's per-chain diff: keep the common prefix, ``-R`` from the first differing rule on,
    then ``-D`` the surplus from the end or ``-A`` the rest. Hashes chain, so after the first
    difference every rule differs: this is a rewrite of the tail, by index. ``rendered``: the
    rules already rendered with ``want`` (else rendered here)."""
    have_hashes = [r.hash for r in have]
    if have_hashes == list(want):
        return []

    def spec(i: int) -> str:
        return rendered[i].spec if rendered is not None else render_rule(want[i], rules[i])

    common = min(len(have), len(want))
    first = next((i for i in range(common) if have_hashes[i] != want[i]), common)
    ops = [Op("replace", name, spec(i), i + 1) for i in range(first, common)]
    ops += [Op("delete_at", name, "", i) for i in range(len(have), len(want), -1)]
    ops += [Op("append", name, spec(i)) for i in range(len(have), len(want))]
    return ops


def plan_table_additive(
    desired: Mapping[str, Chain],
    hooks: Iterable[Hook],
    state: TableState,
    *,
    expected: Mapping[str, Sequence[str]] | None = None,
    only: Collection[str] | None = None,
    leftover_chains: Sequence[str] = (),
) -> list[Op] | None:
    """Ops that only add (create a chain, ``-A``, ``-I``) and leave every chain of ``desired`` with
    exactly its desired rules, or None when that is impossible (then use :func:`plan_table`).

    What they leave behind, for the next :func:`plan_table` to clean up:

    - chains no longer desired, untouched (nothing desired jumps to them);
    - stale hash comments on the rules after an insertion point (the rule text is right; the hash
      chains through every earlier rule, so it no longer matches the desired one);
    - in a chain whose name starts with one of ``leftover_chains`` (the workload dispatch chains),
      our rules that jump or go to a chain no longer desired, itself not such a chain: a dispatch
      rule ``-o caliX -g cali-tw-caliX`` of an endpoint that is gone. It only matches packets of an
      interface no endpoint has, and goes to that endpoint's old chain, which stays with it.

    Rules are compared by their text after our hash comment, so the view must hold our own
    rendering of each rule (a rule as ``iptables-save`` prints it does not compare equal: that
    chain then gets None, the safe answer). Hooks out of place also give None.
    """
    if _plan_all_hooks(hooks, state):
        return None
    if expected is None:
        expected = {name: rule_hashes(name, chain.rules) for name, chain in desired.items()}
    names = set(desired) | {n for n in state if n.startswith(OUR_PREFIX)} if only is None else set(only)
    lazy = tuple(leftover_chains)

    def may_stay(rule: SavedRule) -> bool:  # it goes to one of our chains no longer desired
        target = jump_target(rule.spec)
        if target is None or target not in state or target in desired:
            return False
        return target.startswith(OUR_PREFIX) and not target.startswith(lazy)

    new = sorted(n for n in names if n in desired and n not in state)
    ops = [Op("chain", n) for n in new]
    for name in sorted(n for n in names if n in desired):
        chain_ops = plan_chain_additive(
            name,
            desired[name].rules,
            expected[name],
            state.get(name, []),
            may_stay if lazy and name.startswith(lazy) else None,
        )
        if chain_ops is None:
            return None
        ops += chain_ops
    return ops


def plan_chain_additive(
    name: str,
    rules: Sequence[Rule],
    want: Sequence[str],
    have: Sequence[SavedRule],
    may_stay: Callable[[SavedRule], bool] | None = None,
) -> list[Op] | None:
    """``-I``/``-A`` of the desired rules ``have`` lacks, when ``have`` is (by rule text) the desired
    rules in order with some missing, plus rules ``may_stay`` accepts anywhere; else None.

    Each missing rule is inserted right before the next rule of ``have`` it must precede, with its
    desired hash; the rules already there keep theirs."""
    if [r.hash for r in have] == list(want):
        return []
    bodies = [rule_body(r) for r in rules]
    ops: list[Op] = []
    j = pos = 0  # next desired rule to place; rules in the chain before the cursor
    for rule in have:
        body = saved_body(rule)
        if body is not None and j < len(bodies) and body == bodies[j]:
            j, pos = j + 1, pos + 1
            continue
        if rule.hash is not None and may_stay is not None and may_stay(rule):
            pos += 1
            continue
        if body is None or body not in bodies[j:]:
            return None  # replaced, removed, foreign or not in our rendering: not additive
        m = bodies.index(body, j)
        for t in range(j, m):
            ops.append(Op("insert", name, render_rule(want[t], rules[t]), pos + 1))
            pos += 1
        j, pos = m + 1, pos + 1
    ops += [Op("append", name, render_rule(want[t], rules[t])) for t in range(j, len(bodies))]
    return ops


def saved_body(rule: SavedRule) -> str | None:
    """The rule's text after our leading hash comment (as :func:`render_rule` wrote it); None if
    the spec does not start with it (another program's rule, or ``iptables-save``'s spelling)."""
    m = _OWN_PREFIX_RE.match(rule.spec)
    return rule.spec[m.end() :] if m else None


def jump_target(spec: str) -> str | None:
    """The chain or target of the rule's (last) ``-j``/``-g``."""
    found = _TARGET_RE.findall(spec)
    return found[-1] if found else None


def _plan_all_hooks(hooks: Iterable[Hook], state: TableState) -> list[Op]:
    hooks_by_chain: dict[str, list[Hook]] = {}
    for hook in hooks:
        hooks_by_chain.setdefault(hook.chain, []).append(hook)
    ours_in_kernel = {
        n for n, rules in state.items() if not n.startswith(OUR_PREFIX) and any(r.hash for r in rules)
    }
    ops: list[Op] = []
    for kchain in sorted(set(hooks_by_chain) | ours_in_kernel):
        ops += plan_hooks(kchain, hooks_by_chain.get(kchain, []), state.get(kchain, []))
    return ops


def plan_hooks(kchain: str, hooks: Sequence[Hook], rules: Sequence[SavedRule]) -> list[Op]:
    """Our rules in a kernel chain: inserts at the top in order, then appends; else redo them all."""
    inserts = [h.rule for h in hooks if not h.append]
    appends = [h.rule for h in hooks if h.append]
    ins_hashes = rule_hashes(kchain, inserts)
    app_hashes = rule_hashes(f"{kchain}*appends*", appends)
    ours = [(i, r) for i, r in enumerate(rules, 1) if r.hash]
    top = [r.hash for r in rules[: len(inserts)]]
    if top == ins_hashes and [r.hash for _, r in ours] == ins_hashes + app_hashes:
        return []
    ops = [Op("delete", kchain, r.spec, i) for i, r in reversed(ours)]
    pairs = zip(ins_hashes, inserts, strict=True)
    ops += [Op("insert", kchain, render_rule(h, r), n) for n, (h, r) in enumerate(pairs, 1)]
    ops += [Op("append", kchain, render_rule(h, r)) for h, r in zip(app_hashes, appends, strict=True)]
    return ops


def render_restore(table: str, ops: Iterable[Op]) -> str:
    """One ``iptables-restore --noflush`` transaction for ``table``."""
    lines = [f"*{table}"]
    for op in ops:
        if op.kind == "chain":
            lines.append(f":{op.chain} - -")
        elif op.kind == "append":
            lines.append(f"-A {op.chain} {op.spec}".rstrip())
        elif op.kind == "insert":
            lines.append(f"-I {op.chain} {op.index} {op.spec}".rstrip())
        elif op.kind == "replace":
            lines.append(f"-R {op.chain} {op.index} {op.spec}".rstrip())
        elif op.kind == "delete":
            lines.append(f"-D {op.chain} {op.spec}".rstrip())
        elif op.kind == "delete_at":
            lines.append(f"-D {op.chain} {op.index}")
        else:
            lines.append(f"-X {op.chain}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def apply_ops(state: TableState, ops: Iterable[Op]) -> None:
    """What a committed transaction did to the table, applied IN PLACE to ``state``: the writer's
    view of the table after a successful commit, so the next plan needs no re-read."""
    for op in ops:
        rules = state.setdefault(op.chain, [])
        if op.kind == "chain":
            rules.clear()
        elif op.kind == "append":
            rules.append(_saved(op.spec))
        elif op.kind == "insert":
            rules.insert(op.index - 1, _saved(op.spec))
        elif op.kind == "replace":
            rules[op.index - 1] = _saved(op.spec)
        elif op.kind == "delete_at":
            del rules[op.index - 1]
        elif op.kind == "delete":
            gone = _saved(op.spec).hash
            state[op.chain] = [r for r in rules if r.hash != gone]
        else:
            del state[op.chain]


def _saved(spec: str) -> SavedRule:
    m = _HASH_RE.search(spec)
    return SavedRule(m.group(1) if m else None, spec)
