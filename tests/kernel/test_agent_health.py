"""Health and Prometheus metrics of the real agent (in its node namespace, against a real etcd):
what a kubelet probe and a Prometheus scrape rely on."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.kernel.test_agent_cni import NodeEnv, _wait, env  # noqa: F401 (module-scoped agent fixture)

pytestmark = pytest.mark.kernel

FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=2); print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def http_get(e: NodeEnv, port: int, path: str) -> tuple[int, str]:
    argv = ["ip", "netns", "exec", e.node.name, "python3", "-c", FETCH, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=True).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def metric(text: str, name: str, labels: str = "") -> float | None:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


def test_liveness_and_readiness_answer_200_with_json(env: NodeEnv) -> None:  # noqa: F811
    for path in ("/liveness", "/readiness"):
        status, body = http_get(env, 9099, path)
        assert status == 200 and json.loads(body) == {"ok": True}, (path, status, body)
    assert http_get(env, 9099, "/nonsense")[0] == 404


def test_metrics_count_endpoints_sync_state_and_dataplane_applies(env: NodeEnv) -> None:  # noqa: F811
    pods = [env.pod(f"m{i}") for i in range(2)]
    for i, pod in enumerate(pods):
        rc, result = env.cni("ADD", pod, f"metrics-{i}")
        assert rc == 0, result

    def endpoints_counted() -> bool:
        text = http_get(env, 9091, "/metrics")[1]
        return (metric(text, "felixpy_local_endpoints") or 0) >= 2

    _wait(endpoints_counted, 15, "felixpy_local_endpoints to count the new pods")
    text = http_get(env, 9091, "/metrics")[1]
    assert metric(text, "felixpy_datastore_in_sync") == 1.0
    assert (metric(text, "felixpy_dataplane_apply_seconds_count") or 0) > 0
    assert "felixpy_cni_requests_total" in text and 'command="ADD"' in text
    before = metric(text, "felixpy_local_endpoints") or 0

    for i, pod in enumerate(pods):
        assert env.cni("DEL", pod, f"metrics-{i}")[0] == 0

    def endpoints_gone() -> bool:
        return metric(http_get(env, 9091, "/metrics")[1], "felixpy_local_endpoints") == before - 2

    _wait(endpoints_gone, 15, "felixpy_local_endpoints to drop by the deleted pods")
