"""The writer's queue takes a syncer batch in one operation and hands out batches in one
(issue 15, goal 2); order across single and bulk submits is kept, and a batch is at most max_batch."""

from __future__ import annotations

import threading

from felixpy.runtime.writer import BlockMsg, _Queue


def test_bulk_and_single_puts_keep_their_order_and_batches_respect_the_limit() -> None:
    q = _Queue()
    q.put(BlockMsg("a", None))
    q.put_many([BlockMsg(str(i), None) for i in range(5)])
    q.put_many([])
    q.put(BlockMsg("z", None))
    first: list = [q.get(timeout=1)]
    q.take_nowait(first, 3)
    rest: list = [q.get(timeout=1)]
    q.take_nowait(rest, 100)
    assert [m.cidr for m in first] == ["a", "0", "1", "2"]
    assert [m.cidr for m in rest] == ["3", "4", "z"]
    assert q.empty()


def test_a_bulk_put_wakes_a_waiting_taker() -> None:
    q = _Queue()
    got: list = []
    taker = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    taker.start()
    q.put_many([BlockMsg("x", None), BlockMsg("y", None)])
    taker.join(10)
    assert [m.cidr for m in got] == ["x"] and q.qsize() == 1
