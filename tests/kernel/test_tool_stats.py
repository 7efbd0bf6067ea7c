"""The counts behind felix_iptables_{restore,save}_{calls,errors}, felix_iptables_lines_executed and
felix_ipset_{calls,errors,lines_executed}: real tool runs in a throwaway namespace, failures included."""

from __future__ import annotations

import shutil

import pytest

from felixpy.dataplane.errors import DataplaneError
from felixpy.dataplane.ipset_writer import IpsetWriter
from felixpy.dataplane.iptables_backend import RestoreBackend
from felixpy.dataplane.iptables_render import Op
from felixpy.dataplane.kernel_objects import IpSet

pytestmark = pytest.mark.kernel


def test_iptables_restore_and_save_runs_and_failures_are_counted(netns):
    if not shutil.which("iptables-nft-restore"):
        pytest.skip("iptables-nft-restore not installed")
    ns = netns("tst")
    backend = RestoreBackend("nft", netns=ns.name)
    backend.write("filter", [Op("chain", "cali-test"), Op("append", "cali-test", "-j RETURN")])
    assert "-A cali-test -j RETURN" in ns.run("iptables-nft-save", "-t", "filter")
    assert backend.read("filter")["cali-test"]
    with pytest.raises(DataplaneError):  # a jump to a chain that does not exist: restore exits 1
        backend.write("filter", [Op("append", "cali-test", "-j cali-does-not-exist")])
    stats = backend.stats
    assert (stats.calls("restore"), stats.errors("restore")) == (2, 1)
    assert (stats.calls("save"), stats.errors("save")) == (1, 0)
    assert stats.lines("restore") == {"filter": 2}  # only the lines of the run that succeeded


def test_ipset_runs_lines_and_a_failed_destroy_are_counted(netns):
    ns = netns("tss")
    writer = IpsetWriter(netns=ns.name)
    writer.set_ipsets([IpSet("cali40x", members=frozenset({"10.65.0.2/32", "10.65.0.3/32"}))])
    assert writer.apply() == ["cali40x"]
    calls = writer.stats.calls("ipset")
    assert calls >= 2 and writer.stats.errors("ipset") == 0  # a save, then a restore
    assert sum(writer.stats.lines("ipset").values()) >= 3  # create + two members
    ns.run("iptables-legacy", "-A", "INPUT", "-m", "set", "--match-set", "cali40x", "src", "-j", "DROP")
    writer.set_ipsets([])
    assert writer.apply() == []  # destroy refused: still referenced
    assert writer.stats.errors("ipset") == 1
    assert writer.stats.calls("ipset") == calls + 1
