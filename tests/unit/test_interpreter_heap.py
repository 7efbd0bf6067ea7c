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


def test_a_burst_below_the_growth_bound_is_trimmed_once_it_stops_growing() -> None:
    """Start-up's last burst (the dataplane programmed after in-sync) grows the heap by less than
    ``growth``: it is given back once the resident size stops growing, not while it grows."""
    trimmer = interpreter.HeapTrimmer(growth=1 << 30, every=0.0, settled=4 << 20)
    if trimmer._libc is None:
        pytest.skip("not glibc: nothing to trim")
    trimmer.poll(0.0)
    trimmer.poll(0.5)  # a baseline: at most the first of these trims (nothing grew since)
    burst = [bytes(10_000) for _ in range(3_000)]  # ~30 MB malloc'd, far below ``growth``
    assert not trimmer.poll(1.0), "still growing since the previous poll: no trim yet"
    del burst[::2]  # holes: ~15 MB freed that glibc keeps
    grown = interpreter.resident_bytes()
    assert trimmer.poll(1.5), "grew by more than ``settled`` and stopped: trims"
    assert interpreter.resident_bytes() < grown - (8 << 20), "the freed half left the resident set"
    assert not trimmer.poll(2.0), "nothing grew since that trim"
    del burst


_BIG_TEMPORARIES = """
import sys
from felixpy import interpreter
if sys.argv[1] == "fixed":
    assert interpreter.limit_malloc_arenas()
warm = b"w" * (4 << 20)
del warm  # glibc's dynamic threshold would now be above 4 MB
keep, big = [], []
for _ in range(40):
    big.append(b"x" * (1 << 20))  # a 1 MB temporary, touched (an iptables-save, its parse)
    keep.append(b"y" * (100 << 10))  # a live 100 KB block after it: the heap cannot shrink from its top
grown = interpreter.resident_bytes()
del big
print((grown - interpreter.resident_bytes()) >> 20)
"""


def test_big_temporaries_leave_the_resident_set_when_freed_without_a_trim() -> None:
    """With the fixed mmap threshold a freed 1 MB block is unmapped at once; with glibc's default
    (the control) it stays in the heap between live objects until a trim."""
    import subprocess
    import sys

    if interpreter._glibc() is None:
        pytest.skip("not glibc")

    def freed_mb(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _BIG_TEMPORARIES, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(out.stdout.strip())

    assert freed_mb("fixed") >= 30
    assert freed_mb("default") < 10  # the control: the setting is what gives it back
