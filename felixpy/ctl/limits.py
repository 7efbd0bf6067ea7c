"""How much felixctl reads and writes in one command, and reading its input within those bounds.

Input (``-f FILE`` or stdin) is bounded before anything is parsed: at most ``max_input_bytes``
(64 MiB) of UTF-8 text, at most ``max_documents`` (10,000) resources. Writes are bounded by what
etcd accepts: one request of at most ``etcd_max_request_bytes`` (etcd's ``--max-request-bytes``,
1.5 MiB by default) and one transaction of at most ``etcd_max_txn_ops`` operations (etcd's
``--max-txn-ops``, 128). etcd does not publish its limits to clients, so a cluster started with
other values is described here by flag or environment variable:

  --max-input-bytes          FELIXCTL_MAX_INPUT_BYTES
  --max-documents            FELIXCTL_MAX_DOCUMENTS
  --etcd-max-request-bytes   FELIXCTL_ETCD_MAX_REQUEST_BYTES
  --etcd-max-txn-ops         FELIXCTL_ETCD_MAX_TXN_OPS
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

MiB = 1024 * 1024
DEFAULTS = {
    "max_input_bytes": 64 * MiB,
    "max_documents": 10_000,
    "etcd_max_request_bytes": 1536 * 1024,  # etcd's default --max-request-bytes (1.5 MiB)
    "etcd_max_txn_ops": 128,  # etcd's default --max-txn-ops
}
ENV = {name: "FELIXCTL_" + name.upper() for name in DEFAULTS}


class LimitError(Exception):
    """Input or settings outside the bounds: one line for the user, exit code 1."""


@dataclass(frozen=True)
class Limits:
    max_input_bytes: int = DEFAULTS["max_input_bytes"]
    max_documents: int = DEFAULTS["max_documents"]
    etcd_max_request_bytes: int = DEFAULTS["etcd_max_request_bytes"]
    etcd_max_txn_ops: int = DEFAULTS["etcd_max_txn_ops"]

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: dict[str, str] | None = None) -> Limits:
        """Flag, else environment variable, else etcd's / felixctl's default."""
        environ = os.environ if env is None else env
        values: dict[str, int] = {}
        for name, default in DEFAULTS.items():
            given: Any = getattr(args, name, None)
            source = f"--{name.replace('_', '-')}"
            if given is None and environ.get(ENV[name]):
                given, source = environ[ENV[name]], ENV[name]
            values[name] = default if given is None else _positive(given, source)
        return cls(**values)


def _positive(value: Any, source: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise LimitError(f"{source}: must be a positive integer (got {str(value)[:40]!r})") from None
    if number <= 0:
        raise LimitError(f"{source}: must be a positive integer (got {number})")
    return number


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (etcd's defaults; set them when etcd runs with others)")
    group.add_argument("--max-input-bytes", metavar="N", help="refuse input larger than N bytes (64 MiB)")
    group.add_argument("--max-documents", metavar="N", help="refuse more than N resources (10000)")
    group.add_argument("--etcd-max-request-bytes", metavar="N", help="etcd's --max-request-bytes (1.5 MiB)")
    group.add_argument("--etcd-max-txn-ops", metavar="N", help="etcd's --max-txn-ops (128)")


def read_source(filename: str, limits: Limits) -> str:
    """The text of ``filename`` (``-`` = stdin): at most ``max_input_bytes``, UTF-8, not binary."""
    where = "stdin" if filename == "-" else filename
    try:
        if filename == "-":
            data = _read_bounded(sys.stdin.buffer, limits.max_input_bytes, where)
        else:
            with open(filename, "rb") as f:
                data = _read_bounded(f, limits.max_input_bytes, where)
    except OSError as exc:
        raise LimitError(f"cannot read {where}: {exc.strerror or exc}") from None
    return decode_text(data, where)


def _read_bounded(stream: BinaryIO, limit: int, where: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise LimitError(
            f"{where} is larger than {_size(limit)}, the input limit (--max-input-bytes or "
            f"{ENV['max_input_bytes']}); split it into several files"
        )
    return data


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM is dropped), or LimitError naming the first bad byte."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise LimitError(f"{where} is binary, not YAML or JSON (a NUL byte at offset {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise LimitError(f"{where} is not UTF-8 text (byte 0x{bad} at offset {exc.start})") from None


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB and n % (MiB // 4) == 0 else f"{n:,} bytes"
