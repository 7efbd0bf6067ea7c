"""A command ExaBGP answers with ``error`` changed nothing: the agent re-sends what that command was
for, as wanted *now* (issue 15: "withdrawals always arrive after an ExaBGP command error").

The channel pairs acks with commands over a real unix socket; the engine is driven by scripted
events with a recording command sink (as tests/unit/test_bgp_engine.py).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from bgp import exabgp_api as api
from bgp import wire
from bgp.advertiser import Advertiser
from bgp.bridge import UNKNOWN_NEIGHBOR_COMMAND, Refusals
from bgp.channel import ApiChannel
from bgp.command_errors import FailedCommand, classify
from bgp.engine import COMMAND_RESENDS
from bgp.exabgp_wire import packets_json
from bgp.route import PathAttrs
from bgp.topology import PeerSpec
from tests.unit.test_bgp_engine import bring_up, make, plan

A, B = "10.0.0.2", "10.0.1.3"


def test_classify_names_the_sessions_and_prefixes_of_each_command_kind() -> None:
    withdraw = api.withdraw_commands(A, ["10.65.0.0/26", "10.65.1.0/26"])[0]
    assert classify(withdraw) == FailedCommand("routes", (A,), frozenset({"10.65.0.0/26", "10.65.1.0/26"}))
    announce = api.announce_commands(A, "self", PathAttrs(), ["10.65.2.0/26"])[0]
    assert classify(announce) == FailedCommand("routes", (A,), frozenset({"10.65.2.0/26"}))
    merged = api.merge_wire_commands(
        [(p, api.wire_commands(p, [m.hex() for m in wire.encode_withdraw(["10.65.3.0/26"])])) for p in (A, B)]
    )
    assert [classify(line) for line in merged] == [
        FailedCommand("routes", (A, B), frozenset({"10.65.3.0/26"}))
    ]
    assert classify(f"neighbor {A} felixpy-wire 00ff") == FailedCommand("routes", (A,), None)  # unreadable
    assert classify(api.eor_command(A, "ipv4 unicast")) == FailedCommand("eor", (A,), family="ipv4 unicast")
    assert classify(api.teardown_command(A, 1)).kind == "teardown"
    assert classify("reload").kind == "other"


def test_an_uncertain_prefix_is_withdrawn_again_if_unwanted_and_announced_again_if_wanted() -> None:
    adv, peer = Advertiser(), PeerSpec(A, 179, 64512, 64512, None, "10.0.0.1", "node-to-node mesh")
    adv.plan(peer, {"10.65.0.0/26": ("self", PathAttrs()), "10.65.1.0/26": ("self", PathAttrs())})
    assert adv.plan(peer, {"10.65.0.0/26": None}) == [
        f"neighbor {A} withdraw attributes next-hop 0.0.0.0 nlri 10.65.0.0/26"
    ]
    assert adv.plan(peer, {"10.65.0.0/26": None}) == []  # sent once: nothing more to say
    adv.mark_uncertain(A, ["10.65.0.0/26", "10.65.1.0/26"])  # ExaBGP refused that withdrawal
    assert adv.plan(peer, {"10.65.0.0/26": None, "10.65.1.0/26": ("self", PathAttrs())}) == [
        f"neighbor {A} withdraw attributes next-hop 0.0.0.0 nlri 10.65.0.0/26",
        f"neighbor {A} announce attributes next-hop self origin igp nlri 10.65.1.0/26",
    ]


def test_a_refused_withdrawal_is_sent_again_and_a_newer_announcement_is_not_undone() -> None:
    engine, sent, _ = make()
    engine.configure(plan(["10.65.0.0/26"]))
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, A)
    engine.configure(plan([]))  # the block leaves this node: withdrawn from every peer
    withdraw = next(line for line in sent if line.startswith(f"neighbor {A} withdraw"))
    sent.clear()
    engine.handle(api.CommandFailed(withdraw), 1.0)
    assert sent == [withdraw]  # the same withdrawal again, for that peer only
    assert engine.counters[("command_error", A)] == 1

    engine.configure(plan(["10.65.0.0/26"]))  # the block is back before the second error is seen
    sent.clear()
    engine.handle(api.CommandFailed(withdraw), 2.0)
    assert sent == [f"neighbor {A} announce attributes next-hop self origin igp nlri 10.65.0.0/26"]


def test_refused_eor_is_sent_again_and_resends_are_bounded_per_minute() -> None:
    engine, sent, _ = make()
    engine.configure(plan(["10.65.0.0/26"]))
    engine.handle(api.BridgeNote(0), 0)
    bring_up(engine, A)
    eor = api.eor_command(A, "ipv4 unicast")
    sent.clear()
    for i in range(COMMAND_RESENDS + 3):
        engine.handle(api.CommandFailed(eor), 10.0 + i)
    assert sent == [eor] * COMMAND_RESENDS  # then it gives up (logged) until a minute has passed
    engine.handle(api.CommandFailed(eor), 80.0)
    assert sent == [eor] * (COMMAND_RESENDS + 1)
    sent.clear()
    engine.handle(api.CommandFailed(api.teardown_command(A, 1)), 90.0)
    engine.handle(api.CommandFailed("neighbor 192.0.2.254 withdraw route 192.0.2.0/24"), 90.0)
    assert sent == []  # a teardown, or a session we do not have: nothing to re-send


def test_channel_pairs_each_error_with_its_command_in_order(tmp_path: Path) -> None:
    events: list[api.Event] = []
    channel = ApiChannel(str(tmp_path / "c.sock"), events.append, window=10)
    channel.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(channel.path)
        deadline = time.monotonic() + 5
        while not channel.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        channel.send(["cmd 0", "cmd 1", "cmd 2", "cmd 3"])
        while channel.sent < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.sendall(b"done\nerror\ndone\nerror\n")
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == [api.CommandFailed("cmd 1"), api.CommandFailed("cmd 3")]
        assert channel.errors == 2
    finally:
        client.close()
        channel.stop()


def test_bridge_refusal_hook_is_off_unless_set_and_counts_down() -> None:
    off = Refusals.from_env("")
    assert off.rewrite(b"neighbor 10.0.0.2 withdraw x\n") == b"neighbor 10.0.0.2 withdraw x\n"
    hook = Refusals.from_env(" withdraw :1")
    assert hook.rewrite(b"neighbor 10.0.0.2 announce x\n") == b"neighbor 10.0.0.2 announce x\n"
    assert hook.rewrite(b"neighbor 10.0.0.2 withdraw x\n") == UNKNOWN_NEIGHBOR_COMMAND
    assert hook.rewrite(b"neighbor 10.0.0.2 withdraw x\n") == b"neighbor 10.0.0.2 withdraw x\n"
    assert Refusals.from_env("no-count").left == 0


def test_deferred_parsing_keeps_updates_and_errors_in_arrival_order(tmp_path: Path) -> None:
    """``defer_parse`` (the agent's setting): the reader hands ExaBGP's JSON on unparsed, but in
    the order it came with the errors, so an UPDATE read before an ``error`` is handled first and
    parsing it later gives the same event as parsing it in the reader."""
    events: list[api.Event] = []
    channel = ApiChannel(str(tmp_path / "d.sock"), events.append, window=10, defer_parse=True)
    channel.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    update = wire.encode_announce("10.0.0.2", PathAttrs(), ["10.65.7.0/26"])[0]
    neighbor = {"local-address": "10.0.0.1", "peer-address": A, "local-as": 64512, "peer-as": 64512}
    line = packets_json(neighbor, update[:19], update[19:])  # what ExaBGP's wire patch writes
    try:
        client.connect(channel.path)
        deadline = time.monotonic() + 5
        while not channel.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        channel.send(["cmd 0", "cmd 1"])
        while channel.sent < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.sendall(f"done\n{line}\nerror\n".encode())
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == [api.Unparsed(line + "\n"), api.CommandFailed("cmd 1")]
        parsed = api.parse_line(line)
        assert isinstance(parsed, api.Update) and parsed.nlri == ((A, ("10.65.7.0/26",)),)
        assert api.parse_line(events[0].line) == parsed  # type: ignore[union-attr]
    finally:
        client.close()
        channel.stop()


def test_a_withdrawn_group_names_only_what_the_peer_was_sent_once_each() -> None:
    """``plan`` with a whole group withdrawn (a peer's table going): every prefix the peer was
    sent, uncertain ones included, is withdrawn once; prefixes it was never
    sent (or already withdrawn), and a prefix named twice, are not withdrawn (again)."""
    adv, peer = Advertiser(), PeerSpec(A, 179, 64512, 64512, None, "10.0.0.1", "node-to-node mesh")
    sent = [f"10.65.{i}.0/26" for i in range(6)]
    adv.plan(peer, {}, groups=[(("self", PathAttrs()), sent)])
    adv.mark_uncertain(A, [sent[5]])
    assert adv.plan(peer, {}, groups=[(None, sent[3:1:-1])]) == [
        f"neighbor {A} withdraw attributes next-hop 0.0.0.0 nlri {sent[2]} {sent[3]}"
    ]
    group = ["10.65.9.0/26", sent[4], sent[2], sent[0], sent[0], sent[5], sent[1]]
    assert adv.plan(peer, {}, groups=[(None, group)]) == [
        f"neighbor {A} withdraw attributes next-hop 0.0.0.0 nlri {sent[0]} {sent[1]} {sent[4]} {sent[5]}"
    ]
    assert adv.count(A) == 0
    assert adv.plan(peer, {}, groups=[(None, sent)]) == []
    adv.plan(peer, {}, groups=[(("self", PathAttrs()), sent[:2])])
    assert adv.plan(peer, {}, groups=[(None, [sent[1], sent[0], sent[1]])]) == [  # all sent, one twice
        f"neighbor {A} withdraw attributes next-hop 0.0.0.0 nlri {sent[0]} {sent[1]}"
    ]
