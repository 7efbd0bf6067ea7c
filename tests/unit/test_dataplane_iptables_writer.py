"""IptablesWriter against an in-memory kernel: cached view, incremental plans, re-read on failure.

``FakeKernel`` interprets the writer's ops on its own (not with ``apply_ops``), atomically, and
fails the way ``iptables-restore`` does (a ``-R``/``-D n`` past the end, a rule in a missing
chain), so the writer's view and the kernel can be compared.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Sequence

import pytest

from felixpy.dataplane.errors import CommandFailed
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_render import (
    Hook,
    Op,
    SavedRule,
    apply_ops,
    plan_chain,
    plan_chain_additive,
    render_restore,
    render_rule,
    rule_body,
    rule_hashes,
    saved_body,
)
from felixpy.dataplane.kernel_objects import Chain, Rule

_HASH = re.compile(r"cali:([A-Za-z0-9_-]{16})")
HOOK = Hook("filter", "FORWARD", Rule(action="--jump cali-FORWARD"))


def _rule(spec: str) -> SavedRule:
    m = _HASH.search(spec)
    return SavedRule(m.group(1) if m else None, spec)


class FakeKernel:
    """Tables of (hash, spec) rules; every write is one all-or-nothing transaction."""

    name = "fake"

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[SavedRule]]] = {}
        self.reads: list[str] = []
        self.writes: list[tuple[str, list[Op]]] = []

    def read(self, table: str) -> dict[str, list[SavedRule]]:
        self.reads.append(table)
        return copy.deepcopy(self.tables.get(table, {"FORWARD": [], "INPUT": [], "OUTPUT": []}))

    def write(self, table: str, ops: Sequence[Op]) -> None:
        state = copy.deepcopy(self.tables.get(table, {"FORWARD": [], "INPUT": [], "OUTPUT": []}))
        for op in ops:
            if op.kind == "chain":
                state[op.chain] = []
                continue
            if op.chain not in state:
                raise CommandFailed(["fake-restore"], 1, f"{op.kind}: no chain {op.chain}")
            rules = state[op.chain]
            if op.kind in ("replace", "delete_at") and not 1 <= op.index <= len(rules):
                raise CommandFailed(["fake-restore"], 1, f"index {op.index} of {op.chain}: out of range")
            if op.kind == "append":
                rules.append(_rule(op.spec))
            elif op.kind == "insert":
                rules.insert(op.index - 1, _rule(op.spec))
            elif op.kind == "replace":
                rules[op.index - 1] = _rule(op.spec)
            elif op.kind == "delete_at":
                del rules[op.index - 1]
            elif op.kind == "delete":
                rules.remove(next(r for r in rules if r.hash == _rule(op.spec).hash))
            else:
                del state[op.chain]
        self.tables[table] = state
        self.writes.append((table, list(ops)))

    def hashes(self, table: str, chain: str) -> list[str | None]:
        return [r.hash for r in self.tables[table][chain]]


def _chains(n: int = 20, variant: int = 0) -> list[Chain]:
    out = [Chain("cali-FORWARD", (Rule(match="-i cali+", action="--jump cali-from-wl"),))]
    out += [
        Chain(
            f"cali-pi-{i}",
            tuple(Rule(match=f"-s 10.{i}.{k}.0/24", action="--jump ACCEPT") for k in range(5 + variant)),
        )
        for i in range(n)
    ]
    return out


def _converged(kernel: FakeKernel, writer_chains: list[Chain]) -> bool:
    return all(kernel.hashes(c.table, c.name) == rule_hashes(c.name, c.rules) for c in writer_chains)


def test_second_apply_plans_only_the_changed_chain_without_reading():
    kernel = FakeKernel()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    chains = _chains()
    writer.set_chains(chains)
    first = {r.table: r for r in writer.apply()}
    assert first["filter"].read and kernel.reads.count("filter") == 1
    kernel.reads.clear()
    kernel.writes.clear()
    changed = Chain("cali-pi-7", (*chains[8].rules[:2], Rule(match="-s 10.99.0.0/16", action="--jump DROP")))
    writer.update_chain(changed)
    (result,) = writer.apply()
    assert kernel.reads == []  # no iptables-save on the hot path
    assert result.rewritten == ("cali-pi-7",) and not result.read and result.ops == 3
    ((table, ops),) = kernel.writes
    assert table == "filter" and {o.chain for o in ops} == {"cali-pi-7"}
    assert [o.kind for o in ops] == ["replace", "delete_at", "delete_at"]  # prefix of 2 rules kept
    assert [o.index for o in ops] == [3, 5, 4]
    assert _converged(kernel, [changed])
    assert writer.apply() == []  # nothing dirty: no plan, no read, no write
    assert kernel.reads == [] and len(kernel.writes) == 1


def test_cached_view_misses_drift_until_resync_repairs_it():
    kernel = FakeKernel()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.set_chains(_chains())
    writer.apply()
    del kernel.tables["filter"]["cali-pi-3"][1]  # someone deletes one of our rules
    kernel.tables["filter"]["FORWARD"].clear()  # ... and our hook
    writer.update_chain(Chain("cali-pi-0", ()))
    writer.apply()
    assert len(kernel.hashes("filter", "cali-pi-3")) == 4  # not looked at: the view says fine
    results = {r.table: r for r in writer.resync()}
    assert results["filter"].read and results["filter"].rewritten == ("cali-pi-3",)
    assert kernel.hashes("filter", "FORWARD") == rule_hashes("FORWARD", [HOOK.rule])
    assert _converged(kernel, [Chain("cali-pi-0", ()), *_chains()[2:]])
    assert all(r.ops == 0 for r in writer.resync())


def test_failed_commit_on_a_stale_view_rereads_and_succeeds():
    kernel = FakeKernel()
    writer = IptablesWriter(kernel, hooks=[])
    writer.set_chains(_chains(3))
    writer.apply()
    del kernel.tables["filter"]["cali-pi-1"]  # deleted by someone else: -R into it must fail
    writer.update_chain(_chains(3, variant=1)[2])
    kernel.reads.clear()
    (result,) = writer.apply()
    assert kernel.reads == ["filter"] and result.read  # exactly one re-read, after the failure
    assert set(result.rewritten) == {"cali-pi-1"}
    assert _converged(kernel, [*_chains(3)[:2], _chains(3, variant=1)[2], _chains(3)[3]])


def test_commit_that_keeps_failing_raises_after_bounded_retries_and_forgets_the_view():
    class Broken(FakeKernel):
        def write(self, table: str, ops: Sequence[Op]) -> None:
            raise CommandFailed(["fake-restore"], 4, "resource busy")

    kernel = Broken()
    writer = IptablesWriter(kernel, hooks=[], retries=3)
    writer.set_chains(_chains(2))
    with pytest.raises(CommandFailed):
        writer.apply()
    assert kernel.reads.count("filter") == 3  # every attempt re-read
    kernel.reads.clear()
    with pytest.raises(CommandFailed):
        writer.apply()  # still dirty, and the view was not kept: re-read first
    assert kernel.reads[0] == "filter"


def test_post_write_check_rereads_after_a_write_then_backs_off():
    now = [100.0]
    kernel = FakeKernel()
    writer = IptablesWriter(
        kernel, hooks=[HOOK], post_write_check=5, max_post_write_check=20, clock=lambda: now[0]
    )
    writer.set_chains(_chains(2))
    writer.apply()
    kernel.reads.clear()
    assert writer.post_write_check() == []  # not due yet
    kernel.tables["filter"]["FORWARD"].clear()  # clobbered by a save/modify/restore elsewhere
    now[0] += 5
    results = {r.table: r for r in writer.post_write_check()}
    assert results["filter"].ops == 1 and "filter" in kernel.reads
    assert kernel.hashes("filter", "FORWARD") == rule_hashes("FORWARD", [HOOK.rule])
    seen = []
    for _ in range(8):  # bounded: 5 (repaired: reset), then 10, 20, then no more checks
        now[0] += 5
        kernel.reads.clear()
        writer.post_write_check()
        seen.append(bool(kernel.reads))
    assert seen == [True, False, True, False, False, False, True, False]


@pytest.mark.parametrize("seed", range(40))
def test_plan_chain_then_apply_ops_reaches_desired_from_any_state(seed):
    rnd = random.Random(seed)
    pool = [Rule(match=f"-s 10.0.{k}.0/24", action="--jump ACCEPT") for k in range(6)]
    old = [rnd.choice(pool) for _ in range(rnd.randrange(8))]
    new = [rnd.choice(pool) for _ in range(rnd.randrange(8))]
    have = [_rule(f'--comment "cali:{h}"') for h in rule_hashes("cali-x", old)]
    have.insert(rnd.randrange(len(have) + 1), SavedRule(None, "-j LOG"))  # a foreign rule
    want = rule_hashes("cali-x", new)
    ops = plan_chain("cali-x", new, want, have)
    kernel = FakeKernel()
    kernel.tables["filter"] = {"cali-x": list(have)}
    kernel.write("filter", ops)
    view = {"cali-x": list(have)}
    apply_ops(view, ops)
    assert kernel.hashes("filter", "cali-x") == want == [r.hash for r in view["cali-x"]]
    assert all(o.kind != "chain" for o in ops)  # no flush: the common prefix stays in place


def test_render_replace_and_delete_by_index():
    text = render_restore("filter", [Op("replace", "cali-x", "-j DROP", 2), Op("delete_at", "cali-x", "", 3)])
    assert text == "*filter\n-R cali-x 2 -j DROP\n-D cali-x 3\nCOMMIT\n"


class SaveAll(FakeKernel):
    """A kernel whose backend reads every table in one save (as iptables-save does), counted."""

    def __init__(self) -> None:
        super().__init__()
        self.read_alls = 0

    def read_all(self) -> dict[str, dict[str, list[SavedRule]]]:
        self.read_alls += 1
        return copy.deepcopy(self.tables)


def test_resync_reads_every_table_in_one_save_when_the_backend_can():
    kernel = SaveAll()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.set_chains([*_chains(2), Chain("cali-nat", (Rule(action="--jump MASQUERADE"),), table="nat")])
    assert {r.table for r in writer.apply() if r.read} == {"raw", "mangle", "nat", "filter"}
    kernel.tables["nat"]["cali-nat"].clear()
    results = {r.table: r for r in writer.resync()}
    assert kernel.read_alls == 2 and kernel.reads == []
    assert results["nat"].read and results["nat"].rewritten == ("cali-nat",)
    assert kernel.hashes("nat", "cali-nat") == rule_hashes("cali-nat", [Rule(action="--jump MASQUERADE")])


# --- additive (insert-only) apply -----------------------------------------------------------------
DISPATCH = "cali-to-wl-dispatch"
LEFTOVERS = (DISPATCH,)
ADDITIVE_KINDS = {"insert", "append"}


def _pod_chains(ifaces: Sequence[str], policy: str = "cali-tp-a") -> list[Chain]:
    """A dispatch chain like the policy compiler's (one goto per interface, then drop), each
    endpoint's chain going to a shared policy chain, and that policy chain."""
    leaves = [Rule(match=f"-o {i}", action=f"-g cali-tw-{i}") for i in sorted(ifaces)]
    out = [Chain(DISPATCH, (*leaves, Rule(action="-j DROP", comment="Unknown interface")))]
    out += [Chain(f"cali-tw-{i}", (Rule(action=f"-g {policy}"),)) for i in ifaces]
    out.append(
        Chain(
            policy, (Rule(match="-m conntrack --ctstate INVALID", action="-j DROP"), Rule(action="-j ACCEPT"))
        )
    )
    return out


