"""Logging for every felixpy process: one structured line per event, whichever API a module logs with.

Modules that do kernel work log through structlog with key=value context (`route.replaced dst=...
proto=80 reason=...`); others (bgp, ipam, the syncer) use the standard library. Both end in the same
renderer, so an operator greps one format: `timestamp=... level=... logger=... event=... key=value`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

_SHARED: list[Processor] = [
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso"),
]


def level_number(level: str) -> int:
    name = level.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL", "PANIC": "CRITICAL"}.get(name, name)
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else logging.INFO


def configure(level: str = "info", *, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    numeric = level_number(level)
    renderer = structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "logger", "event"])
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_SHARED],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
