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
    render_restore,
    rule_hashes,
)
from felixpy.dataplane.model import Chain, Rule

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
    out += [Chain(f"cali-pi-{i}", tuple(Rule(match=f"-s 10.{i}.{k}.0/24", action="--jump ACCEPT")
                                        for k in range(5 + variant))) for i in range(n)]
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
    (table, ops), = kernel.writes
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
    writer = IptablesWriter(kernel, hooks=[HOOK], post_write_check=5, max_post_write_check=20,
                            clock=lambda: now[0])
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


def test_resync_reads_every_table_in_one_save_when_the_backend_can():
    class SaveAll(FakeKernel):
        def __init__(self) -> None:
            super().__init__()
            self.read_alls = 0

        def read_all(self) -> dict[str, dict[str, list[SavedRule]]]:
            self.read_alls += 1
            return copy.deepcopy(self.tables)

    kernel = SaveAll()
    writer = IptablesWriter(kernel, hooks=[HOOK])
    writer.set_chains([*_chains(2), Chain("cali-nat", (Rule(action="--jump MASQUERADE"),), table="nat")])
    assert {r.table for r in writer.apply() if r.read} == {"raw", "mangle", "nat", "filter"}
    kernel.tables["nat"]["cali-nat"].clear()
    results = {r.table: r for r in writer.resync()}
    assert kernel.read_alls == 2 and kernel.reads == []
    assert results["nat"].read and results["nat"].rewritten == ("cali-nat",)
    assert kernel.hashes("nat", "cali-nat") == rule_hashes("cali-nat", [Rule(action="--jump MASQUERADE")])
