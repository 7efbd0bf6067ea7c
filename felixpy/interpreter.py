"""Interpreter settings for the long-running agent (called once, after start-up): the garbage
collector and how soon a waiting thread gets the GIL.

The agent allocates in bursts — a peer's full table is 10,000 routes at once, a resync touches
every endpoint — and holds a large, mostly acyclic heap. With CPython's default (a young
collection every 700 allocations) the cyclic collector ran hundreds of times per burst, and
its full collections, which walk every live object, added 20 to 30 ms to one reflection of
10,000 routes (docs/perf-bgp.md). ``gc.freeze()`` moves what start-up built (modules, models,
configuration) out of the collector's sight; a larger young generation makes collections rare
during a burst. Cycles are still collected, only less often.

Threads: the BGP service parses ExaBGP's output in a reader thread and decides in its own; with
CPython's 5 ms switch interval, a reader holding the GIL made the decision thread wait up to
5 ms at each hand-over. At 0.5 ms the reflection benchmark's median went 89 -> 77 ms (6
interleaved runs each, bench/bench_bgp.py --only reflect with BENCH_SWITCH).

gRPC (the etcd client): a thread waiting for the next message of a watch stream wakes every
0.1 s (``grpc._common.MAXIMUM_WAIT_TIMEOUT``) so that a *main* thread blocked in gRPC still runs
its signal handlers. The agent's watches run in their own threads, and a message still wakes
its waiter at once (the condition is notified), so the timeout only sets how often three idle
watch threads spin: 1 s instead of 0.1 s took ~30 wake-ups a second off an idle agent
(bench/idle.py, docs/performance.md "Footprint"). A main thread in a gRPC call (start-up)
handles SIGTERM within 1 s instead of 0.1 s; tune() runs after start-up, which keeps 0.1 s.
Issue 15 (session 7): 10 s. Six threads wait this way on an idle agent (three watch streams and
their request senders), and after start-up the main thread makes no gRPC call (it waits on an
Event), so the slice only sets how often they spin: ~5 wake-ups a second fewer.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

YOUNG_GENERATION = 20_000  # allocations between young collections (CPython default: 700)
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits (default 0.005)
GRPC_WAIT_SLICE = 10.0  # seconds between an idle gRPC waiter's wake-ups (grpc's default: 0.1)


def skip_pydantic_plugins() -> bool:
    """pydantic looks for plugins on its first model build: it imports ``importlib.metadata`` (with
    ``email``, ``zipfile``, ...) and reads the entry points of every installed distribution, ~40 ms of
    CPU at the agent's start (issue 15, goal 2). felixpy uses no pydantic plugin, so its processes
    put a loader that finds none in its place, before any model is built. False (nothing changed)
    when pydantic has already loaded its own."""
    name = "pydantic.plugin._loader"
    if name in sys.modules:
        return False
    stub = types.ModuleType(name, "felixpy: no pydantic plugins (felixpy.interpreter.skip_pydantic_plugins)")
    stub.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[name] = stub
    return True


@contextmanager
def gc_paused(*, freeze: bool = False) -> Iterator[None]:
    """The cyclic collector off for the block (the agent's imports and start-up build), back on
    after it unless it was off before. Start-up allocates and frees almost nothing: each young
    collection promoted what the imports built and the older ones rescanned the growing heap, for
    nothing found (issue 15 goal 2; docs/performance.md "Start-up imports: the collector paused").
    ``freeze``: what the block built leaves the collector's generations (``gc.freeze``, as ``tune``
    does after start-up) before it is turned on again; else the first young collection after the
    block scans all of it (~50 ms of CPU after the agent's imports). Nested blocks: only the
    outermost turns it back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if freeze:
                gc.freeze()
            gc.enable()


def tune() -> None:
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 50, 100)
    sys.setswitchinterval(SWITCH_INTERVAL)
    slow_grpc_waits(GRPC_WAIT_SLICE)


