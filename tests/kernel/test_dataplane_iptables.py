"""IptablesWriter through each backend, inside a throwaway namespace."""

from __future__ import annotations

import re

import pytest

from felixpy.dataplane.iptables import IptablesWriter
from felixpy.dataplane.iptables_backend import detect_mode, make_backend, tool
from felixpy.dataplane.iptables_render import Hook, rule_hashes
from felixpy.dataplane.kernel_objects import Chain, Rule

pytestmark = pytest.mark.kernel
BACKENDS = ["legacy", "nft", "python-iptables"]
HOOKS = [
    Hook("filter", "FORWARD", Rule(action="--jump cali-FORWARD")),
    Hook("filter", "INPUT", Rule(action="--jump cali-INPUT")),
    Hook("nat", "POSTROUTING", Rule(action="--jump cali-POSTROUTING"), append=True),
]


def _chains(n_rules: int = 3) -> list[Chain]:
    fw = [
        Rule(
            match="-m conntrack --ctstate RELATED,ESTABLISHED",
            action="--jump ACCEPT",
            comment="Accept established",
        )
    ]
    fw += [
        Rule(match=f"-s 10.65.{i}.0/24 -p tcp -m tcp --dport {80 + i}", action="--jump DROP")
        for i in range(n_rules)
    ]
    return [
        Chain("cali-FORWARD", (*fw, Rule(match="-o cali+", action="--jump cali-to-wl-dispatch"))),
        Chain("cali-to-wl-dispatch", (Rule(match="! -i lo", action="--jump RETURN"),)),
        Chain("cali-INPUT", ()),
        Chain(
            "cali-POSTROUTING",
            (Rule(match="-s 10.65.0.0/16 ! -d 10.65.0.0/16", action="--jump MASQUERADE"),),
            table="nat",
        ),
    ]


def _save(ns, kind: str, table: str = "filter") -> str:
    mode = "legacy" if kind == "python-iptables" else kind
    return ns.run(tool(mode, "save"), "-t", table)  # type: ignore[arg-type]


