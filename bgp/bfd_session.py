"""One BFD session's state machine, RFC 5880 asynchronous mode (pure: time is passed in, seconds).

The daemon feeds it received packets (``receive``) and the clock (``expire``), and asks it what to
send (``due``) and when to wake it next (``wakeup``). It returns the state changes (``Change``).

Timers (RFC 5880 §6.8.2-6.8.4, §6.8.7):
- While not Up we advertise the idle transmit interval (at least one second, §6.8.3); on reaching Up
  the configured one, announced with a Poll sequence (P until the peer answers F), as any later
  change made while Up. An increased transmit interval is used only once the sequence ends; a
  reduced receive interval counts for the detection time only once it ends.
- Transmit interval: max(our DesiredMinTx, the peer's RequiredMinRx), less 0-25 % jitter (10-25 %
  when DetectMult is 1); none while the peer's RequiredMinRx is 0, none while passive and the peer
  has not spoken. A Poll is answered at once with a Final.
- Detection time: the peer's DetectMult x max(our RequiredMinRx, the peer's DesiredMinTx).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bgp.bfd_packet import ADMIN_DOWN, DOWN, INIT, UP, ControlPacket

MIN_IDLE_TX = 1_000_000  # µs: RFC 5880 §6.8.3, DesiredMinTx while not Up
DIAG_NONE, DIAG_EXPIRED, DIAG_NEIGHBOR_DOWN, DIAG_ADMIN_DOWN = 0, 1, 3, 7


@dataclass(frozen=True, slots=True)
class Timers:
    """What the session is configured with (µs), BIRD's min tx / min rx / idle tx / multiplier."""

    desired_min_tx: int = 300_000
    required_min_rx: int = 300_000
    detect_mult: int = 3
    idle_tx: int = MIN_IDLE_TX
    passive: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    old: int
    new: int
    diag: int
    remote_cpi: bool  # the peer's C bit, as last received (RFC 5882 §4.3)