def _bodies(kernel: FakeKernel, chain: str) -> list[str | None]:
    return [saved_body(r) for r in kernel.tables["filter"][chain]]


def _want_bodies(chains: list[Chain], name: str) -> list[str]:
    return [rule_body(r) for r in next(c for c in chains if c.name == name).rules]


def _writer(ifaces: Sequence[str]) -> tuple[FakeKernel, IptablesWriter]:
    kernel = FakeKernel()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.set_chains(
        [Chain("cali-FORWARD", (Rule(match="-o cali+", action=f"--jump {DISPATCH}"),)), *_pod_chains(ifaces)]
    )
    writer.apply()
    kernel.writes.clear()
    return kernel, writer


def test_additive_apply_adds_a_pod_without_replacing_anything_then_a_full_apply_fixes_hashes():
    kernel, writer = _writer(["calia", "calic"])
    chains = _pod_chains(["calia", "calib", "calic"])
    writer.update_chain(chains[0])
    writer.update_chain(chains[2])  # cali-tw-calib
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    ((_, ops),) = kernel.writes
    assert result.additive and not result.deleted
    assert [(o.kind, o.chain) for o in ops] == [
        ("chain", "cali-tw-calib"),
        ("insert", DISPATCH),
        ("append", "cali-tw-calib"),
    ]
    assert ops[1].index == 2  # between calia and calic: the order the compiler wants
    for c in chains:  # the rule text is exactly the desired one everywhere ...
        assert _bodies(kernel, c.name) == _want_bodies(chains, c.name)
    # ... but the rules after the insert (calic's, the drop) still carry the hashes of their old places
    assert kernel.hashes("filter", DISPATCH) != rule_hashes(DISPATCH, chains[0].rules)
    assert writer.pending and result.left == (DISPATCH,)
    kernel.writes.clear()
    (full,) = writer.apply()
    assert not full.additive
    assert [(o.kind, o.index) for o in kernel.writes[0][1]] == [("replace", 3), ("replace", 4)]
    assert _converged(kernel, chains) and not writer.pending
    assert all(r.ops == 0 for r in writer.resync())


