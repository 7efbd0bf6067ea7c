"""IPReservation on a real node: pods added through the installed CNI plugin never get a reserved address.

The real agent in a node namespace against a real etcd (`tests/kernel/test_agent_cni.py`'s
``running_node``), the reservation applied with the real felixctl, pods added as a runtime adds them.
Everything is removed afterwards, even on failure.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from tests.kernel.test_agent_cni import VENV_BIN, NodeEnv, running_node

pytestmark = pytest.mark.kernel
POOL = ipaddress.ip_network("10.244.0.0/16")  # the agent's default pool (blocks of /26)
FREE = ipaddress.ip_network("10.244.200.0/26")  # the one block left: everything else is reserved
RESERVED = sorted(POOL.address_exclude(FREE))  # ten CIDRs, /17 down to /26
RESERVATION = f"""\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {{name: all-but-one-block}}
spec:
  reservedCIDRs: [{", ".join(f'"{n}"' for n in RESERVED)}]
"""


def felixctl(env: NodeEnv, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", env.node.name, str(VENV_BIN / "felixctl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": env.endpoints},
    )


def test_pods_never_get_a_reserved_address_and_still_reach_each_other() -> None:
    with running_node("resv") as env:
        applied = felixctl(env, "apply", "-f", "-", stdin=RESERVATION)
        assert applied.returncode == 0, applied.stderr
        got = []
        for name in ("ra", "rb", "rc"):
            pod = env.pod(f"pod-{name}")
            rc, res = env.cni("ADD", pod, name)
            assert rc == 0, res
            assert res is not None
            ip = res["ips"][0]["address"].split("/")[0]
            # without the reservation IPAM would pick this block 1 time in 1,024
            assert ipaddress.ip_address(ip) in FREE, (name, ip)
            assert "dev cali" in env.node.run("ip", "route", "show", f"{ip}/32"), (name, ip)
            got.append((pod, ip))
        (pa, _), (_, ipb), (_, ipc) = got
        for target in (ipb, ipc):
            out = pa.run("ping", "-c", "1", "-W", "2", target, check=False)
            assert " 0% packet loss" in out, out
        # the only block claimed is the free one (a wholly reserved block is never claimed)
        blocks = [key.rsplit("/", 1)[-1] for key in env.keys("/calico/ipam/v2/assignment/")]
        assert blocks == [str(FREE).replace("/", "-")], blocks