def slow_grpc_waits(seconds: float) -> bool:
    """Set how often an idle gRPC waiter wakes; False when this grpc has no such setting, or when
    nothing imported gRPC (the Kubernetes datastore: importing it here only for this would cost
    ~70 ms of CPU and ~20 MB of RSS; tests/unit/test_start_imports.py)."""
    if "grpc" not in sys.modules:
        return False
    from grpc import _common as grpc_common

    if not isinstance(getattr(grpc_common, "MAXIMUM_WAIT_TIMEOUT", None), float):
        return False
    grpc_common.MAXIMUM_WAIT_TIMEOUT = seconds
    return True


# ---- the C heap (glibc malloc) -----------------------------------------------------------------
# CPython takes objects above 512 bytes (JSON documents, iptables-restore input, netlink dumps) from
# malloc, and glibc keeps what start-up freed in its heaps instead of giving it back: an agent
# that peaked while loading 11,000 endpoints and 10,000 routes kept that peak as RSS. Two
# settings: at most ``MALLOC_ARENAS`` arenas (glibc makes up to 8 per core, one per thread that
# allocates at once: each keeps its own free memory), and ``malloc_trim`` after a burst
# (``HeapTrimmer``: once the resident size grew by ``TRIM_GROWTH`` since the last trim, or by
# ``TRIM_SETTLED`` and then stopped growing, at most every ``TRIM_EVERY`` seconds). Neither changes
# what the agent does; both do nothing without glibc.
# The settled rule (issue 15, session 9): at x10 the start-up trim came at in-sync, and the dataplane's
# programming after it grew the heap by less than ``TRIM_GROWTH``, so the 10 MB it freed stayed
# resident (a trim 5 s after "programmed" gave back 3.4 MB more).
# A third (session 9): a fixed ``MMAP_THRESHOLD``. glibc serves blocks from 128 KB up with their own
# mmap, but raises that bound (up to 32 MB) each time such a block is freed, so after the first few
# the big temporaries — an ``iptables-save`` of 10,000 rules and its parse, a netlink dump — come
# from the heap and leave holes there. Fixed, they are mapped and unmapped whole: at x10 the
# dataplane's post-write read 5 s after "programmed" lifted RSS 148.4 -> 154.4 MB until the next
# trim; with the fixed bound, 148.9 -> 150.1 MB. (Setting it also stops glibc moving the trim
# threshold, which stays at its 128 KB default.)
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 << 10
TRIM_GROWTH = 16 << 20
TRIM_SETTLED = 2 << 20  # grown this much since the last trim and no longer growing: trim
TRIM_STILL = 1 << 20  # "no longer growing": less than this since the previous poll
TRIM_EVERY = 5.0


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap glibc's malloc arenas (call early: arenas made before stay) and fix the size from which
    a block gets its own mapping (see above); False without glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(M_ARENA_MAX, arenas) == 1 and libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    )


def resident_bytes() -> int:
    """This process's resident set size (/proc/self/statm), 0 when unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrimmer:
    """Gives free C heap memory back to the kernel after a burst (``poll`` from a periodic loop)."""

    def __init__(
        self, growth: int = TRIM_GROWTH, every: float = TRIM_EVERY, settled: int = TRIM_SETTLED
    ) -> None:
        self.growth = growth
        self.every = every
        self.settled = settled
        self._libc = _glibc()
        self._base = 0  # resident size after the last trim
        self._prev = 0  # resident size at the previous poll (once ``every`` had passed)
        self._last = -math.inf
        self.trims = 0

    def poll(self, now: float) -> bool:
        """Trim if ``every`` seconds passed since the last trim and the resident size grew since it
        by ``growth``, or by ``settled`` and no more since the previous poll (a burst is over);
        True when it trimmed."""
        if self._libc is None or now - self._last < self.every:
            return False
        rss = resident_bytes()
        prev, self._prev = self._prev, rss
        grown = rss - self._base
        if grown < self.growth and not (grown >= self.settled and rss - prev < TRIM_STILL):
            return False
        self._libc.malloc_trim(0)  # (ctypes lets other threads run meanwhile)
        self._last, self._base = now, resident_bytes()
        self._prev = self._base
        self.trims += 1
        return True
