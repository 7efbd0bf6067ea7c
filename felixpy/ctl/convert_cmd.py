"""felixctl convert -f FILE [-o yaml|json] [--ignore-validation], as calicoctl convert.

Converts Calico API v1 manifests and Kubernetes NetworkPolicies to projectcalico.org/v3
(felixpy.resources.convert says what maps to what) and prints them; nothing is written to the
datastore. Each result is validated as ``apply`` would validate it unless ``--ignore-validation``.
Several documents print as a YAML stream (``-o json``: a ``kind: List``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from felixpy.ctl.limits import Limits
from felixpy.ctl.output import dump_yaml
from felixpy.ctl.resource_cmds import CommandError
from felixpy.ctl.sources import read_sources
from felixpy.resources.base import ResourceError
from felixpy.resources.convert import ConvertError, convert
from felixpy.resources.parse import flatten, load_yaml, parse_document


def run_convert(args: argparse.Namespace) -> int:
    limits = Limits.from_args(args)
    out: list[dict[str, Any]] = []
    for path, text in read_sources(args.filename, limits):
        docs = flatten(load_yaml(text, max_documents=limits.max_documents))
        for index, doc in enumerate(docs, start=1):
            try:
                v3 = convert(doc)
            except ConvertError as exc:
                kind = doc.get("kind", "?") if isinstance(doc, dict) else "?"
                raise CommandError(f"{path}: document {index} ({kind}): {exc}") from None
            if not args.ignore_validation:
                try:
                    v3 = parse_document(v3, index=index).to_dict()
                except ResourceError as exc:
                    raise CommandError(f"{path}: converted {exc}") from None
            out.append(v3)
    if not out:
        raise CommandError(f"no resources specified in {args.filename}")
    if args.output == "json":
        body: Any = out[0] if len(out) == 1 else {"apiVersion": "v1", "kind": "List", "items": out}
        print(json.dumps(body, indent=2))
    else:
        print("---\n".join(dump_yaml(d) for d in out), end="")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert", help="convert Calico v1 manifests and Kubernetes NetworkPolicies to projectcalico.org/v3"
    )
    p.add_argument("-f", "--filename", required=True, help="file or directory to convert, - for stdin")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.add_argument("--ignore-validation", action="store_true", help="print the result without validating it")
    p.set_defaults(func=run_convert)
