"""felixctl: the calicoctl-like command line.

Sub-commands register themselves on the argparse sub-parsers: resource verbs here
(`resource_cmds`, `get_cmd`), and, when their modules are installed, `ipam` and
`node`/`ippool`/`bgppeer` helpers (`felixpy.ctl.ipam_cmd`, `felixpy.ctl.node_cmd`), each a
``register(subparsers)`` that adds parsers with ``set_defaults(func=handler)``; the
handler takes the parsed ``argparse.Namespace`` (``args.config`` is the ``--config`` file or
None, see `felixpy.ctl.connect`) and returns the exit code.

Exit codes: 0 success, 1 failure (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from felixpy.ctl import get_cmd, resource_cmds
from felixpy.ctl.connect import ConfigError
from felixpy.datastore.errors import DatastoreError, Unavailable
from felixpy.resources.base import ResourceError

PLUGINS = ("felixpy.ctl.ipam_cmd", "felixpy.ctl.node_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="felixctl", description="Manage felixpy resources: IP pools, BGP peers, policies, IPAM, nodes."
    )
    parser.add_argument("-c", "--config", help="datastore config file (calicoctl.cfg form)")
    parser.add_argument(
        "-l", "--log-level", default="error", choices=("debug", "info", "warning", "error"),
        help="log level of diagnostics on stderr (default: error)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    resource_cmds.register(sub)
    get_cmd.register(sub)
    for name in PLUGINS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a broken helper must not take apply/get down with it
            print(f"felixctl: warning: {name} unavailable: {exc}", file=sys.stderr)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ResourceError, resource_cmds.CommandError, ConfigError) as exc:
        return fail(str(exc))
    except Unavailable as exc:
        return fail(f"cannot reach the datastore: {exc}")
    except DatastoreError as exc:
        return fail(f"datastore error: {exc}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `felixctl get ... | head`
        return 0


def fail(message: str) -> int:
    print(f"Failed to execute command: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
