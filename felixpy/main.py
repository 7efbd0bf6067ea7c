"""`felixpy`: the agent's command line (`felixpy node [--route-reflector]`, `felixpy controllers`,
`felixpy install-cni`, `felixpy version`).

Settings are built once here from the environment (calico-node's variables) and passed down.
"""

from __future__ import annotations

import argparse
import os
import sys

from felixpy import interpreter

interpreter.skip_pydantic_plugins()  # before the first model is built (the settings' below)

with interpreter.gc_paused(freeze=True):  # imports allocate and free almost nothing (felixpy.interpreter)
    from felixpy import logs
    from felixpy.runtime.settings import Settings


def version() -> str:
    from importlib import metadata  # ~30 ms: only for `felixpy version`, not at the agent's start

    try:
        return metadata.version("felixpy")
    except metadata.PackageNotFoundError:
        return "unknown"


def _one_line(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
    return str(err)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="felixpy", description="Calico-style Kubernetes networking agent")
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run the node agent (env: NODENAME, ETCD_ENDPOINTS, IP, FELIX_*, ...)")
    node.add_argument("--route-reflector", action="store_true", help="BGP route reflector only")
    sub.add_parser(
        "controllers",
        help="run the cluster controllers: IPAM garbage collection, node cleanup (env: KUBECONFIG, "
        "DATASTORE_TYPE, ETCD_ENDPOINTS, POD_NAME, POD_NAMESPACE, LOG_LEVEL)",
    )
    sub.add_parser("version", help="print the version")
    sub.add_parser(
        "install-cni", help="install the CNI plugins and network config (env: CNI_NETWORK_CONFIG, ...)"
    )
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"felixpy {version()}")
        return
    if args.command == "install-cni":
        from felixpy.kube.install_cni import main as install_cni

        sys.exit(install_cni())
    if args.command == "controllers":
        logs.configure(os.environ.get("LOG_LEVEL", "info"))
        from felixpy.controllers.runner import run_controllers
        from felixpy.datastore.errors import DatastoreError

        try:
            sys.exit(run_controllers(dict(os.environ)))
        except (ValueError, OSError, DatastoreError) as err:  # bad env, a port in use, no datastore
            print(f"felixpy controllers: {err}", file=sys.stderr)
            sys.exit(1)
    try:
        settings = Settings.from_env(os.environ, route_reflector=args.route_reflector)
    except ValueError as err:  # pydantic's ValidationError too: one line per bad field, no traceback
        print(f"felixpy: invalid setting: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    # Files are written with explicit modes (felixpy.private_files); this umask covers what our
    # children (ExaBGP) create themselves: nothing the agent or they write is world-readable.
    os.umask(0o027)
    logs.configure(settings.log_level)
    with interpreter.gc_paused(freeze=True):  # run_node holds it again over its build (felixpy.interpreter)
        from felixpy.agent import run_node
        from felixpy.datastore.errors import DatastoreError
        from felixpy.runtime.startup import AddressNotFound

    try:
        sys.exit(run_node(settings, dict(os.environ)))
    except (DatastoreError, AddressNotFound) as err:  # at start-up (no datastore, no node address): one line
        print(f"felixpy: start-up failed: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
