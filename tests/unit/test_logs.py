"""Both logging APIs used in felixpy render as the same key=value lines, filtered by one level."""

from __future__ import annotations

import io
import logging

import structlog

from felixpy import logs


def test_stdlib_and_structlog_lines_share_one_format_and_level() -> None:
    out = io.StringIO()
    logs.configure("info", stream=out)
    try:
        logging.getLogger("bgp.speaker").info("exabgp started pid=%d", 42)
        structlog.get_logger().info("route.replaced", dst="10.0.0.0/26", proto=80)
        logging.getLogger("bgp.speaker").debug("hidden")
        structlog.get_logger().debug("hidden.too")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("timestamp=") and "level='info' logger='bgp.speaker'" in lines[0]
    assert "event='exabgp started pid=42'" in lines[0]
    assert "level='info'" in lines[1] and "event='route.replaced'" in lines[1] and "proto=80" in lines[1]


def test_level_names_calico_users_write() -> None:
    assert logs.level_number("Warn") == logging.WARNING
    assert logs.level_number("fatal") == logging.CRITICAL
    assert logs.level_number("nonsense") == logging.INFO
