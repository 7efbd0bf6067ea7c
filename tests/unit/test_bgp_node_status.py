"""``felixctl node status`` over a status file written by the BGP service's writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgp.status import STATUS_FILE, peer_status, write_status
from felixpy.ctl import node_cmd


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import argparse

    parser = argparse.ArgumentParser()
    node_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_running_with_peers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_status(
        tmp_path,
        [
            peer_status("10.0.0.2", kind="node-to-node mesh", name="Mesh_10_0_0_2", exa_state="up", since=0),
            peer_status("fd00::2", kind="global", name="Global_fd00__2", exa_state="connected", since=0),
        ],
    )
    code, out = run(["node", "status", "--run-dir", str(tmp_path)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "felixpy is running."
    assert "IPv4 BGP status" in lines
    assert "| 10.0.0.2     | node-to-node mesh | up    |       | Established |" in lines
    assert "IPv6 BGP status" in lines
    assert any(line.startswith("| fd00::2") and "OpenSent" in line for line in lines)


def test_no_peers_and_env_run_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bgp").mkdir()
    write_status(tmp_path / "bgp", [])
    monkeypatch.setenv("FELIXPY_RUN_DIR", str(tmp_path))
    code, out = run(["node", "status"], capsys)
    assert (code, out) == (0, "felixpy is running.\n\nIPv4 BGP status\nNo IPv4 peers found.\n\n")


@pytest.mark.parametrize(
    "doc",
    [None, {"pid": 2**22 + 12345, "running": True, "peers": []}, {"pid": 1, "running": False, "peers": []}],
)
def test_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict | None) -> None:
    if doc is not None:
        (tmp_path / STATUS_FILE).write_text(json.dumps(doc))
    code, out = run(["node", "status", "--run-dir", str(tmp_path)], capsys)
    assert (code, out) == (1, "felixpy is not running.\n")
