"""felixctl: the calicoctl-like command line.

Sub-commands register themselves on the argparse sub-parsers: resource verbs here
(`resource_cmds`, `get_cmd`), and, when their modules are installed, `ipam` and
`node`/`ippool`/`bgppeer` helpers (`felixpy.ctl.ipam_cmd`, `felixpy.ctl.node_cmd`), each a
``register(subparsers)`` that adds parsers with ``set_defaults(func=handler)``; the
handler takes the parsed ``argparse.Namespace`` (``args.config`` is the ``--config`` file or
None, see `felixpy.ctl.connect`) and returns the exit code.

Exit codes, as calicoctl's: 0 success, 1 failure (message on stderr, ``Failed to execute
command: ...``), 2 bad usage (argparse's message). Flags may come anywhere after the verb
(`parse`).

No traceback reaches the user: every failure is one line on stderr. An exception nobody
anticipated is reported as ``unexpected error: <type>: <message>`` and its traceback goes to
the debug log (``--log-level debug``, or the file named by ``FELIXCTL_DEBUG_LOG``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from felixpy.ctl import edit_cmds, get_cmd, resource_cmds
from felixpy.ctl.batch import BatchError
from felixpy.ctl.connect import ConfigError
from felixpy.ctl.formats import FormatError
from felixpy.ctl.limits import LimitError
from felixpy.datastore.errors import DatastoreError, Unavailable
from felixpy.resources.base import ResourceError

PLUGINS = (
    "felixpy.ctl.ipam_cmd",
    "felixpy.ctl.node_cmd",
    "felixpy.ctl.datastore_cmd",
    "felixpy.ctl.convert_cmd",
    "felixpy.ctl.cluster_cmd",
)
log = logging.getLogger("felixctl")


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
    edit_cmds.register(sub)
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
    args = parse(build_parser(), argv)
    _configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except (
        ResourceError,
        resource_cmds.CommandError,
        ConfigError,
        LimitError,
        BatchError,
        FormatError,
    ) as exc:
        return fail(str(exc))
    except Unavailable as exc:
        return fail(f"cannot reach the datastore: {exc}")
    except DatastoreError as exc:
        return fail(f"datastore error: {exc}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `felixctl get ... | head`
        return 0
    except RecursionError:
        log.debug("recursion limit reached", exc_info=True)
        return fail("input nested too deeply")
    except MemoryError:
        return fail("out of memory; split the input into smaller files")
    except Exception as exc:  # the guard: whatever it was, one line, the details in the debug log
        log.debug("unexpected error", exc_info=True)
        text = " ".join(str(exc).split())[:300]
        return fail(f"unexpected error: {type(exc).__name__}: {text} (details: --log-level debug)")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Flags in any position, as calicoctl takes them: ``get ippool -o yaml NAME`` as well as
    ``get -o yaml ippool NAME``. argparse stops filling a command's positionals at the first
    flag; the names after it come back unrecognised and are appended to ``names`` here."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    stray = [a for a in extra if a.startswith("-") and a != "-"]
    if stray or not hasattr(args, "names"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(args, "kind") and not args.kind:
        args.kind, extra = extra[0], extra[1:]
    args.names = [*(args.names or []), *extra]
    return args


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    path = os.environ.get("FELIXCTL_DEBUG_LOG")
    if path:
        try:
            handler = logging.FileHandler(path)
        except OSError as exc:
            print(f"felixctl: warning: cannot open {path}: {exc.strerror}", file=sys.stderr)
            return
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        for other in root.handlers:
            if other is not handler:
                other.setLevel(level.upper())


def fail(message: str) -> int:
    print(f"Failed to execute command: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
