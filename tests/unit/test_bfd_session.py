"""BFD packet codec and session state machine (RFC 5880): transitions, timers, Poll/Final, bad packets."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from bgp import bfd_packet as bp
from bgp.bfd_packet import ADMIN_DOWN, DOWN, INIT, UP, BadPacket, ControlPacket, decode, encode
from bgp.bfd_session import MIN_IDLE_TX, Session, Timers

FAST = Timers(desired_min_tx=300_000, required_min_rx=300_000, detect_mult=3)


def pkt(
    state: int,
    *,
    mine: int = 7,
    yours: int = 1,
    tx: int = 300_000,
    rx: int = 300_000,
    mult: int = 3,
    **kw: Any,
) -> ControlPacket:
    return ControlPacket(
        state=state,
        detect_mult=mult,
        my_disc=mine,
        your_disc=yours,
        desired_min_tx=tx,
        required_min_rx=rx,
        **kw,
    )


def session(timers: Timers = FAST, **kw: object) -> Session:
    return Session(timers, 1, now=0.0, rng=random.Random(1), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- codec
def test_encode_decode_round_trip_every_flag() -> None:
    p = pkt(UP, diag=3, poll=True, cpi=True, demand=True, required_min_echo_rx=50)
    data = encode(p)
    assert len(data) == 24
    assert decode(data, ttl=255) == p
    assert decode(encode(replace(p, poll=False, final=True)), ttl=255).final


def test_wire_layout_matches_rfc_5880_figure() -> None:
    data = encode(pkt(UP, mine=0x01020304, yours=0x05060708, tx=1_000_000, rx=2, diag=1, cpi=True))
    assert data[0] == (1 << 5) | 1  # version 1, diag 1
    assert data[1] == (3 << 6) | 0x08  # state Up, C bit
    assert data[2] == 3 and data[3] == 24
    assert data[4:8] == bytes([1, 2, 3, 4]) and data[8:12] == bytes([5, 6, 7, 8])
    assert int.from_bytes(data[12:16], "big") == 1_000_000 and int.from_bytes(data[16:20], "big") == 2


@pytest.mark.parametrize(
    ("mutate", "reason", "kwargs"),
    [
        (lambda d: d[:20], "short", {}),
        (lambda d: bytes([2 << 5]) + d[1:], "version", {}),
        (lambda d: d[:3] + bytes([23]) + d[4:], "length", {}),
        (lambda d: d[:3] + bytes([40]) + d[4:], "length", {}),
        (lambda d: d[:2] + bytes([0]) + d[3:], "detect mult 0", {}),
        (lambda d: d[:1] + bytes([d[1] | 0x01]) + d[2:], "multipoint", {}),
        (lambda d: d[:4] + bytes(4) + d[8:], "my discriminator 0", {}),
        (lambda d: d[:8] + bytes(4) + d[12:], "your discriminator 0 while not down", {}),
        (lambda d: d, "ttl", {"ttl": 254}),
        (
            lambda d: d[:1] + bytes([d[1] | 0x04]) + d[2:3] + bytes([26]) + d[4:] + b"\x01\x02",
            "auth present when not configured",
            {},
        ),
        (lambda d: d, "auth missing", {"auth_configured": True}),
    ],
)
def test_bad_packets_are_dropped_with_a_reason(mutate, reason, kwargs) -> None:  # type: ignore[no-untyped-def]
    data = mutate(encode(pkt(UP)))
    kwargs.setdefault("ttl", 255)
    with pytest.raises(BadPacket) as err:
        decode(data, **kwargs)
    assert err.value.reason == reason and reason in bp.REASONS


def test_your_discriminator_zero_is_fine_while_down_and_multihop_ttl_is_a_minimum() -> None:
    assert decode(encode(pkt(DOWN, yours=0)), ttl=255).your_disc == 0
    assert decode(encode(pkt(ADMIN_DOWN, yours=0)), ttl=255).state == ADMIN_DOWN
    assert decode(encode(pkt(UP)), ttl=254, single_hop=False).state == UP
    with pytest.raises(BadPacket):
        decode(encode(pkt(UP)), ttl=200, single_hop=False)


# ------------------------------------------------------------------------------- transitions
@pytest.mark.parametrize(
    ("start", "received", "end", "diag"),
    [
        (DOWN, DOWN, INIT, 0),
        (DOWN, INIT, UP, 0),
        (DOWN, UP, DOWN, 0),  # ignored
        (DOWN, ADMIN_DOWN, DOWN, 0),
        (INIT, DOWN, INIT, 0),
        (INIT, INIT, UP, 0),
        (INIT, UP, UP, 0),
        (INIT, ADMIN_DOWN, DOWN, 3),
        (UP, DOWN, DOWN, 3),
        (UP, INIT, UP, 0),
        (UP, UP, UP, 0),
        (UP, ADMIN_DOWN, DOWN, 3),
    ],
)
def test_every_transition_on_reception(start: int, received: int, end: int, diag: int) -> None:
    s = session()
    for step in {DOWN: [], INIT: [DOWN], UP: [INIT]}[start]:
        s.receive(pkt(step, yours=0 if step == DOWN else 1), 0.0)
    assert s.state == start
    changes = s.receive(pkt(received, yours=0 if received in (DOWN, ADMIN_DOWN) else 1), 0.1)
    assert s.state == end
    assert bool(changes) == (start != end)
    if changes:
        assert (changes[0].old, changes[0].new, changes[0].diag) == (start, end, diag)


def test_admin_down_ignores_packets_and_sends_admin_down_at_once() -> None:
    s = session()
    s.receive(pkt(INIT), 0.0)
    assert s.state == UP
    [change] = s.admin_down(1.0)
    assert (change.old, change.new, change.diag) == (UP, ADMIN_DOWN, 7)
    assert s.receive(pkt(UP), 1.1) == [] and s.state == ADMIN_DOWN
    sent = s.due(1.1)
    assert sent is not None and sent.state == ADMIN_DOWN and sent.diag == 7
    assert s.admin_up(2.0)[0].new == DOWN


def test_packets_for_another_discriminator_are_ignored() -> None:
    s = session()
    assert s.receive(pkt(INIT, yours=99), 0.0) == [] and s.state == DOWN and s.remote_disc == 0


# ---------------------------------------------------------------------------------- timers
def test_detection_time_is_remote_mult_times_the_agreed_interval() -> None:
    s = session(Timers(desired_min_tx=300_000, required_min_rx=200_000, detect_mult=3))
    s.receive(pkt(INIT, tx=500_000, mult=4), 10.0)
    assert s.detection_time() == pytest.approx(4 * 0.5)  # the peer's tx is slower than our rx
    s.receive(pkt(UP, tx=100_000, mult=2), 10.0)
    assert s.detection_time() == pytest.approx(2 * 0.2)  # our rx is slower than the peer's tx
    assert s.expire(10.39) == [] and s.state == UP
    [change] = s.expire(10.41)
    assert (change.new, change.diag) == (DOWN, 1)
    assert s.remote_disc == 0


def test_init_also_times_out_and_down_forgets_a_silent_peer() -> None:
    s = session()
    s.receive(pkt(DOWN, yours=0), 0.0)
    assert s.state == INIT
    assert s.expire(0.91)[0].new == DOWN
    s.receive(pkt(DOWN, yours=0, tx=1_000_000), 5.0)
    s.admin_down(5.0)
    s.admin_up(5.0)
    assert s.state == DOWN and s.remote_disc == 7
    assert s.expire(8.1) == [] and s.remote_disc == 0


def test_transmit_interval_jitter_idle_rate_and_silence() -> None:
    s = session()
    first = s.due(0.0)
    assert first is not None and first.desired_min_tx == MIN_IDLE_TX and first.your_disc == 0
    assert s.due(0.5) is None  # not Up: 1 s, less up to 25 %
    gaps = []
    now = 0.0
    for _ in range(200):
        nxt = s.wakeup()
        assert nxt is not None
        assert s.due(nxt) is not None
        gaps.append(nxt - now)
        now = nxt
    assert min(gaps[1:]) >= 0.75 - 1e-9 and max(gaps) <= 1.0 + 1e-9
    s.receive(pkt(DOWN, yours=0, rx=0), now)  # the peer asks for no periodic packets
    assert s.due(now + 5) is None


def test_detect_mult_one_jitter_is_ten_to_twenty_five_percent() -> None:
    s = session(Timers(detect_mult=1))
    now, gaps = 0.0, []
    s.due(now)
    for _ in range(200):
        nxt = s.wakeup()
        assert nxt is not None and s.due(nxt) is not None
        gaps.append(nxt - now)
        now = nxt
    assert min(gaps) >= 0.75 - 1e-9 and max(gaps) <= 0.9 + 1e-9


def test_passive_waits_for_the_peer() -> None:
    s = session(replace(FAST, passive=True))
    assert s.due(0.0) is None and s.wakeup() is None
    s.receive(pkt(DOWN, yours=0), 1.0)
    assert s.due(1.0) is not None


def test_reaching_up_polls_for_the_fast_rate_and_the_final_ends_it() -> None:
    s = session()
    s.receive(pkt(INIT), 0.0)
    assert s.state == UP and s.poll
    sent = s.due(0.0)
    assert sent is not None and sent.poll and sent.desired_min_tx == 300_000 and sent.state == UP
    assert s.tx_interval() == pytest.approx(0.3)  # faster: used at once
    s.receive(pkt(UP, final=True), 0.1)
    assert not s.poll
    later = s.due(1.0)
    assert later is not None and not later.poll


def test_a_poll_is_answered_at_once_with_a_final() -> None:
    s = session()
    s.receive(pkt(INIT), 0.0)
    s.due(0.0)
    s.receive(pkt(UP, poll=True), 0.05)
    assert s.wakeup() == pytest.approx(0.05)
    answer = s.due(0.05)
    assert answer is not None and answer.final and not answer.poll


def test_slower_rate_and_shorter_detection_wait_for_the_final() -> None:
    s = session()
    s.receive(pkt(INIT), 0.0)
    s.receive(pkt(UP, final=True), 0.0)
    s.configure(Timers(desired_min_tx=1_000_000, required_min_rx=100_000, detect_mult=3), 1.0)
    assert s.poll
    assert s.tx_interval() == pytest.approx(0.3)  # not slower yet
    assert s.detection_time() == pytest.approx(0.9)  # not shorter yet
    sent = s.due(2.0)
    assert (
        sent is not None
        and sent.poll
        and sent.desired_min_tx == 1_000_000
        and sent.required_min_rx == 100_000
    )
    s.receive(pkt(UP, final=True, tx=100_000), 2.1)
    assert s.tx_interval() == pytest.approx(1.0)
    assert s.detection_time() == pytest.approx(0.3)


def test_going_down_returns_to_the_idle_rate_without_a_poll() -> None:
    s = session()
    s.receive(pkt(INIT), 0.0)
    s.receive(pkt(DOWN, yours=0), 0.1)
    assert s.state == DOWN and not s.poll and s.adv_tx == MIN_IDLE_TX
    s.configure(Timers(desired_min_tx=50_000, required_min_rx=50_000, detect_mult=5), 0.2)
    assert not s.poll and s.adv_rx == 50_000


def test_c_bit_is_sent_and_the_peers_is_reported() -> None:
    s = session()
    first = s.due(0.0)
    assert first is not None and first.cpi
    [change] = s.receive(pkt(INIT, cpi=True), 0.0)
    assert change.remote_cpi
    [down] = s.receive(pkt(DOWN, yours=0, cpi=False), 0.1)
    assert not down.remote_cpi


def test_a_state_change_is_told_to_the_peer_at_once() -> None:
    s = session()
    s.due(0.0)  # the first idle packet; the next is ~1 s away
    s.receive(pkt(INIT), 0.1)
    sent = s.due(0.1)
    assert s.state == UP and sent is not None and sent.state == UP
