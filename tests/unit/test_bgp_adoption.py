"""Agent restart (issue 15 goal 2: "a restart drops no packet of established flows"), engine side.

The routes a previous run left in the kernel are adopted and kept until every configured session
has re-sent its table since this start (End-of-RIB; a peer without graceful restart: up and quiet
for ``ADOPT_QUIET``), or ``ADOPT_TIMEOUT`` passed. A session merely up is not enough: a CI run once
saw node A's kernel lose the route it was about to learn again, between B's session coming up and
B's UPDATE arriving. And the announcing side: a restarted node sends End-of-RIB to a peer only
after its own blocks (a graceful-restart peer flushes what it kept at End-of-RIB).
"""

from __future__ import annotations

from bgp import exabgp_api as api
from bgp.engine import ADOPT_QUIET, ADOPT_TIMEOUT
from bgp.fib import FibRoute, NextHop
from tests.unit.test_bgp_engine import announce, bring_up, make, plan

B, C = "10.0.0.2", "10.0.1.3"  # node a's two mesh peers (tests.unit.test_bgp_engine.NODES)
X, Y, Z = "10.65.2.0/26", "10.65.3.0/26", "10.65.9.0/26"  # B's block, C's block, nobody's any more
LEFT = {
    X: FibRoute(X, (NextHop(B),)),
    Y: FibRoute(Y, (NextHop(C, "tunl0", True),)),  # C is across subnets: IPIP
    Z: FibRoute(Z, (NextHop(B),)),
}
EOR = "ipv4 unicast"


def restarted() -> tuple[object, list[str], object]:
    engine, sent, kernel = make(dict(LEFT))
    engine.configure(plan([]))
    engine.handle(api.BridgeNote(0), 0)
    engine.tick(0.5)
    return engine, sent, kernel


def test_adopted_routes_stay_between_session_up_and_end_of_rib() -> None:
    engine, _, kernel = restarted()
    bring_up(engine, B)
    bring_up(engine, C)
    for t in range(1, 30):  # sessions up, tables not re-sent yet: nothing leaves the kernel
        engine.tick(float(t))
        engine.flush()
        assert kernel.table == LEFT, f"t={t}: an adopted route left before its peer re-sent its table"
    assert kernel.writes == 0 and engine.adopting
    engine.handle(announce(B, X), 30)
    engine.handle(api.EndOfRib(B, EOR), 30)
    engine.flush()
    engine.tick(30)
    assert kernel.table == LEFT  # C has not re-sent its table: Z (and Y) still kept
    engine.handle(announce(C, Y), 31)
    engine.handle(api.EndOfRib(C, EOR), 31)
    engine.flush()
    engine.tick(31)
    assert kernel.table == {X: LEFT[X], Y: LEFT[Y]}  # only the route nobody re-announced went
    assert kernel.writes == 1 and not engine.adopting  # the re-learned ones were never rewritten


def test_a_peer_that_never_comes_back_holds_adoption_only_until_the_timeout() -> None:
    engine, _, kernel = restarted()
    bring_up(engine, B)
    engine.handle(announce(B, X), 1)
    engine.handle(api.EndOfRib(B, EOR), 1)
    engine.flush()
    engine.tick(ADOPT_TIMEOUT - 1)
    assert kernel.table == LEFT  # C is still expected
    engine.tick(ADOPT_TIMEOUT)
    assert kernel.table == {X: LEFT[X]}
    assert not engine.adopting


def test_a_peer_without_graceful_restart_counts_once_up_and_quiet() -> None:
    """It need not send End-of-RIB (RFC 4724 makes it a graceful-restart duty)."""
    engine, _, kernel = restarted()
    bring_up(engine, C)
    engine.handle(announce(C, Y), 1)
    engine.handle(api.EndOfRib(C, EOR), 1)
    bring_up(engine, B, gr=None)  # up at t=0 (bring_up's time)
    engine.handle(announce(B, X), 2)
    engine.flush()
    engine.tick(2 + ADOPT_QUIET - 0.1)
    assert kernel.table == LEFT  # B brought an UPDATE 2.9 s ago: its table may go on
    engine.tick(2 + ADOPT_QUIET)
    assert kernel.table == {X: LEFT[X], Y: LEFT[Y]}


