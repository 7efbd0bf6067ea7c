"""Garbage-collector settings for the long-running agent (called once, after start-up).

The agent allocates in bursts — a peer's full table is 10,000 routes at once, a resync touches
every endpoint — and holds a large, mostly acyclic heap. With CPython's default (a young
collection every 700 allocations) the cyclic collector ran hundreds of times per burst, and
its full collections, which walk every live object, added 20 to 30 ms to one reflection of
10,000 routes (docs/perf-bgp.md). ``gc.freeze()`` moves what start-up built (modules, models,
configuration) out of the collector's sight; a larger young generation makes collections rare
during a burst. Cycles are still collected, only less often.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION = 20_000  # allocations between young collections (CPython default: 700)


def tune() -> None:
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, 50, 100)
