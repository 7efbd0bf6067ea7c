"""``felixctl cluster diags``: one archive of the cluster's Calico state, as calicoctl has it.

``cluster diags [--output-dir DIR] [--skip-temp-dir-cleanup]`` writes
``cluster-diags-YYYYMMDD_HHMMSS.tar.gz`` holding, each in its own file and read from the datastore
(etcd or Kubernetes, as every verb): ``felixctl version``; every kind felixctl knows as
``get <kind> -A -o yaml`` (``resources/<plural>.yaml``); ``get nodes -o wide``; ``ipam show``
with its blocks and its configuration; and ``ipam check``. A step that fails leaves its error in
its file (``# exit code 1`` and the message) and the archive is still made. One progress line per
step on stdout, then ``Diags saved to <path>``; with ``--skip-temp-dir-cleanup`` the unpacked
directory is kept and named too.

What calicoctl adds with kubectl (pod logs and Kubernetes objects, ``--since``, ``--max-logs``,
``--focus-nodes``, ``--max-parallelism``) is not collected: felixctl reads the datastore only, so
those flags are refused (exit 2) rather than ignored. Per-node state (routes, iptables, ipsets,
logs) is ``felixctl node diags`` on each node.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from felixpy.ctl.resource_cmds import CommandError
from felixpy.resources.registry import ALL_KINDS


def steps() -> list[tuple[str, list[str]]]:
    """(file name, felixctl arguments) of each step, in order."""
    out = [("version.txt", ["version"])]
    out += [(f"resources/{k.PLURAL}.yaml", ["get", k.PLURAL, "-A", "-o", "yaml"]) for k in ALL_KINDS]
    out += [
        ("nodes_wide.txt", ["get", "nodes", "-o", "wide"]),
        ("ipam_show.txt", ["ipam", "show"]),
        ("ipam_show_blocks.txt", ["ipam", "show", "--show-blocks"]),
        ("ipam_show_configuration.txt", ["ipam", "show", "--show-configuration"]),
        ("ipam_check.txt", ["ipam", "check"]),
    ]
    return out


def run_captured(run: Callable[[Sequence[str]], int], argv: list[str]) -> str:
    """What ``felixctl <argv>`` prints (stdout, then stderr), headed by the command and its exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    text = f"# felixctl {' '.join(argv)} (exit code {code})\n{out.getvalue()}"
    return text + (f"# stderr:\n{err.getvalue()}" if err.getvalue() else "")


def collect(args: argparse.Namespace, say: Callable[[str], None] = print) -> tuple[Path, Path | None]:
    """Write the archive; (its path, the kept directory or None)."""
    from felixpy.ctl.main import main  # (the verbs, as the user runs them)

    out_dir = Path(args.output_dir or ".")
    if not out_dir.is_dir():
        raise CommandError(f"--output-dir {out_dir} is not a directory")
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    archive = out_dir / f"cluster-diags-{stamp}.tar.gz"
    common = ["-c", args.config] if args.config else []
    tmp = Path(tempfile.mkdtemp(prefix="felixpy-cluster-diags-"))
    try:
        root = tmp / f"cluster-diags-{stamp}"
        (root / "resources").mkdir(parents=True)
        say(f"Collecting cluster diagnostics in {root}")
        for name, argv in steps():
            say(f"Recording felixctl {' '.join(argv)}")
            (root / name).write_text(run_captured(main, [*common, *argv]))
        say(f"Writing {archive}")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    finally:
        if not args.skip_temp_dir_cleanup:
            shutil.rmtree(tmp, ignore_errors=True)
    return archive, (root if args.skip_temp_dir_cleanup else None)


def run_diags(args: argparse.Namespace) -> int:
    try:
        archive, kept = collect(args)
    except OSError as exc:  # the archive or the temporary directory could not be written
        raise CommandError(f"cannot write the diagnostics archive: {exc.strerror or exc}") from None
    if kept is not None:
        print(f"Temporary directory kept: {kept}")
    print(f"Diags saved to {archive}")
    return 0


def register(subparsers: Any) -> None:
    cluster = subparsers.add_parser("cluster", help="cluster-wide commands (diags)")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("diags", help="one archive of every Calico resource, IPAM and versions")
    p.add_argument("--output-dir", default=None, help="where the archive goes (default: here)")
    p.add_argument(
        "--skip-temp-dir-cleanup", action="store_true", help="keep the unpacked directory (printed)"
    )
    p.set_defaults(func=run_diags)
