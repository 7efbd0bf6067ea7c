"""The chart's etcd endpoints: every member of a cluster reaches ETCD_ENDPOINTS, as a list or a string."""

from __future__ import annotations

import pytest

helm = pytest.importorskip("tests.unit.test_helm_chart", reason="the chart renderer (helm-python) is missing")

MEMBERS = ["https://10.0.0.10:2379", "https://10.0.0.11:2379", "https://10.0.0.12:2379"]


@pytest.mark.parametrize("endpoints", [MEMBERS, ",".join(MEMBERS)])
def test_three_members_reach_etcd_endpoints_of_every_workload(endpoints: object) -> None:
    values = {
        "datastore": {"type": "etcdv3", "etcd": {"endpoints": endpoints, "tls": {"secretName": "etcd-tls"}}}
    }
    docs = helm.render(values)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("DaemonSet", "Deployment", "Job")]
    found = [
        e["value"]
        for p in pods
        for c in p["containers"]
        for e in c.get("env", [])
        if e["name"] == "ETCD_ENDPOINTS"
    ]
    assert found and set(found) == {",".join(MEMBERS)}
