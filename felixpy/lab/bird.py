"""A BIRD 2 top-of-rack router in the fabric namespace: eBGP with every node, AS per rack.

The ToR (AS 65000) peers with each node from the rack's gateway address; a rack's nodes
share AS ``65100 + rack``. Routes a ToR sends into a rack would carry that rack's own AS
and be dropped by the nodes' loop check, so the export filter removes the rack's AS from
the path first (what ``as-override`` does on other routers). BGP-learned routes go into the
fabric's kernel table, so the fabric forwards pod traffic between racks. Third-party next
hops are kept on a shared subnet (BIRD's default), so same-rack traffic stays in the rack.
"""

from __future__ import annotations

import shutil

from felixpy.lab.layout import LabError, LabNames
from felixpy.lab.plan import ETCD_GW, TOR_AS, NodePlan, Plan
from felixpy.lab.procs import alive, spawn
from felixpy.lab.shell import GiveUp, in_netns, run, wait_until
from felixpy.lab.state import ProcRecord
from felixpy.private_files import SECRET, write_file


def _protocol(node: NodePlan, *, bfd: bool = False) -> str:
    local = node.gateway
    return (
        f"protocol bgp n_{node.name} {{\n"
        f"    local {local} as {TOR_AS};\n"
        f"    neighbor {node.address} as {node.asn};\n"
        "    hold time 30;\n"
        "    graceful restart on;\n"
        f"{'    bfd on;' + chr(10) if bfd else ''}"
        "    ipv4 {\n"
        "        import all;\n"
        "        export filter {\n"
        f"            if source != RTS_BGP then reject; bgp_path.delete({node.asn}); accept;\n"
        "        };\n"
        "    };\n"
        "}\n"
    )


def render_config(plan: Plan, log_path: str) -> str:
    """bird.conf for the ToR of ``plan`` (pure)."""
    head = (
        f"router id {ETCD_GW};\n"
        f'log "{log_path}" all;\n'
        "protocol device { scan time 10; }\n"
        "protocol kernel {\n"
        "    ipv4 { import none; export where source = RTS_BGP; };\n"
        "    merge paths on;\n"
        "}\n"
    )
    if plan.options.bfd:  # felixpy's defaults: 300 ms x 3 (BIRD's own are 10 ms rx, 100 ms tx, x 5)
        head += (
            "protocol bfd {\n"
            '    interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };\n'
            "}\n"
        )
    return head + "".join(_protocol(n, bfd=plan.options.bfd) for n in plan.nodes)


def socket_path(names: LabNames) -> str:
    return str(names.run_dir / "bird.ctl")


def start(names: LabNames, plan: Plan) -> ProcRecord:
    binary = shutil.which("bird")
    if binary is None:
        raise LabError("bird not found (Debian: apt-get install bird2)")
    conf = names.run_dir / "bird.conf"
    write_file(conf, render_config(plan, str(names.run_dir / "bird.log")), SECRET)  # peers' passwords, if any
    argv = [binary, "-f", "-c", str(conf), "-s", socket_path(names)]
    return spawn(names, role="bird", netns=names.fabric, argv=argv, log=names.run_dir / "bird.out")


def birdc(names: LabNames, *args: str) -> str:
    return run(in_netns(names.fabric, "birdc", "-s", socket_path(names), *args), timeout=10).stdout


def protocols(names: LabNames) -> dict[str, str]:
    """BGP protocol name -> BGP state column from ``birdc show protocols``."""
    out = {}
    for line in birdc(names, "show", "protocols").splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[1] == "BGP":
            out[cols[0]] = " ".join(cols[5:]) if len(cols) > 5 else cols[3]
    return out


def wait_ready(names: LabNames, record: ProcRecord, *, timeout: float = 15.0) -> None:
    def ready() -> bool:
        if not alive(record.pid):
            raise GiveUp(f"bird exited; see {record.log}")
        birdc(names, "show", "status")
        return True

    wait_until(ready, timeout=timeout, interval=0.2, what="bird control socket")
