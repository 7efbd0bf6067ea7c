"""How iptables state is read and written: iptables-restore (legacy or nft) or python-iptables (libiptc).

All backends take one table's :class:`~felixpy.dataplane.iptables_render.Op` list and apply it as one
atomic transaction (``iptables-restore --noflush`` COMMIT, or one libiptc commit). ``netns`` runs the
backend in another network namespace: the restore backends through ``nsenter --net=...``; the
python-iptables backend in a dedicated thread that setns()'d into it (setns is per thread, so the
rest of the process stays where it was).

Mode detection is kube-proxy's: count rules in ``iptables-legacy-save`` and ``iptables-nft-save``,
use legacy only if it has more rules; nft otherwise.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar

from felixpy.dataplane.errors import CommandFailed, DataplaneError
from felixpy.dataplane.iptables_render import (
    Op,
    SavedRule,
    TableState,
    count_rules,
    parse_save,
    render_restore,
)
from felixpy.dataplane.iptc_rules import build_rule
from felixpy.dataplane.sysctl import netns_path
from felixpy.dataplane.tool_runner import run
from felixpy.dataplane.toolstats import ToolStats

Mode = Literal["legacy", "nft"]
BackendKind = Literal["auto", "legacy", "nft", "python-iptables"]
T = TypeVar("T")


class IptablesBackend(Protocol):
    name: str

    def read(self, table: str) -> TableState: ...

    def write(self, table: str, ops: Sequence[Op]) -> None: ...


def tool(mode: Mode, action: Literal["save", "restore"], *, ipv6: bool = False) -> str:
    return f"{'ip6' if ipv6 else 'ip'}tables-{mode}-{action}"


class RestoreBackend:
    """iptables-{legacy,nft}-save to read, iptables-{legacy,nft}-restore --noflush to write."""

    def __init__(self, mode: Mode, *, ipv6: bool = False, netns: str | None = None) -> None:
        self.mode = mode
        self.name = f"{mode}-restore"
        self.ipv6 = ipv6
        self.netns = netns
        self.stats = ToolStats()  # felix_iptables_{restore,save}_{calls,errors}, _lines_executed

    def read(self, table: str) -> TableState:
        with self.stats.call("save"):
            text = run([tool(self.mode, "save", ipv6=self.ipv6), "-t", table], netns=self.netns)
        return parse_save(text).get(table, {})

    def read_all(self) -> dict[str, TableState]:
        """Every table in one save: iptables-nft-save fetches the whole ruleset even for ``-t raw``
        (0.35 s at 48k rules), so a resync reading four tables one by one pays that four times."""
        with self.stats.call("save"):
            text = run([tool(self.mode, "save", ipv6=self.ipv6)], netns=self.netns)
        return parse_save(text)

    def write(self, table: str, ops: Sequence[Op]) -> None:
        argv = [tool(self.mode, "restore", ipv6=self.ipv6), "--noflush", "--wait", "10"]
        with self.stats.call("restore"):
            run(argv, netns=self.netns, input=render_restore(table, ops))
        self.stats.add_lines("restore", len(ops), table)


_IPTC_LOCK = threading.Lock()  # python-iptables caches Table objects process-wide


class PyIptcBackend:
    """python-iptables over libiptc: legacy iptables only. One commit per table = atomic."""

    name = "python-iptables"

    def __init__(self, *, ipv6: bool = False, netns: str | None = None) -> None:
        self.ipv6 = ipv6
        self._pool = ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(netns,))

    def close(self) -> None:
        self._pool.shutdown()

    def _call(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with _IPTC_LOCK:
                try:
                    return fn()
                except (ValueError, AttributeError, OSError) as exc:
                    raise DataplaneError(f"python-iptables: {exc}") from exc
                except Exception as exc:  # iptc.IPTCError / XTablesError: not importable up front
                    if type(exc).__module__.startswith("iptc"):
                        raise DataplaneError(f"python-iptables: {exc}") from exc
                    raise

        return self._pool.submit(locked).result()

    def _table(self, name: str) -> Any:
        import iptc

        table = (iptc.Table6 if self.ipv6 else iptc.Table)(name)
        table.autocommit = False
        table.refresh()  # fresh handle, opened in this thread's (the target) netns
        return table

    def read(self, table: str) -> TableState:
        # reading builds Rule objects, whose targets are looked up in every cached table too
        return self._call(lambda: _iptc_read(self._open_all(table), ipv6=self.ipv6))

    def write(self, table: str, ops: Sequence[Op]) -> None:
        self._call(lambda: _iptc_write(self._open_all(table), ops, ipv6=self.ipv6))

    def _open_all(self, table: str) -> Any:
        """python-iptables looks jump targets up in EVERY cached table (``Rule.tables``): a closed
        handle there segfaults, an autocommit one would commit a stale snapshot when freed. So all
        tables get a fresh, non-autocommit handle in this netns before rules are built."""
        import iptc

        available = iptc.is_table6_available if self.ipv6 else iptc.is_table_available
        for name in iptc.Table.ALL:
            if name != table and available(name):
                self._table(name)
        return self._table(table)


def _enter_netns(netns: str | None) -> None:
    if netns is not None:
        from pyroute2 import netns as pr_netns

        pr_netns.setns(netns_path(netns), flags=0)


def _iptc_hash(rule: Any) -> str | None:
    """Our hash from the comment match's raw xt_comment_info (python-iptables' own parameter
    parser cuts a comment at ``--``, which base64url hashes can contain)."""
    from iptc.xtables import xt_entry_match

    header = ctypes.sizeof(xt_entry_match)
    for match in rule.matches:
        if match.name == "comment":
            raw = bytes(match.match_buf[header:]).split(b"\0", 1)[0].decode(errors="replace")
            if raw.startswith("cali:"):
                return raw[5:]
    return None


def _iptc_read(table: Any, *, ipv6: bool) -> TableState:
    state: TableState = {}
    try:
        for chain in table.chains:
            rules = []
            for rule in chain.rules:
                h = _iptc_hash(rule)
                rules.append(SavedRule(h, f"cali:{h}" if h else ""))
            state[chain.name] = rules
    finally:
        _close_cached(ipv6)
    return state


def _iptc_write(table: Any, ops: Sequence[Op], *, ipv6: bool) -> None:
    import iptc

    chain_cls = iptc.Chain
    try:
        for op in ops:
            _iptc_op(iptc, table, chain_cls(table, op.chain), op, ipv6=ipv6)
        table.commit()
    finally:
        _close_cached(ipv6)


def _close_cached(ipv6: bool) -> None:
    """Close every cached table handle (autocommit is off, so close() never commits). The next
    call opens all of them afresh (``_open_all``): a handle left closed in the cache is what a
    later rule lookup would dereference."""
    import iptc

    for other in iptc.Table.ALL:
        cached = (iptc.Table6 if ipv6 else iptc.Table)._cache.get(other)
        if cached is not None:
            cached.close()


def _iptc_op(iptc: Any, table: Any, chain: Any, op: Op, *, ipv6: bool) -> None:
    if op.kind == "chain":
        if table.is_chain(op.chain):
            table.flush_entries(op.chain)
        else:
            table.create_chain(op.chain)
    elif op.kind == "append":
        chain.append_rule(build_rule(iptc, op.spec, ipv6=ipv6))
    elif op.kind == "insert":
        chain.insert_rule(build_rule(iptc, op.spec, ipv6=ipv6), position=op.index - 1)
    elif op.kind == "replace":
        _iptc_at(chain, op).replace_rule(build_rule(iptc, op.spec, ipv6=ipv6), position=op.index - 1)
    elif op.kind == "delete_at":
        _iptc_at(chain, op).delete_rule(chain.rules[op.index - 1])
    elif op.kind == "delete":
        _iptc_delete(chain, op)
    else:
        table.delete_chain(op.chain)


def _iptc_at(chain: Any, op: Op) -> Any:
    """``chain`` if it has a rule at ``op.index`` (else a DataplaneError, as iptables-restore fails)."""
    if not chain.table.is_chain(chain.name) or len(chain.rules) < op.index:
        raise DataplaneError(f"python-iptables: no rule {op.index} in chain {chain.name}")
    return chain


def _iptc_delete(chain: Any, op: Op) -> None:
    """Delete our rule by its hash comment (``spec`` is ``cali:<hash>`` from :func:`_iptc_read`)."""
    want = op.spec.split("cali:", 1)[1][:16] if "cali:" in op.spec else None
    for rule in chain.rules:
        if want is not None and _iptc_hash(rule) == want:
            chain.delete_rule(rule)
            return


def detect_mode(*, ipv6: bool = False, netns: str | None = None) -> Mode:
    """kube-proxy's rule: legacy only if iptables-legacy-save shows more rules than iptables-nft-save.

    Legacy is counted first. With no legacy rule the answer is nft as long as iptables-nft-save
    works at all (a failing nft counts -1, and legacy's 0 then wins, as before), so nft is asked
    for its ``raw`` table only, not dumped whole: on an agent restart nft holds our own ~10,300
    rules per family at x10, a dump of 0.2-1.9 s of wall time each (load 8-10) against ~0.06 s.
    The one case that can answer differently: no legacy rule, and a whole nft dump that fails
    while its raw table reads (before: legacy, a table holding nothing; now: nft)."""
    try:
        legacy = count_rules(run([tool("legacy", "save", ipv6=ipv6)], netns=netns))
    except (CommandFailed, FileNotFoundError):
        legacy = -1
    if legacy <= 0:
        try:
            run([tool("nft", "save", ipv6=ipv6), "-t", "raw"], netns=netns)
        except (CommandFailed, FileNotFoundError):
            return "legacy" if legacy == 0 else "nft"
        return "nft"
    try:
        nft = count_rules(run([tool("nft", "save", ipv6=ipv6)], netns=netns))
    except (CommandFailed, FileNotFoundError):
        nft = -1
    return "legacy" if legacy > nft else "nft"


def make_backend(
    kind: BackendKind = "auto", *, ipv6: bool = False, netns: str | None = None
) -> RestoreBackend | PyIptcBackend:
    """``auto`` detects legacy vs nft; ``python-iptables`` always writes legacy tables."""
    if kind == "python-iptables":
        return PyIptcBackend(ipv6=ipv6, netns=netns)
    mode: Mode = detect_mode(ipv6=ipv6, netns=netns) if kind == "auto" else kind
    return RestoreBackend(mode, ipv6=ipv6, netns=netns)
