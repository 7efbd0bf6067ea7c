"""Start-up calc cost, session 10 (issue 15 goal 2), without a change of behaviour: the IPv6 compiler
takes the IPv4 compiler's selection of each policy instead of evaluating its selector again, and
gives the same output as a compiler fed alone; the agent's writer builds the synced kinds'
validators while it waits for the snapshot; the ``datastore.in_sync`` line says what the snapshot
cost the writer."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from structlog.testing import capture_logs

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import PolicyInputsUpdate
from felixpy.datastore.resources import LazyResourceEvent, encode
from felixpy.resources import GlobalNetworkPolicy, WorkloadEndpoint
from felixpy.runtime.writer import InSyncMsg, ResourceMsg, Writer
from policy.chains import ChainConfig
from policy.compiler import PolicyCompiler

NODE = "n1"


def _wep(i: int, node: str = NODE, app: str | None = None, v6: bool = False) -> WorkloadEndpoint:
    nets = [f"10.0.{i // 250}.{i % 250 + 1}/32"] + ([f"fd00::{i + 1:x}/128"] if v6 else [])
    labels = {"app": app or f"a{i % 3}", "i": str(i)}
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"name": f"ep{i}", "namespace": "ns", "labels": labels},
            "spec": {"node": node, "pod": f"p{i}", "endpoint": "eth0", "interfaceName": f"cali{i:05d}",
                     "ipNetworks": nets},
        }
    )  # fmt: skip


def _gnp(j: int, selector: str, peer: str = "app == 'a1'") -> GlobalNetworkPolicy:
    rule = {"action": "Allow", "source": {"selector": peer}}
    return GlobalNetworkPolicy.model_validate(
        {"metadata": {"name": f"pol{j}"}, "spec": {"selector": selector, "ingress": [rule], "egress": [rule]}}
    )


def _inputs() -> list[tuple[str, tuple[str, str], Any]]:
    """Endpoints (local, remote, dual-stack), policies, then changes of labels, selectors, a removal."""
    out: list[tuple[str, tuple[str, str], Any]] = []
    for i in range(12):
        out.append(("WorkloadEndpoint", ("ns", f"ep{i}"), _wep(i, NODE if i < 8 else "n2", v6=i % 4 == 0)))
    for j, sel in enumerate(["app == 'a0'", "app == 'a1' || i == '5'", "all()", "has(i) && app != 'a2'"]):
        out.append(("GlobalNetworkPolicy", ("", f"pol{j}"), _gnp(j, sel)))
    out.append(("WorkloadEndpoint", ("ns", "ep3"), _wep(3, app="a0")))
    out.append(("GlobalNetworkPolicy", ("", "pol0"), _gnp(0, "app == 'a0' || i == '7'")))
    out.append(("WorkloadEndpoint", ("ns", "ep9"), _wep(9, node=NODE)))  # a remote endpoint moves here
    out.append(("WorkloadEndpoint", ("ns", "ep1"), None))
    out.append(("GlobalNetworkPolicy", ("", "pol2"), None))
    out.append(("GlobalNetworkPolicy", ("", "pol4"), _gnp(4, "i in {'2', '6'}")))
    return out


def _compilers() -> list[PolicyCompiler]:
    return [PolicyCompiler(NODE, config=ChainConfig(version=v)) for v in (4, 6)]


def test_the_ipv6_compiler_takes_the_ipv4_selection_and_its_output_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two compilers fed together by PolicyCalc (sharing selections) emit, after every input, exactly
    what the same compilers emit when each is fed alone by its own PolicyCalc (nothing shared)."""
    evaluated: list[int] = []
    real = PolicyCompiler._local_candidates

    def counting(self: PolicyCompiler, selector: Any) -> Any:
        evaluated.append(self.version)
        return real(self, selector)

    monkeypatch.setattr(PolicyCompiler, "_local_candidates", counting)
    together = PolicyCalc(_compilers())
    alone = [PolicyCalc([c]) for c in _compilers()]
    assert together._share is not None and all(a._share is None for a in alone)
    for kind, key, obj in _inputs():
        together.on_resource(kind, key, obj)
        for calc in alone:
            calc.on_resource(kind, key, obj)
        assert together._share.policy is None  # emptied after each input
        out, own = together.flush(), [calc.flush() for calc in alone]
        assert out == own[0][:1] + [u for o in own for u in o if not isinstance(u, PolicyInputsUpdate)]
    new_policies = 5 + 1  # four, a selector change, one more
    assert evaluated.count(4) == new_policies * 2  # together and alone
    assert evaluated.count(6) == new_policies  # alone only: together, IPv6 took IPv4's selection
    for mine, own in zip(together.compilers, [c for calc in alone for c in calc.compilers], strict=True):
        assert mine.chains() == own.chains() and mine.ipsets() == own.ipsets()
        assert mine._selected == own._selected and mine._ep_policies == own._ep_policies


