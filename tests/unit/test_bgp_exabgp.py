"""ExaBGP config rendering and API parsing/formatting against golden files (+ `exabgp validate`).

Regenerate the goldens after an intended change with ``FELIXPY_REGEN=1`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgp import exabgp_api as api
from bgp.exabgp_config import exabgp_env, render_config
from bgp.route import PathAttrs
from bgp.topology import PeerSpec

DATA = Path(__file__).with_name("test_bgp_data")
EXABGP = Path(sys.executable).with_name("exabgp")


def golden(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("FELIXPY_REGEN"):
        path.write_text(text)
    assert text == path.read_text()


PEERS = [
    PeerSpec(
        "10.0.0.2",
        179,
        64512,
        64512,
        "10.0.0.1",
        "10.0.0.1",
        "node-to-node mesh",
        passive=True,
        name="Mesh_10_0_0_2",
    ),
    PeerSpec(
        "192.0.2.9",
        1790,
        65000,
        64512,
        "10.0.0.1",
        "10.0.0.1",
        "global",
        md5='s3"cret',
        graceful_restart_time=300,
        name="Global_192_0_2_9_port_1790",
    ),
    PeerSpec(
        "fd00::2",
        179,
        64512,
        64512,
        "fd00::1",
        "10.0.0.1",
        "node-to-node mesh",
        families=("ipv6 unicast",),
        name="Mesh_fd00__2",
    ),
]


def test_render_config_golden_and_valid(tmp_path: Path) -> None:
    text = render_config(
        PEERS, run_command=["/usr/bin/python3", "-m", "bgp.bridge", "/run/felixpy/bgp-api.sock"]
    )
    golden("exabgp.conf", text)
    if not EXABGP.exists() and shutil.which("exabgp") is None:
        pytest.skip("exabgp not installed")
    conf = tmp_path / "x.conf"
    conf.write_text(text)
    env = {**os.environ, "exabgp_daemon_user": "root"}
    proc = subprocess.run(
        [str(EXABGP if EXABGP.exists() else "exabgp"), "validate", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_env_listens_on_node_addresses_as_root_without_cli() -> None:
    env = exabgp_env(bind=["10.0.0.1", "fd00::1"], port=1790, reactor_speed=0.5)
    assert env["exabgp_tcp_bind"] == "10.0.0.1 fd00::1"
    assert env["exabgp_tcp_port"] == "1790"
    assert (env["exabgp_daemon_user"], env["exabgp_api_cli"], env["exabgp_reactor_speed"]) == (
        "root",
        "false",
        "0.5",
    )


def test_parse_golden() -> None:
    lines = (DATA / "api_messages.txt").read_text().splitlines()
    golden("api_events.txt", "".join(repr(api.parse_line(line)) + "\n" for line in lines))


def test_parse_key_facts() -> None:
    first = (DATA / "api_messages.txt").read_text().splitlines()
    update = api.parse_line(first[1])
    assert isinstance(update, api.Update)
    assert update.attrs.as_path == (65000, 65001)
    assert update.attrs.communities == ("64512:1", "65535:65281")
    assert [a.prefix for a in update.announce] == ["10.160.0.0/26", "10.160.0.64/26", "fd00:220::/64"]
    assert update.announce[2].next_hop == "fd99:1::2"
    opened = api.parse_line(first[5])
    assert opened == api.Open(  # the PEER's router id, from the OPEN
        "10.99.1.2", "10.99.1.2", 64512, 120, 90, ("multiprotocol ipv4/unicast", "graceful restart", "asn4")
    )


def test_command_formatting_golden() -> None:
    attrs = PathAttrs(
        origin="igp",
        as_path=(64512, 65100),
        med=5,
        local_pref=200,
        communities=("64512:100",),
        large_communities=("64512:1:2",),
        originator_id="10.0.0.2",
        cluster_list=("244.0.0.1",),
    )
    prefixes = [f"10.65.{i}.0/26" for i in range(5)]
    lines = api.announce_commands("10.0.0.3", "10.0.0.2", attrs, prefixes, batch=2)
    lines += api.announce_commands("192.0.2.9", "self", attrs, prefixes[:1], ibgp=False)
    lines += api.withdraw_commands("10.0.0.3", [*prefixes[:3], "fd00:65::/122"], batch=2)
    lines.append(api.eor_command("10.0.0.3", "ipv4 unicast"))
    golden("commands.txt", "\n".join(lines) + "\n")
    assert len(lines) == 3 + 1 + 3 + 1
