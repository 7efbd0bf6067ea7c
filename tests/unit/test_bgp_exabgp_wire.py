"""The ExaBGP-side half of wire mode (``bgp.exabgp_wire``): what it accepts, and that it patches.

The end-to-end behaviour (BIRD clients of our reflector) is in tests/e2e/test_bgp_bird.py; here
the pure checks and the patch against the installed ExaBGP, in a child process so this test
run's own ExaBGP classes stay untouched.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bgp import exabgp_wire, wire
from bgp.route import PathAttrs


def test_split_messages_accepts_only_whole_updates() -> None:
    good = wire.encode_announce("10.0.0.2", PathAttrs(), ["10.65.0.0/26"])[0]
    assert exabgp_wire.split_messages([good.hex(), good.hex()]) == [good, good]
    keepalive = b"\xff" * 16 + (19).to_bytes(2, "big") + b"\x04"
    with pytest.raises(ValueError, match="not a BGP UPDATE"):
        exabgp_wire.split_messages([keepalive.hex()])
    with pytest.raises(ValueError, match="length"):
        exabgp_wire.split_messages([(good + b"\x00").hex()])
    with pytest.raises(ValueError):
        exabgp_wire.split_messages(["zz"])


def test_enabled_only_by_the_variable() -> None:
    assert exabgp_wire.enabled({"FELIXPY_BGP_WIRE": "1"})
    assert not exabgp_wire.enabled({"FELIXPY_BGP_WIRE": "0"})
    assert not exabgp_wire.enabled({})


class _AddPath:
    def __init__(self, on: bool) -> None:
        self.on = on

    def send(self, afi: int, safi: int) -> bool:
        return self.on

    def receive(self, afi: int, safi: int) -> bool:
        return False


class _Negotiated:
    def __init__(self, asn4: bool, add_path: bool) -> None:
        self.asn4, self.addpath, self.families = asn4, _AddPath(add_path), [(1, 1)]


def test_session_is_wire_needs_asn4_and_no_add_path() -> None:
    assert exabgp_wire.session_is_wire(_Negotiated(True, False))
    assert not exabgp_wire.session_is_wire(_Negotiated(False, False))
    assert not exabgp_wire.session_is_wire(_Negotiated(True, True))
    assert not exabgp_wire.session_is_wire(None)


def test_install_patches_the_installed_exabgp() -> None:
    code = (
        "from bgp import exabgp_wire\n"
        "from exabgp.reactor.protocol import Protocol\n"
        "from exabgp.rib.outgoing import OutgoingRIB\n"
        "from exabgp.reactor.api.command.command import Command\n"
        "assert exabgp_wire.install()\n"
        "assert Protocol.read_message is exabgp_wire._read_message\n"
        "assert Protocol.new_update is exabgp_wire._new_update\n"
        "assert OutgoingRIB.pending is exabgp_wire._pending\n"
        "assert 'felixpy-wire' in Command.functions\n"
        "from exabgp.reactor.api import processes\n"
        "r, w = processes.os.pipe()\n"
        "processes.os.write(w, b'x' * 40000)\n"
        "assert len(processes.os.read(r, 16384)) == 40000  # one read takes the whole burst\n"
        "print('patched')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "patched"


def test_packets_json_is_what_the_agent_parses() -> None:
    from bgp import exabgp_api as api

    neighbor = {"local-address": "10.0.0.1", "peer-address": "10.0.0.2", "local-as": 64512, "peer-as": 64512}
    message = wire.encode_announce("10.0.0.2", PathAttrs(med=3), ["10.65.1.0/26", "10.65.1.64/26"])[0]
    event = api.parse_line(exabgp_wire.packets_json(neighbor, message[:19], message[19:]))
    assert isinstance(event, api.Update)
    assert (event.peer, event.peer_as, event.attrs.med) == ("10.0.0.2", 64512, 3)
    assert [a.prefix for a in event.announced()] == ["10.65.1.0/26", "10.65.1.64/26"]


def test_refresh_json_names_the_peer() -> None:
    from bgp import exabgp_api as api

    neighbor = {"local-address": "10.0.0.1", "peer-address": "10.0.0.2", "local-as": 64512, "peer-as": 64512}
    assert api.parse_line(exabgp_wire.refresh_json(neighbor)) == api.RouteRefresh("10.0.0.2")