def test_a_failing_first_compiler_leaves_no_selection_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    calc = PolicyCalc(_compilers())
    calc.on_resource("WorkloadEndpoint", ("ns", "ep1"), _wep(1))

    def boom(self: PolicyCompiler, p: Any) -> None:
        raise RuntimeError("hostraw failed")

    monkeypatch.setattr("policy.compile_hostraw.HostRawPolicies.update_policy", boom)
    with pytest.raises(RuntimeError):
        calc.on_resource("GlobalNetworkPolicy", ("", "pol0"), _gnp(0, "all()"))
    assert calc._share is not None and calc._share.policy is None


def test_build_models_builds_the_synced_kinds_until_told_to_stop() -> None:
    """In a fresh interpreter (pydantic builds each kind's validator on first use): stopped at once it
    builds nothing; otherwise every synced kind is built, and validating then builds nothing more."""
    script = (
        "from felixpy.runtime.sync import SYNCED_KINDS, build_models\n"
        "assert not any(k.__pydantic_complete__ for k in SYNCED_KINDS)\n"
        "assert build_models(SYNCED_KINDS, stop=lambda: True) == 0\n"
        "assert build_models(SYNCED_KINDS, stop=lambda: False) == len(SYNCED_KINDS)\n"
        "assert all(k.__pydantic_complete__ for k in SYNCED_KINDS)\n"
        "assert build_models(SYNCED_KINDS, stop=lambda: False) == 0\n"
        "calls = []\n"
        "assert build_models(SYNCED_KINDS, stop=lambda: calls.append(1) or len(calls) > 3) == 0\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class _Kept:
    def apply(self, updates: list[Any]) -> None:
        pass

    def commit(self) -> bool:
        return True

    def resync(self, what: str) -> None:
        pass

    def post_write_check(self) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def commit_deferred(self) -> bool:
        return True


def test_the_in_sync_line_says_what_the_snapshot_cost_the_writer() -> None:
    writer = Writer(CalcGraph(NODE, policy=PolicyCalc(_compilers())), _Kept())
    msgs: list[Any] = []
    for i in range(20):
        _, value = encode(_wep(i))
        ev = LazyResourceEvent("put", WorkloadEndpoint, f"ep{i}", "ns", value, 10 + i)
        msgs.append(ResourceMsg("WorkloadEndpoint", ("ns", f"ep{i}"), None, 10 + i, event=ev))
    assert not writer.has_work()
    writer.submit(msgs[0])
    assert writer.has_work()
    with capture_logs() as logs:
        writer._process(writer._take_batch())
        writer._process(msgs[1:])
        writer._process([InSyncMsg()])
    (line,) = [e for e in logs if e["event"] == "datastore.in_sync"]
    assert line["updates"] == 20
    assert 0 <= line["feed_cpu_s"] <= line["process_cpu_s"] + 0.01
    assert line["feed_s"] >= 0
    assert writer.ready


def test_messages_submitted_together_come_out_in_order_in_batches_of_at_most_max_batch() -> None:
    """``submit_many`` (the syncer's batches: one queue operation each) against single submits: every
    message comes out once, in submission order, no batch over ``max_batch``, and ``has_work``
    holds while any is left."""
    writer = Writer(CalcGraph(NODE), _Kept(), max_batch=7)
    msgs: list[Any] = [InSyncMsg() for _ in range(40)]
    writer.submit_many(msgs[:18])
    writer.submit(msgs[18])
    writer.submit_many([])
    writer.submit_many(msgs[19:30])
    writer.submit(msgs[30])
    writer.submit_many(msgs[31:])
    out: list[Any] = []
    sizes = []
    while writer.has_work():
        batch = writer._take_batch()
        sizes.append(len(batch))
        out += batch
    assert [id(m) for m in out] == [id(m) for m in msgs]
    assert max(sizes) == 7 and sum(sizes) == 40
    assert writer._take_batch() == []  # (waits at most its bound: nothing queued)
