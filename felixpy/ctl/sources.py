"""Where felixctl's ``-f`` input comes from: a file, stdin (``-``), or a directory, as calicoctl.

A directory gives its ``*.yaml``, ``*.yml`` and ``*.json`` files in name order; with ``-R``
(``--recursive``) those of its sub-directories too (depth first, in name order). Other files
are ignored, as calicoctl ignores them. The input limits (`felixpy.ctl.limits`) hold for the
whole input: the bytes of every file together, the resources of every file together. Unlike
calicoctl, which writes file by file and stops at the first failure, the files of one command
are validated together and written all-or-nothing, as one file is.
"""

from __future__ import annotations

import os
from pathlib import Path

from felixpy.ctl.limits import LimitError, Limits, read_source

SUFFIXES = (".yaml", ".yml", ".json")


def input_files(filename: str, *, recursive: bool = False, skip_empty: bool = False) -> list[str]:
    """The files ``-f filename`` names: itself, or a directory's manifests (LimitError if none,
    unless ``skip_empty``: calicoctl's ``--skip-empty``)."""
    if filename == "-" or not os.path.isdir(filename):
        return [filename]
    root = Path(filename)
    found = root.rglob("*") if recursive else root.glob("*")
    files = sorted(str(p) for p in found if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files and not skip_empty:
        more = "" if recursive else " (add -R for its sub-directories)"
        raise LimitError(f"no *.yaml, *.yml or *.json files in directory {filename}{more}")
    return files


def read_sources(
    filename: str, limits: Limits, *, recursive: bool = False, skip_empty: bool = False
) -> list[tuple[str, str]]:
    """(file name, text) of every input file, their bytes together within ``max_input_bytes``."""
    out: list[tuple[str, str]] = []
    left = limits.max_input_bytes
    for path in input_files(filename, recursive=recursive, skip_empty=skip_empty):
        text = read_source(path, Limits(**{**limits.__dict__, "max_input_bytes": left}))
        left -= len(text.encode())
        out.append((path, text))
    return out