def test_additive_apply_leaves_a_gone_pods_dispatch_rule_and_chain_until_the_full_apply():
    kernel, writer = _writer(["calia", "calib"])
    chains = _pod_chains(["calia", "calic"])  # calib deleted, calic added, in one batch
    writer.set_chains(
        [Chain("cali-FORWARD", (Rule(match="-o cali+", action=f"--jump {DISPATCH}"),)), *chains]
    )
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    assert result.additive and {o.kind for o in kernel.writes[0][1]} <= {"chain", *ADDITIVE_KINDS}
    assert "cali-tw-calib" in kernel.tables["filter"], "the gone pod's chain stays for now"
    got = _bodies(kernel, DISPATCH)
    assert got == [
        "-o calia -g cali-tw-calia",
        "-o calib -g cali-tw-calib",
        "-o calic -g cali-tw-calic",
        '-m comment --comment "Unknown interface" -j DROP',
    ]
    assert set(result.left) == {DISPATCH, "cali-tw-calib"} and writer.pending
    (full,) = writer.apply()
    assert full.deleted == ("cali-tw-calib",) and "cali-tw-calib" not in kernel.tables["filter"]
    assert _converged(kernel, chains) and not writer.pending


def test_additive_apply_falls_back_to_the_full_plan_when_something_must_go():
    # A rule replaced in a chain that is not a dispatch chain (the endpoint's policy changed).
    kernel, writer = _writer(["calia"])
    changed = _pod_chains(["calia"], policy="cali-tp-b")
    writer.set_chains(
        [Chain("cali-FORWARD", (Rule(match="-o cali+", action=f"--jump {DISPATCH}"),)), *changed]
    )
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    assert not result.additive and result.deleted == ("cali-tp-a",)
    assert _converged(kernel, changed) and not writer.pending
    # A dispatch rule going to a chain that stays desired (not a gone endpoint's): must be removed.
    kernel, writer = _writer(["calia", "calib"])
    kept = _pod_chains(["calia", "calib"])
    writer.update_chain(Chain(DISPATCH, (kept[0].rules[0], kept[0].rules[2])))  # calib's rule dropped
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    assert not result.additive and len(kernel.tables["filter"][DISPATCH]) == 2
    # Without leftover chains nothing may stay: a pod's removal is a full plan.
    kernel, writer = _writer(["calia", "calib"])
    writer.set_chains(
        [
            Chain("cali-FORWARD", (Rule(match="-o cali+", action=f"--jump {DISPATCH}"),)),
            *_pod_chains(["calia"]),
        ]
    )
    (result,) = writer.apply(additive=True)
    assert not result.additive and "cali-tw-calib" not in kernel.tables["filter"]


