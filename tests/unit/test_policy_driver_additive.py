"""PolicyDriver fed by calc's policy stage (the real compiler) and IptablesWriter over an in-memory kernel.

A pod added while an earlier DEL's removals are still pending goes in with an insert-only
transaction (its chains, its dispatch rules); the deleted pod's dispatch rules, chains and the
ipsets only they used stay until the next plain commit, which removes them all. In between, every
chain the compiler wants holds exactly its rules, and a leftover rule matches only the gone pod's
interface.
"""

from __future__ import annotations

import copy
from typing import Any

from felixpy.calc.policy_stage import PolicyCalc
from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_render import jump_target, rule_body, saved_body
from felixpy.dataplane.policy_driver import PolicyDriver
from policy.chain_names import FROM_WL_DISPATCH, TO_WL_DISPATCH, ipset_name
from policy.compiler import PolicyCompiler
from policy.entities import Endpoint, EntityMatch, Policy, PolicyRule
from policy.selector import parse
from tests.unit.test_dataplane_iptables_writer import FakeKernel

BUILTIN = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}


class Kernel(FakeKernel):
    def __init__(self) -> None:
        super().__init__()
        self.tables = {t: {c: [] for c in chains} for t, chains in BUILTIN.items()}

    def read(self, table: str) -> Any:
        self.reads.append(table)
        return copy.deepcopy(self.tables[table])


class Ipsets:
    """The IpsetWriter surface write_changes uses; ``kernel``: the sets that exist."""

    def __init__(self) -> None:
        self.desired: dict[str, Any] = {}
        self.kernel: set[str] = set()
        self.destroyed: list[str] = []

    def update_ipset(self, s: Any) -> None:
        self.desired[s.name] = s

    def remove_ipset(self, name: str) -> None:
        self.desired.pop(name, None)

    def apply_updates(self) -> list[str]:
        self.kernel |= set(self.desired)
        return []

    def apply_deletions(self) -> list[str]:
        gone = sorted(self.kernel - set(self.desired))
        self.kernel -= set(gone)
        self.destroyed += gone
        return gone


def _ep(name: str, ip: str, app: str) -> Endpoint:
    return Endpoint(
        key=f"default/{name}",
        namespace="default",
        labels={"app": app},
        ips=(ip,),
        iface=f"cali{name}",
        node="n1",
        profiles=("kns.default",),
    )


class Pipeline:
    """calc's policy stage, then the driver: what the writer loop does with one batch."""

    def __init__(self, compiler: PolicyCompiler, driver: PolicyDriver) -> None:
        self.calc, self.driver = PolicyCalc([compiler]), driver

    def commit(self, additive: bool = False) -> bool:
        self.driver.on_updates(self.calc.flush())
        return self.driver.commit(additive)

    @property
    def deferred(self) -> bool:
        return self.driver.deferred

    def endpoint_programmed(self, iface: str) -> bool:
        return self.driver.endpoint_programmed(iface)


def _setup() -> tuple[Kernel, Ipsets, PolicyCompiler, Pipeline]:
    kernel, ipsets = Kernel(), Ipsets()
    compiler = PolicyCompiler("n1")
    driver = Pipeline(compiler, PolicyDriver(4, IptablesWriter(kernel), ipsets))  # type: ignore[arg-type]
    # db pods accept only from web pods: the policy's rule uses an ipset of the web pods' addresses
    allow_web = PolicyRule("Allow", source=EntityMatch(selector=parse("app == 'web'")))
    compiler.update_policy(
        Policy(id="gnp/db", selector=parse("app == 'db'"), types=frozenset({"Ingress"}), ingress=(allow_web,))
    )
    compiler.update_endpoint(_ep("web1", "10.0.0.1", "web"))
    compiler.update_endpoint(_ep("db1", "10.0.0.2", "db"))
    assert driver.commit() and not driver.deferred
    kernel.writes.clear()
    return kernel, ipsets, compiler, driver


def _wanted_rules_in_place(kernel: Kernel, compiler: PolicyCompiler, gone_ifaces: set[str]) -> None:
    """Every desired chain holds its rules in order; anything else is a dispatch rule of a gone pod."""
    for (table, name), chain in compiler.chains().items():
        got = kernel.tables[table][name]
        want = [rule_body(r) for r in chain.rules]
        extra = [r for r in got if saved_body(r) not in want]
        assert [saved_body(r) for r in got if r not in extra] == want, name
        for r in extra:
            assert name.startswith((FROM_WL_DISPATCH, TO_WL_DISPATCH)), (name, r)
            target = jump_target(r.spec)
            assert target is not None and target[len("cali-tw-") :] in gone_ifaces, (name, r)
            assert (table, target) not in compiler.chains(), "goes to a chain of the gone pod"


