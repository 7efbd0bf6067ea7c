"""Health (`/liveness`, `/readiness`) and Prometheus metrics, each on its own HTTP port.

Ready = the datastore is in sync and the last dataplane commit fully succeeded (routes of orphaned
endpoints, whose interface is gone, do not count: felixpy.dataplane.orphans). Live = the
agent's threads are running (a dead thread ends the process anyway: crash-only).
Every agent gets its own metrics registry, so tests can run several in one process.

With metrics off (FELIX_PROMETHEUSMETRICSENABLED, false by default, as Felix) the agent gets
``NullMetrics``: the same instruments, doing nothing, and prometheus_client is never imported
(with what it pulls in — http.client, urllib.request, wsgiref, email, gzip — ~60 ms of start-up
CPU and ~4 MB of RSS; tests/unit/test_start_imports.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from felixpy import servers

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"  # what Felix's /metrics answers with


class Metrics:
    """felixpy's own ``felixpy_*`` families, Felix's ``felix_*`` ones that are observed at a call site
    (the rest are read at scrape time: felixpy.runtime.felix_metrics) and ``process_*``."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            ProcessCollector,
            Summary,
        )

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, fds…
        self.felix_apply_seconds = Summary(
            "felix_int_dataplane_apply_time_seconds", "Time to apply one dataplane update", registry=r
        )
        self.felix_failures = 0  # felix_int_dataplane_failures (FelixCollector); the writer thread adds
        self.felix_batch_size = Summary(
            "felix_int_dataplane_msg_batch_size", "Messages per dataplane batch", registry=r
        )
        self.local_endpoints = Gauge("felixpy_local_endpoints", "Workload endpoints on this node", registry=r)
        self.in_sync = Gauge(
            "felixpy_datastore_in_sync", "1 when the datastore snapshot is complete", registry=r
        )
        self.apply_seconds = Histogram(
            "felixpy_dataplane_apply_seconds",
            "Time to commit one batch to the dataplane",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.resyncs = Counter(
            "felixpy_dataplane_resyncs", "Periodic dataplane resyncs", ["what"], registry=r
        )
        self.errors = Counter("felixpy_errors", "Errors by kind", ["kind"], registry=r)
        self.config_restarts = Counter(
            "felixpy_config_restarts",
            "In-place restarts of the agent for a FelixConfiguration change (kept across the exec)",
            registry=r,
        )
        self.orphaned_endpoints = Gauge(
            "felixpy_orphaned_endpoints",
            "Workload endpoints on this node whose interface (and pod netns) is gone, awaiting a CNI DEL",
            registry=r,
        )
        self.cni_requests = Counter(
            "felixpy_cni_requests", "CNI requests by command and outcome", ["command", "outcome"], registry=r
        )

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """``/metrics`` in text format 0.0.4 as Felix serves it (felix_metrics.exposition)."""
        from felixpy.runtime.felix_metrics import exposition

        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = exposition(registry)
                self.send_response(200)
                self.send_header("Content-Type", TEXT_0_0_4)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        httpd = ThreadingHTTPServer((host, port), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=servers.serve, args=(httpd,), name="felixpy-metrics", daemon=True).start()
        return httpd


class _NullInstrument:
    """A counter, gauge, histogram or summary that records nothing (``NullMetrics``)."""

    def labels(self, *values: str) -> _NullInstrument:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def observe(self, value: float) -> None:
        return None


class _NullRegistry:
    def register(self, collector: Any) -> None:
        return None


class NullMetrics:
    """``Metrics`` when metrics are off: every instrument ``Metrics`` has, recording nothing; no
    prometheus_client (see the module docstring). Nothing reads them: no ``/metrics`` is served."""

    enabled = False

    def __init__(self) -> None:
        null = _NullInstrument()
        self.registry = _NullRegistry()
        self.felix_apply_seconds = self.felix_batch_size = null
        self.felix_failures = 0
        self.local_endpoints = self.in_sync = self.orphaned_endpoints = null
        self.apply_seconds = self.resyncs = self.errors = self.config_restarts = null
        self.cni_requests = null

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        raise RuntimeError("metrics are off (FELIX_PROMETHEUSMETRICSENABLED): nothing to serve")


def metrics_for(enabled: bool) -> Metrics | NullMetrics:
    """The agent's metrics: ``Metrics`` when they are served, else ``NullMetrics``."""
    return Metrics() if enabled else NullMetrics()


def _handler(live: Callable[[], bool], ready: Callable[[], bool]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            checks = {"/liveness": live, "/readiness": ready}
            check = checks.get(self.path.split("?")[0])
            if check is None:
                self.send_error(404)
                return
            ok = check()
            body = json.dumps({"ok": ok}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


class HealthServer:
    def __init__(self, host: str, port: int, *, live: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self.httpd = ThreadingHTTPServer((host, port), _handler(live, ready))
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        threading.Thread(target=servers.serve, args=(self.httpd,), name="felixpy-health", daemon=True).start()

    def stop(self) -> None:
        servers.shutdown(self.httpd)
        self.httpd.server_close()