def test_a_dispatch_group_rule_going_to_a_gone_dispatch_child_is_not_left_behind():
    """A child dispatch chain dropped (its group shrank) would still catch new members' packets."""
    kernel = FakeKernel()
    writer = IptablesWriter(kernel, hooks=[])
    child = Chain(
        f"{DISPATCH}-1",
        (
            Rule(match="-o cali11", action="-g cali-tw-cali11"),
            Rule(match="-o cali12", action="-g cali-tw-cali12"),
        ),
    )
    root = Chain(DISPATCH, (Rule(match="-o cali1+", action=f"-g {child.name}"), Rule(action="-j DROP")))
    eps = [Chain(f"cali-tw-cali1{k}", (Rule(action="-j ACCEPT"),)) for k in (1, 2, 3)]
    writer.set_chains([root, child, *eps[:2]])
    writer.apply()
    new_root = Chain(DISPATCH, (Rule(match="-o cali13", action="-g cali-tw-cali13"), Rule(action="-j DROP")))
    writer.set_chains([new_root, eps[2]])
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    assert not result.additive
    assert _bodies(kernel, DISPATCH) == [rule_body(r) for r in new_root.rules]


def test_additive_plan_works_on_a_view_read_back_in_iptables_save_spelling():
    """After a resync the view is what iptables-save printed; converged chains get our own
    rendering back, so the next pod still goes in insert-only."""

    class Respelling(FakeKernel):
        def read(self, table: str) -> dict[str, list[SavedRule]]:
            state = super().read(table)
            return {
                c: [
                    SavedRule(
                        r.hash,
                        r.spec.replace('"cali:', "cali:", 1)
                        .replace(f'cali:{r.hash}"', f"cali:{r.hash}")
                        .replace("-g ", "--goto "),
                    )
                    for r in rules
                ]
                for c, rules in state.items()
            }

    kernel = Respelling()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.set_chains(_pod_chains(["calia"]))
    writer.apply()
    assert all(r.ops == 0 for r in writer.resync())
    writer.set_chains(_pod_chains(["calia", "calib"]))
    (result,) = writer.apply(additive=True, leftover_chains=LEFTOVERS)
    assert result.additive


