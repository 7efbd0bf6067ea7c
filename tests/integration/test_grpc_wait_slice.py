"""The agent's slower gRPC wait slice (felixpy.interpreter) does not delay etcd watch events."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest
from grpc import _common as grpc_common

from felixpy import interpreter
from felixpy.datastore.etcd import EtcdKV

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_slice() -> Iterator[float]:
    original = grpc_common.MAXIMUM_WAIT_TIMEOUT
    assert interpreter.slow_grpc_waits(5.0) is True
    try:
        yield 5.0
    finally:
        grpc_common.MAXIMUM_WAIT_TIMEOUT = original


def test_a_blocked_watch_gets_each_put_long_before_the_slice(etcd_kv: EtcdKV, slow_slice: float) -> None:
    w = etcd_kv.watch("/slice/", etcd_kv.revision() + 1)
    got: queue.Queue[tuple[str, float]] = queue.Queue()

    def follow() -> None:
        for batch in w:
            for ev in batch:
                got.put((ev.key, time.monotonic()))

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    try:
        delays = []
        for i in range(5):
            time.sleep(0.3)  # let the watcher block in gRPC's wait before the put
            sent = time.monotonic()
            etcd_kv.put(f"/slice/{i}", b"x")
            key, seen = got.get(timeout=slow_slice)
            assert key == f"/slice/{i}"
            delays.append(seen - sent)
        # Woken by the message, not by the slice: with 5 s slices a timed-out wake would average 2.5 s.
        assert max(delays) < 2.0, delays
    finally:
        closing = time.monotonic()
        w.close()
        t.join(slow_slice * 2)
    assert not t.is_alive(), "close() from another thread left the watch blocked"
    assert time.monotonic() - closing < 2.0  # the cancel wakes the waiter too: shutdown is not slowed
