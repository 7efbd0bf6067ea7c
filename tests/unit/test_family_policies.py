"""FamilyPolicies commits the IPv4 and IPv6 policy drivers' iptables writes side by side (a CNI ADD
waits for the slower restore, not the sum), with the shared-ipset steps before and after in turn."""

from __future__ import annotations

import threading
from typing import Any

from felixpy.dataplane.linux import FamilyPolicies

BOUND = 10.0  # seconds: generous, the waits end as soon as the other side arrives


class StepDriver:
    def __init__(self, name: str, log: list[str], started: dict[str, threading.Event], ok: bool = True):
        self.name, self.log, self.started, self.ok = name, log, started, ok
        self.lock = threading.Lock()

    def _note(self, what: str) -> None:
        with self.lock:
            self.log.append(f"{what} {self.name}")

    def prepare(self, additive: bool = False) -> Any:
        self._note("prepare")
        return {"additive": additive}

    def write_iptables(self, step: Any) -> Any:
        self.started[self.name].set()
        other = "v6" if self.name == "v4" else "v4"
        # Both writes are under way at once, or this wait runs out (and says so below).
        step["overlapped"] = self.started[other].wait(BOUND)
        self._note("iptables")
        return step

    def post_write_check_due(self) -> bool:
        return True

    def finish(self, step: Any) -> bool:
        self._note("finish")
        return self.ok and step["overlapped"]


def test_iptables_writes_of_both_families_overlap_and_shared_steps_come_in_turn() -> None:
    log: list[str] = []
    started = {"v4": threading.Event(), "v6": threading.Event()}
    family = FamilyPolicies([StepDriver("v4", log, started), StepDriver("v6", log, started)])  # type: ignore[list-item]
    assert family.commit(additive=True) is True, "each write saw the other under way"
    assert log[:2] == ["prepare v4", "prepare v6"]
    assert sorted(log[2:4]) == ["iptables v4", "iptables v6"]
    assert log[4:] == ["finish v4", "finish v6"], "ipset deletions only after every family's chains"


class EagerDriver(StepDriver):
    """The IPv6 driver's prepare waits (bounded) until the IPv4 write is under way."""

    def prepare(self, additive: bool = False) -> Any:
        step = super().prepare(additive)
        if self.name == "v6":
            step["v4_writing"] = self.started["v4"].wait(BOUND)
        return step

    def finish(self, step: Any) -> bool:
        return super().finish(step) and step.get("v4_writing", True)


def test_the_ipv4_restore_runs_while_the_ipv6_driver_prepares() -> None:
    log: list[str] = []
    started = {"v4": threading.Event(), "v6": threading.Event()}
    family = FamilyPolicies([EagerDriver("v4", log, started), EagerDriver("v6", log, started)])  # type: ignore[list-item]
    assert family.commit() is True, "the IPv6 prepare saw the IPv4 write under way"
    assert log[:2] == ["prepare v4", "prepare v6"] and log[-2:] == ["finish v4", "finish v6"]


def test_one_family_failing_fails_the_commit_and_the_other_still_finishes() -> None:
    log: list[str] = []
    started = {"v4": threading.Event(), "v6": threading.Event()}
    family = FamilyPolicies([StepDriver("v4", log, started, ok=False), StepDriver("v6", log, started)])  # type: ignore[list-item]
    assert family.commit() is False
    assert log[-2:] == ["finish v4", "finish v6"]


class CheckDriver:
    """A driver whose post-write check waits until the other family's is under way too."""

    def __init__(self, name: str, started: dict[str, threading.Event], done: list[str]) -> None:
        self.name, self.started, self.done = name, started, done

    def post_write_check_due(self) -> bool:
        return True

    def post_write_check(self) -> None:
        self.started[self.name].set()
        other = "v6" if self.name == "v4" else "v4"
        if self.started[other].wait(BOUND):
            self.done.append(self.name)


def test_post_write_checks_of_both_families_overlap_and_both_end_before_it_returns() -> None:
    started = {"v4": threading.Event(), "v6": threading.Event()}
    done: list[str] = []
    family = FamilyPolicies([CheckDriver("v4", started, done), CheckDriver("v6", started, done)])  # type: ignore[list-item]
    family.post_write_check()
    assert sorted(done) == ["v4", "v6"], "each check saw the other under way, and both ended"


class IdleDriver:
    """A driver with no post-write check due: its check must not be handed to another thread."""

    def __init__(self, checks: list[str]) -> None:
        self.checks = checks

    def post_write_check_due(self) -> bool:
        return False

    def post_write_check(self) -> None:
        self.checks.append(threading.current_thread().name)


def test_an_idle_writer_loop_hands_no_post_write_check_to_the_pool() -> None:
    """The writer loop calls post_write_check on every turn (about once a second when idle): when
    the other family has nothing due, no pool thread is woken (idle CPU, issue 15)."""
    checks: list[str] = []
    family = FamilyPolicies([IdleDriver(checks), IdleDriver(checks)])  # type: ignore[list-item]
    for _ in range(5):
        family.post_write_check()
    assert family._pool is None, "no pool thread was started for checks that were not due"
    assert checks == [threading.current_thread().name] * 5, "the first family's own call stays in the loop"