@pytest.mark.parametrize("seed", range(60))
def test_plan_chain_additive_is_exactly_insert_only_reachability(seed):
    """Random kernel/desired chains: a plan exists iff the kernel's rules, less the ones allowed to
    stay, are the desired rules in order with some missing; applied, it gives the desired rules with
    the leftovers in their old order, by inserts and appends only."""
    rnd = random.Random(seed)
    pool = [Rule(match=f"-o cali{k}", action=f"-g cali-tw-cali{k}") for k in range(6)]
    gone = [Rule(match=f"-o caliold{k}", action=f"-g cali-tw-old{k}") for k in range(3)]
    new = rnd.sample(pool, rnd.randrange(len(pool) + 1))
    if rnd.random() < 0.7:  # often a real subsequence of the desired rules (the ADD case)
        kept = [r for r in new if rnd.random() < 0.6]
    else:
        kept = rnd.sample(pool, rnd.randrange(4))
    old = list(kept)
    for r in rnd.sample(gone, rnd.randrange(3)):
        old.insert(rnd.randrange(len(old) + 1), r)
    have = [SavedRule(h, render_rule(h, r)) for h, r in zip(rule_hashes("cali-x", old), old, strict=True)]
    want = rule_hashes("cali-x", new)

    def may_stay(rule: SavedRule) -> bool:
        return "cali-tw-old" in rule.spec

    ops = plan_chain_additive("cali-x", new, want, have, may_stay)
    left = [saved_body(r) for r in have if not may_stay(r)]
    bodies = [rule_body(r) for r in new]
    it = iter(bodies)
    reachable = all(b in it for b in left)  # subsequence test
    assert (ops is not None) == reachable
    if ops is None:
        return
    assert {o.kind for o in ops} <= ADDITIVE_KINDS
    kernel = FakeKernel()
    kernel.tables["filter"] = {"cali-x": list(have)}
    kernel.write("filter", ops)
    got = _bodies(kernel, "cali-x")
    assert [b for b in got if "cali-tw-old" not in (b or "")] == bodies
    assert [b for b in got if "cali-tw-old" in (b or "")] == [saved_body(r) for r in have if may_stay(r)]
    view = {"cali-x": list(have)}
    apply_ops(view, ops)
    assert [r.spec for r in view["cali-x"]] == [r.spec for r in kernel.tables["filter"]["cali-x"]]