def test_add_right_after_a_del_is_insert_only_and_the_flush_removes_the_rest() -> None:
    kernel, ipsets, compiler, driver = _setup()
    web_set = ipset_name(parse("app == 'web'").unique_id)  # used by the db policy only
    assert web_set in ipsets.kernel
    compiler.remove_endpoint("default/db1")  # the DEL: its commit is deferred (deferral.PolicyDeferral)
    compiler.update_endpoint(_ep("other1", "10.0.0.2", "other"))  # the same address, another pod
    assert driver.commit(additive=True)
    ops = [o for _, ops in kernel.writes for o in ops]
    assert {o.kind for o in ops} <= {"chain", "insert", "append"}
    assert {o.chain for o in ops if o.kind == "chain"} <= {n for _, n in compiler.chains()}, "only new chains"
    assert driver.endpoint_programmed("caliother1")
    _wanted_rules_in_place(kernel, compiler, {"calidb1"})
    assert "cali-tw-calidb1" in kernel.tables["filter"] and driver.deferred
    assert ipsets.destroyed == [] and web_set in ipsets.kernel, "still used by the chains left behind"

    kernel.writes.clear()
    assert driver.commit()
    assert not driver.deferred
    chains = compiler.chains()
    ours = {(t, n) for t, cs in kernel.tables.items() for n in cs if n.startswith("cali-")}
    assert ours == set(chains), "exactly the wanted chains"
    _wanted_rules_in_place(kernel, compiler, set())
    for (table, name), chain in chains.items():
        assert len(kernel.tables[table][name]) == len(chain.rules)
    assert ipsets.destroyed == [web_set]


def test_a_new_pod_alone_is_insert_only_and_leaves_only_hash_fixups() -> None:
    kernel, _, compiler, driver = _setup()
    compiler.update_endpoint(_ep("zz", "10.0.0.3", "web"))  # a dispatch group of its own
    assert driver.commit(additive=True)
    ops = [o for _, ops in kernel.writes for o in ops]
    assert {o.kind for o in ops} <= {"chain", "insert", "append"} and any(o.kind == "insert" for o in ops)
    _wanted_rules_in_place(kernel, compiler, set())
    assert driver.endpoint_programmed("calizz")
    driver.commit()
    assert not driver.deferred


def test_a_policy_for_a_whole_group_is_an_insert_only_write_of_two_chains() -> None:
    """Issue 15: the cost of a new policy is the policy's, not its group's. Ten db pods share one list
    chain; a policy selecting all of them writes its own chain and inserts into that list chain,
    nothing else (no endpoint chain), and the next plain commit only fixes hash comments."""
    kernel, _, compiler, driver = _setup()
    for n in range(2, 11):
        compiler.update_endpoint(_ep(f"db{n}", f"10.0.1.{n}", "db"))
    assert driver.commit() and not driver.deferred
    kernel.writes.clear()
    deny = PolicyRule("Deny", protocol=6)
    compiler.update_policy(
        Policy(
            id="gnp/db2",
            selector=parse("app == 'db'"),
            types=frozenset({"Ingress"}),
            ingress=(deny,),
            order=5,
        )
    )
    assert driver.commit(additive=True)
    ops = [o for _, ops in kernel.writes for o in ops]
    assert {o.kind for o in ops} <= {"chain", "insert", "append"}
    assert {o.chain for o in ops} == {"cali-pi-gnp/db2", _list_of(kernel, "cali-tw-calidb1")}
    _wanted_rules_in_place(kernel, compiler, set())
    kernel.writes.clear()
    assert driver.commit() and not driver.deferred
    assert {o.chain for _, ops in kernel.writes for o in ops} == {_list_of(kernel, "cali-tw-calidb1")}
    for (table, name), chain in compiler.chains().items():
        assert len(kernel.tables[table][name]) == len(chain.rules)


def _list_of(kernel: Kernel, endpoint_chain: str) -> str:
    target = jump_target(kernel.tables["filter"][endpoint_chain][-1].spec)
    assert target is not None
    return target