def test_a_peer_without_graceful_restart_that_sends_end_of_rib_counts_at_once() -> None:
    engine, _, kernel = restarted()
    for peer, prefix in ((B, X), (C, Y)):
        bring_up(engine, peer, gr=None)
        engine.handle(announce(peer, prefix), 1)
        engine.handle(api.EndOfRib(peer, EOR), 1)
    engine.flush()
    engine.tick(1)
    assert kernel.table == {X: LEFT[X], Y: LEFT[Y]}


def test_a_route_learned_again_then_withdrawn_leaves_at_once_while_adopting() -> None:
    engine, _, kernel = restarted()
    bring_up(engine, B)
    engine.handle(announce(B, X), 1)  # the same route as the one in the kernel: no write
    engine.flush()
    assert kernel.writes == 0
    engine.handle(api.Update(B, 64512, announce(B).attrs, (), (X,)), 2)
    engine.flush()
    assert X not in kernel.table and engine.adopting  # ours since learned again: no adoption hold
    assert Z in kernel.table


def _order_ok(sent: list[str], peer: str, block: str) -> None:
    lines = [line for line in sent if line.startswith(f"neighbor {peer} ")]
    eors = [i for i, line in enumerate(lines) if " eor " in line]
    announced = [i for i, line in enumerate(lines) if " announce " in line and block in line]
    assert eors and announced, lines
    assert announced[0] < eors[0], f"End-of-RIB to {peer} before our block: {lines}"


def test_end_of_rib_never_precedes_our_blocks_whatever_the_restart_order() -> None:
    """A peer keeping our routes through our restart (graceful restart) removes, at our End-of-RIB,
    those not sent again: our blocks must be on the wire before it. Orders seen in a restart:
    plan then bridge; a previous (orphaned) ExaBGP's bridge before the plan, then the new one;
    and ExaBGP restarting under a running agent."""
    block = "10.65.0.0/26"
    orders = {
        "plan, hello, up": ["plan", "hello", "up"],
        "orphan's hello before the plan": ["hello", "plan", "up"],
        "orphan's hello, plan, new hello": ["hello", "plan", "hello", "up"],
        "exabgp restarted": ["plan", "hello", "up", "down", "hello", "up"],
    }
    for name, steps in orders.items():
        engine, sent, _ = make()
        for t, step in enumerate(steps):
            if step == "plan":
                engine.configure(plan([block]))
            elif step == "hello":
                engine.handle(api.BridgeNote(0), t)
            elif step == "up":
                bring_up(engine, B)
                _order_ok(sent, B, block)
                sent.clear()
            else:
                engine.handle(api.StateChange(B, "down", "connection closed"), t)
        assert not any(" eor " in line for line in sent), name


def test_a_session_disabled_by_its_receive_limit_does_not_hold_adoption() -> None:
    from tests.unit.test_bgp_import_safety import TOR, Kernel, blocks, engine_with, tor_peer
    from tests.unit.test_bgp_import_safety import B as MESH_B
    from tests.unit.test_bgp_import_safety import announce as announce_as

    kernel = Kernel()
    kernel.table[Z] = LEFT[Z]  # left by the previous run
    engine, _, _ = engine_with([tor_peer(maxPrefixes=2, maxPrefixesAction="Disable")], kernel=kernel)
    engine.handle(api.EndOfRib(MESH_B, EOR), 1)
    engine.tick(1)
    assert Z in kernel.table  # the ToR has not re-sent its table
    engine.handle(announce_as(TOR, *blocks(3), asn=65001), 2)  # over its limit: disabled
    engine.handle(api.StateChange(TOR, "down", "closing connection"), 2)
    assert engine.disabled == {TOR}
    engine.tick(3)
    assert Z not in kernel.table and not engine.adopting  # nothing will come from it: not waited for