class Session:
    def __init__(
        self,
        timers: Timers,
        local_disc: int,
        *,
        now: float,
        cpi: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.timers = timers
        self.local_disc = local_disc
        self.cpi = cpi
        self._rng = rng or random.Random()
        self.state = DOWN
        self.diag = DIAG_NONE
        self.remote_state = DOWN
        self.remote_disc = 0
        self.remote_min_rx = 1  # µs, RFC 5880 §6.8.1 initial value
        self.remote_desired_tx = 0
        self.remote_mult = 0
        self.remote_cpi = False
        self.last_rx: float | None = None
        self.last_tx: float | None = None
        self.next_tx = now
        self.poll = False  # a Poll sequence is running
        self._final_due = False
        # what we advertise, and what we use (they differ while a Poll sequence runs)
        self.adv_tx = self.used_tx = max(timers.idle_tx, MIN_IDLE_TX)
        self.adv_rx = self.det_rx = timers.required_min_rx
        self.since = now

    # --- derived values ------------------------------------------------------------------
    def detection_time(self) -> float:
        """Seconds without a packet before the session goes Down (0 before the peer spoke)."""
        return self.remote_mult * max(self.det_rx, self.remote_desired_tx) / 1e6

    def tx_interval(self) -> float:
        """Seconds between periodic packets, before jitter."""
        return max(self.used_tx, self.remote_min_rx) / 1e6

    def _can_send(self) -> bool:
        if self.remote_min_rx == 0:
            return False
        return not (self.timers.passive and self.remote_disc == 0)

    def _deadline(self) -> float | None:
        if self.last_rx is None or self.remote_mult == 0:
            return None
        return self.last_rx + self.detection_time()

    def wakeup(self) -> float | None:
        """The next time ``due`` or ``expire`` has something to do (None: only a packet can)."""
        times = [t for t in (self._deadline(),) if t is not None]
        if self._final_due:
            times.append(self.last_rx or 0.0)
        if self._can_send():
            times.append(self.next_tx)
        return min(times) if times else None

    # --- configuration -------------------------------------------------------------------
    def configure(self, timers: Timers, now: float) -> None:
        """New timers; while Up they are announced with a Poll sequence (§6.8.3)."""
        if timers == self.timers:
            return
        self.timers = timers
        if self.state == UP:
            self._advertise(timers.desired_min_tx, timers.required_min_rx, now)
        else:
            self._set_idle(now)

    def admin_down(self, now: float) -> list[Change]:
        return self._move(ADMIN_DOWN, DIAG_ADMIN_DOWN, now)

    def admin_up(self, now: float) -> list[Change]:
        if self.state != ADMIN_DOWN:
            return []
        return self._move(DOWN, DIAG_NONE, now)

    def _advertise(self, tx: int, rx: int, now: float) -> None:
        self.adv_tx, self.adv_rx = tx, rx
        self.used_tx = min(self.used_tx, tx)  # faster at once, slower after the Final
        self.det_rx = max(self.det_rx, rx)  # a shorter detection time only after the Final
        self.poll = True
        self._reschedule(now)

    def _set_idle(self, now: float) -> None:
        idle = max(self.timers.idle_tx, MIN_IDLE_TX)
        self.adv_tx = self.used_tx = idle
        self.adv_rx = self.det_rx = self.timers.required_min_rx
        self.poll = False
        self._reschedule(now)

    def _reschedule(self, now: float) -> None:
        if self.last_tx is not None:
            self.next_tx = min(self.next_tx, max(now, self.last_tx + self.tx_interval()))

    # --- reception (§6.8.6, after bfd_packet's checks) -----------------------------------
    def receive(self, pkt: ControlPacket, now: float) -> list[Change]:
        if pkt.your_disc not in (0, self.local_disc):
            return []
        if pkt.final and self.poll:
            self.poll = False
            self.used_tx, self.det_rx = self.adv_tx, self.adv_rx
        self.remote_disc = pkt.my_disc
        self.remote_state = pkt.state
        self.remote_min_rx = pkt.required_min_rx
        self.remote_desired_tx = pkt.desired_min_tx
        self.remote_mult = pkt.detect_mult
        self.remote_cpi = pkt.cpi
        self.last_rx = now
        self._reschedule(now)
        if pkt.poll:
            self._final_due = True
        if self.state == ADMIN_DOWN:
            return []
        if pkt.state == ADMIN_DOWN:
            return self._move(DOWN, DIAG_NEIGHBOR_DOWN, now) if self.state != DOWN else []
        if self.state == DOWN:
            if pkt.state == DOWN:
                return self._move(INIT, DIAG_NONE, now)
            if pkt.state == INIT:
                return self._move(UP, DIAG_NONE, now)
        elif self.state == INIT:
            if pkt.state in (INIT, UP):
                return self._move(UP, DIAG_NONE, now)
        elif pkt.state == DOWN:  # Up
            return self._move(DOWN, DIAG_NEIGHBOR_DOWN, now)
        return []

    # --- time ----------------------------------------------------------------------------
    def expire(self, now: float) -> list[Change]:
        """The detection timer (§6.8.4): Init/Up go Down; a silent peer is forgotten in Down."""
        deadline = self._deadline()
        if deadline is None or now < deadline:
            return []
        self.last_rx = None
        changes = self._move(DOWN, DIAG_EXPIRED, now) if self.state in (INIT, UP) else []
        self.remote_disc, self.remote_state, self.remote_min_rx, self.remote_mult = 0, DOWN, 1, 0
        self.remote_desired_tx = 0
        return changes

    def due(self, now: float) -> ControlPacket | None:
        """The packet to send now, if any (a Final at once; else periodic, P while polling)."""
        if self._final_due:
            self._final_due = False
            return self._packet(final=True)
        if not self._can_send() or now < self.next_tx:
            return None
        self.last_tx = now
        low, high = (0.75, 0.9) if self.timers.detect_mult == 1 else (0.75, 1.0)
        self.next_tx = now + self.tx_interval() * self._rng.uniform(low, high)
        return self._packet(poll=self.poll)

    def _packet(self, *, poll: bool = False, final: bool = False) -> ControlPacket:
        return ControlPacket(
            state=self.state,
            detect_mult=self.timers.detect_mult,
            my_disc=self.local_disc,
            your_disc=self.remote_disc,
            desired_min_tx=self.adv_tx,
            required_min_rx=self.adv_rx,
            diag=self.diag,
            poll=poll,
            final=final,
            cpi=self.cpi,
        )

    def _move(self, new: int, diag: int, now: float) -> list[Change]:
        old = self.state
        if new == old:
            return []
        self.state, self.since = new, now
        if new == UP:
            self.diag = DIAG_NONE
            self._advertise(self.timers.desired_min_tx, self.timers.required_min_rx, now)
        else:
            self.diag = diag
            if old == UP:
                self._set_idle(now)
        self.next_tx = min(self.next_tx, now)  # tell the peer at once: it converges a packet sooner
        return [Change(old, new, self.diag, self.remote_cpi)]