def _rules(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


@pytest.fixture(params=BACKENDS)
def setup(request, netns):
    ns = netns("ipt")
    backend = make_backend(request.param, netns=ns.name)
    yield ns, request.param, IptablesWriter(backend, hooks=HOOKS)
    if hasattr(backend, "close"):
        backend.close()


def test_chains_and_hooks_written_with_calico_hashes(setup):
    ns, kind, writer = setup
    writer.set_chains(_chains())
    results = {r.table: r for r in writer.apply()}
    assert set(results["filter"].rewritten) == {"cali-FORWARD", "cali-to-wl-dispatch", "cali-INPUT"}
    text = _save(ns, kind)
    fwd = _rules(text, "FORWARD")
    assert len(fwd) == 1 and "cali:wUHhoiAYhphO9Mso" in fwd[0]  # same hash as Go Felix
    hashes = rule_hashes("cali-FORWARD", _chains()[0].rules)
    got = _rules(text, "cali-FORWARD")
    assert [h in line for h, line in zip(hashes, got, strict=True)] == [True] * len(hashes)
    assert "MASQUERADE" in _save(ns, kind, "nat")
    assert all(r.ops == 0 for r in writer.resync())  # converged


def test_resync_restores_deleted_rule_and_keeps_foreign_rules(setup):
    ns, kind, writer = setup
    mode = "legacy" if kind == "python-iptables" else kind
    ns.run(
        tool(mode, "restore").replace("restore", "restore"),
        "--noflush",
        input="*filter\n:OTHER - -\n-A FORWARD -s 192.0.2.1/32 -j DROP\n-A OTHER -j ACCEPT\nCOMMIT\n",
    )
    writer.set_chains(_chains())
    writer.apply()
    ns.run("iptables-legacy" if mode == "legacy" else "iptables-nft", "-D", "cali-FORWARD", "2")
    ns.run("iptables-legacy" if mode == "legacy" else "iptables-nft", "-D", "FORWARD", "1")
    results = {r.table: r for r in writer.resync()}
    assert results["filter"].rewritten == ("cali-FORWARD",)
    text = _save(ns, kind)
    fwd = _rules(text, "FORWARD")
    assert "cali:wUHhoiAYhphO9Mso" in fwd[0] and "192.0.2.1" in fwd[1] and len(fwd) == 2
    assert len(_rules(text, "cali-FORWARD")) == len(_chains()[0].rules)
    assert _rules(text, "OTHER") and ":OTHER" in text


def test_obsolete_chains_and_hooks_removed(setup):
    ns, kind, writer = setup
    writer.set_chains(_chains())
    writer.apply()
    writer.set_chains([c for c in _chains() if c.name not in ("cali-INPUT", "cali-POSTROUTING")])
    writer.set_hooks(HOOKS[:1])
    results = {r.table: r for r in writer.apply()}
    assert results["filter"].deleted == ("cali-INPUT",)
    assert results["nat"].deleted == ("cali-POSTROUTING",)
    text = _save(ns, kind)
    assert ":cali-INPUT" not in text and not _rules(text, "INPUT")
    assert "cali" not in _save(ns, kind, "nat")


def test_detect_mode_prefers_table_with_more_rules(netns):
    ns = netns("det")
    assert detect_mode(netns=ns.name) == "nft"  # empty on both: nft
    ns.run("iptables-legacy", "-A", "INPUT", "-s", "192.0.2.1/32", "-j", "DROP")
    assert detect_mode(netns=ns.name) == "legacy"
    for i in range(2):  # nft with more rules than legacy wins again
        ns.run("iptables-nft", "-A", "INPUT", "-s", f"192.0.2.{10 + i}/32", "-j", "DROP")
    assert detect_mode(netns=ns.name) == "nft"


def test_detect_mode_reads_no_nft_dump_when_legacy_is_empty(netns, monkeypatch):
    """An agent restart: nft holds our rules, legacy none. The answer (nft) needs no nft dump,
    which costs 0.6-1.9 s at 10,000 rules on a loaded machine."""
    import felixpy.dataplane.iptables_backend as backend

    ns = netns("detnft")
    ns.run("iptables-nft", "-A", "INPUT", "-s", "192.0.2.1/32", "-j", "DROP")
    ran: list[str] = []
    real_run = backend.run
    monkeypatch.setattr(backend, "run", lambda argv, **kw: ran.append(" ".join(argv)) or real_run(argv, **kw))
    assert detect_mode(netns=ns.name) == "nft"
    assert detect_mode(ipv6=True, netns=ns.name) == "nft"
    assert ran == [  # nft asked for its raw table only (does it work at all), not dumped whole
        "iptables-legacy-save", "iptables-nft-save -t raw",
        "ip6tables-legacy-save", "ip6tables-nft-save -t raw",
    ]  # fmt: skip


def test_detect_mode_keeps_legacy_when_nft_does_not_work(netns, monkeypatch):
    """No legacy rule and a failing iptables-nft-save: legacy, as the full count gave (0 > -1)."""
    import felixpy.dataplane.iptables_backend as backend

    ns = netns("detfail")
    real_run = backend.run

    def run(argv, **kw):
        if "nft" in argv[0]:
            raise FileNotFoundError(argv[0])  # as on a host with only iptables-legacy installed
        return real_run(argv, **kw)

    monkeypatch.setattr(backend, "run", run)
    assert detect_mode(netns=ns.name) == "legacy"


def _cmd(kind: str) -> str:
    return "iptables-nft" if kind == "nft" else "iptables-legacy"


def test_incremental_apply_writes_one_chain_without_reading(setup, monkeypatch):
    ns, kind, writer = setup
    writer.set_chains(_chains())
    writer.apply()
    reads: list[str] = []
    real_read = writer.backend.read
    monkeypatch.setattr(writer.backend, "read", lambda table: reads.append(table) or real_read(table))
    changed = _chains(5)[0]  # cali-FORWARD with two more DROP rules before the dispatch jump
    writer.update_chain(changed)
    (result,) = writer.apply()
    assert reads == [] and not result.read and result.rewritten == ("cali-FORWARD",)
    got = _rules(_save(ns, kind), "cali-FORWARD")
    want = rule_hashes("cali-FORWARD", changed.rules)
    assert [h in line for h, line in zip(want, got, strict=True)] == [True] * len(want)
    assert "10.65.4.0/24" in got[5] and "cali-to-wl-dispatch" in got[-1]
    assert all(r.ops == 0 for r in writer.resync())  # the cached view matched the kernel


def test_stale_view_commit_fails_then_rereads_and_succeeds(setup):
    ns, kind, writer = setup
    writer.set_chains(_chains())
    writer.apply()
    # Someone else removes the jump to cali-to-wl-dispatch and deletes the chain itself.
    for argv in (("-F", "cali-FORWARD"), ("-F", "cali-to-wl-dispatch"), ("-X", "cali-to-wl-dispatch")):
        ns.run(_cmd(kind), *argv)
    new = Chain("cali-to-wl-dispatch", (Rule(match="! -i lo", action="--jump DROP"),))
    writer.update_chain(new)  # planned as -R cali-to-wl-dispatch 1 on the cached view: fails
    (result,) = writer.apply()
    assert result.read  # recovered by re-reading
    assert set(result.rewritten) == {"cali-FORWARD", "cali-to-wl-dispatch"}
    text = _save(ns, kind)
    assert len(_rules(text, "cali-FORWARD")) == len(_chains()[0].rules)
    (line,) = _rules(text, "cali-to-wl-dispatch")
    assert rule_hashes("cali-to-wl-dispatch", new.rules)[0] in line and "DROP" in line
    assert all(r.ops == 0 for r in writer.resync())


def test_drift_hidden_from_cached_view_is_repaired_by_resync(setup):
    ns, kind, writer = setup
    writer.set_chains(_chains())
    writer.apply()
    ns.run(_cmd(kind), "-D", "cali-FORWARD", "3")
    writer.update_chain(Chain("cali-INPUT", (Rule(action="--jump ACCEPT"),)))
    writer.apply()  # incremental: only cali-INPUT is compared, the drift is not seen
    assert len(_rules(_save(ns, kind), "cali-FORWARD")) == len(_chains()[0].rules) - 1
    results = {r.table: r for r in writer.resync()}
    assert results["filter"].read and results["filter"].rewritten == ("cali-FORWARD",)
    got = _rules(_save(ns, kind), "cali-FORWARD")
    assert len(got) == len(_chains()[0].rules) and "10.65.1.0/24" in got[2]


def _pod_chains(ifaces: list[str]) -> list[Chain]:
    """_chains() with a dispatch chain like the policy compiler's: a goto per pod interface, then drop."""
    leaves = [Rule(match=f"-o {i}", action=f"-g cali-tw-{i}") for i in ifaces]
    dispatch = Chain("cali-to-wl-dispatch", (*leaves, Rule(action="-j DROP", comment="Unknown interface")))
    pods = [
        Chain(f"cali-tw-{i}", (Rule(match="-m conntrack --ctstate INVALID", action="-j DROP"),))
        for i in ifaces
    ]
    return [*(c for c in _chains() if c.name != dispatch.name), dispatch, *pods]


def test_additive_apply_inserts_in_place_then_a_full_apply_cleans_up(setup):
    """A pod added while another's removal is pending: one insert-only transaction (the new chain,
    its dispatch rule inserted before the drop); the gone pod's rule and chain stay until the full
    apply, which also rewrites the hash comments the insert shifted."""
    ns, kind, writer = setup
    writer.set_chains(_pod_chains(["calia", "calic"]))
    writer.apply()
    writer.set_chains(_pod_chains(["calia", "calib"]))  # calic deleted, calib added
    (result,) = writer.apply(additive=True, leftover_chains=("cali-to-wl-dispatch",))
    assert result.additive and result.deleted == () and result.table == "filter"
    text = _save(ns, kind)
    got = _rules(text, "cali-to-wl-dispatch")
    # the gone pod's rule stays where it was; the new one goes right before the rule it precedes
    assert [re.search(r"-o (\S+)", line)[1] for line in got[:3]] == ["calia", "calic", "calib"]  # type: ignore[index]
    assert "DROP" in got[3] and len(got) == 4
    want = rule_hashes("cali-to-wl-dispatch", _pod_chains(["calia", "calib"])[-3].rules)
    assert want[1] in got[2], "the inserted rule carries its desired hash"
    assert ":cali-tw-calic" in text and ":cali-tw-calib" in text and writer.pending
    (full,) = writer.apply()
    assert full.deleted == ("cali-tw-calic",) and not writer.pending
    got = _rules(_save(ns, kind), "cali-to-wl-dispatch")
    assert [h in line for h, line in zip(want, got, strict=True)] == [True] * 3
    assert ":cali-tw-calic" not in _save(ns, kind)
    assert all(r.ops == 0 for r in writer.resync())


def test_resync_after_an_additive_apply_repairs_to_exactly_desired(setup):
    """The drift check treats what an additive apply left as drift: a resync alone converges."""
    ns, kind, writer = setup
    writer.set_chains(_pod_chains(["calia", "calic"]))
    writer.apply()
    writer.set_chains(_pod_chains(["calia", "calib"]))
    writer.apply(additive=True, leftover_chains=("cali-to-wl-dispatch",))
    results = {r.table: r for r in writer.resync()}
    assert results["filter"].read and results["filter"].deleted == ("cali-tw-calic",)
    assert not writer.pending
    got = _rules(_save(ns, kind), "cali-to-wl-dispatch")
    want = rule_hashes("cali-to-wl-dispatch", _pod_chains(["calia", "calib"])[-3].rules)
    assert [h in line for h, line in zip(want, got, strict=True)] == [True] * 3
    writer.set_chains(_pod_chains(["calia", "calib", "calid"]))
    (result,) = writer.apply(additive=True, leftover_chains=("cali-to-wl-dispatch",))
    assert result.additive, "after a re-read the view compares rule text again"
