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
"""

from __future__ import annotations

import gc
import sys

YOUNG_GENERATION = 20_000  # allocations between young collections (CPython default: 700)
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits (default 0.005)


def tune() -> None:
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 50, 100)
    sys.setswitchinterval(SWITCH_INTERVAL)
