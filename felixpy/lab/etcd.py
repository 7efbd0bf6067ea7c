"""The lab's datastore: real etcd (one member, or a cluster) in its own namespace, reached via the fabric."""

from __future__ import annotations

import shutil

from felixpy.lab.names import LabError, LabNames
from felixpy.lab.plan import ETCD_ADDR, ETCD_PORT, Plan
from felixpy.lab.procs import alive, spawn
from felixpy.lab.shell import GiveUp, in_netns, run, wait_until
from felixpy.lab.state import ProcRecord
from felixpy.private_files import private_dir

PEER_PORT = 2380


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise LabError("etcd not found (Debian: apt-get install etcd-server)")
    return path


def start(names: LabNames, plan: Plan) -> list[ProcRecord]:
    """Start etcd in ``<lab>-etcd``: one member, or ``--etcd-members`` members on their own
    addresses forming one cluster; data in the lab's run dir (tmpfs)."""
    if plan.options.etcd_members == 1:
        return [_start_single(names)]
    addrs = plan.etcd_addresses
    cluster = ",".join(f"m{i}=http://{a}:{PEER_PORT}" for i, a in enumerate(addrs))
    out = []
    for i, addr in enumerate(addrs):
        data = names.etcd_dir / f"m{i}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            etcd_binary(),
            "--name", f"m{i}",
            "--data-dir", str(data),
            "--listen-client-urls", f"http://{addr}:{ETCD_PORT}",
            "--advertise-client-urls", f"http://{addr}:{ETCD_PORT}",
            "--listen-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-cluster", cluster,
            "--initial-cluster-token", names.name,
            "--log-level", "warn",
        ]
        log = names.run_dir / f"etcd-m{i}.log"
        out.append(spawn(names, role=f"etcd-m{i}", netns=names.etcd, argv=argv, log=log))
    return out


def _start_single(names: LabNames) -> ProcRecord:
    data = names.etcd_dir
    private_dir(data)  # etcd wants 0700 too; it holds BGPPeer passwords
    argv = [
        etcd_binary(),
        "--name", names.name,
        "--data-dir", str(data),
        "--listen-client-urls", f"http://{ETCD_ADDR}:{ETCD_PORT},http://127.0.0.1:{ETCD_PORT}",
        "--advertise-client-urls", f"http://{ETCD_ADDR}:{ETCD_PORT}",
        "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", f"{names.name}=http://127.0.0.1:2380",
        "--log-level", "warn",
    ]
    return spawn(names, role="etcd", netns=names.etcd, argv=argv, log=names.run_dir / "etcd.log")


def healthy_from(netns: str, endpoint: str) -> bool:
    """True if ``etcdctl endpoint health`` against ``endpoint`` succeeds from inside ``netns``."""
    proc = run(
        in_netns(netns, "etcdctl", "--endpoints", endpoint, "--dial-timeout", "1s",
                 "--command-timeout", "2s", "endpoint", "health"),
        check=False, timeout=10,
    )
    return proc.returncode == 0


def wait_ready(names: LabNames, plan: Plan, records: list[ProcRecord], *, timeout: float = 20.0) -> None:
    """Wait until every etcd member answers from the fabric (bounded); fail fast if one died."""

    def ready() -> bool:
        for record in records:
            if not alive(record.pid):
                raise GiveUp(f"etcd exited; see {record.log}")
        return healthy_from(names.fabric, plan.etcd_endpoint)

    wait_until(ready, timeout=timeout, interval=0.2, what="etcd health")
