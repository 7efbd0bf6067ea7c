"""felixpy.interpreter's C heap settings: freed start-up memory goes back to the kernel."""

from __future__ import annotations

import pytest

from felixpy import interpreter


def test_trim_gives_back_what_a_burst_freed_and_waits_for_growth_and_time() -> None:
    trimmer = interpreter.HeapTrimmer(growth=8 << 20, every=5.0)
    if trimmer._libc is None:
        pytest.skip("not glibc: nothing to trim")
    assert trimmer.poll(0.0) in (True, False)  # the first call trims if the process grew already
    trimmer._last = -10.0
    burst = [bytes(10_000) for _ in range(8_000)]  # ~80 MB of malloc'd (not pymalloc) objects
    del burst[::2]  # holes between live objects: glibc keeps them until a trim
    grown = interpreter.resident_bytes()
    assert trimmer.poll(1.0), "grew by more than 8 MB since the last trim: trims"
    assert interpreter.resident_bytes() < grown - (20 << 20), "the freed half left the resident set"
    del burst
    assert not trimmer.poll(2.0), "not again within 5 s"
    assert not trimmer.poll(10.0), "no growth since: nothing to do"


def test_arena_cap_is_accepted_by_glibc() -> None:
    if interpreter._glibc() is None:
        pytest.skip("not glibc")
    assert interpreter.limit_malloc_arenas(2)
