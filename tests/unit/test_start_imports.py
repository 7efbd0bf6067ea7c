"""What the agent's start pays in imports: pyroute2 (~0.4 s of CPU, ~21 MB of RSS) is not among
them; the start-up questions it answered go over raw rtnetlink (felixpy.netlinkio.query)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_agent_does_not_import_pyroute2() -> None:
    code = (
        "import sys, felixpy.main, felixpy.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_agent_and_what_its_start_builds_do_not_import_yaml() -> None:
    """PyYAML (~0.9 MB, ~25 ms) is for felixctl and config files; the agent parses none at start."""
    code = (
        "import sys, felixpy.main, felixpy.agent, felixpy.runtime.startup, felixpy.datastore.etcd\n"
        "import felixpy.datastore.config, felixpy.cni.handler, felixpy.dataplane.linux\n"
        "import bgp.service, ipam.ipam\n"
        "print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('yaml.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


# What the agent's start imports, by configuration (issue 15, goal 3: each module not imported saves
# start-up CPU and RSS). The lazily imported modules of ``felixpy.agent.build`` (etcd mode, policy
# and BGP on), without the metrics ones.
_BUILD_MODULES = (
    "felixpy.main, felixpy.agent, felixpy.runtime.startup, felixpy.datastore.config, "
    "felixpy.datastore.etcd, bgp.service, felixpy.dataplane.bgp_sink, felixpy.dataplane.ipset_writer, "
    "felixpy.dataplane.iptables, felixpy.dataplane.iptables_backend, felixpy.dataplane.policy_driver, "
    "policy.chains, policy.compiler, felixpy.calc.wireguard, felixpy.dataplane.wireguard_driver, "
    "felixpy.runtime.node_status_reporter, felixpy.cni.handler, ipam.ipam"
)
# Never in the agent, whatever its configuration: tools' and other processes' libraries.
NEVER = ("yaml", "pyroute2", "kubernetes", "matplotlib", "jsonschema", "exabgp", "iptc", "prometheus_client")


def _imported(code: str, prefixes: tuple[str, ...]) -> list[str]:
    probe = code + f"\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))"
    out = subprocess.run(
        [sys.executable, "-c", "import sys\n" + probe], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return list(eval(out.stdout.strip().splitlines()[-1]))  # a printed list of str


def test_the_start_with_metrics_off_imports_none_of_the_never_list() -> None:
    """Metrics are off by default (FELIX_PROMETHEUSMETRICSENABLED): the agent gets NullMetrics, its
    HTTP set-up returns before the collectors, and prometheus_client (with http.client, urllib.request,
    wsgiref, gzip) is not imported. The real agent's start is checked the same way in
    tests/kernel/test_agent_listeners.py."""
    code = (
        f"import {_BUILD_MODULES}\n"
        "from types import SimpleNamespace\n"
        "from felixpy.agent import _on_commit, _serve_http\n"
        "from felixpy.runtime.health import metrics_for\n"
        "m = metrics_for(False)\n"
        "m.errors.labels('x').inc(); m.in_sync.set(1); m.config_restarts.inc(2)\n"
        "_on_commit(m, SimpleNamespace(endpoints={}))(0.1, False, 3)\n"
        "m.cni_requests.labels('ADD', 'ok').inc(); m.orphaned_endpoints.set(0)\n"
        "params = SimpleNamespace(healthEnabled=False)\n"
        "_serve_http(SimpleNamespace(params=params, metrics=m))\n"
        "assert m.felix_failures == 1\n"
    )
    assert _imported(code, NEVER) == []


def test_metrics_on_still_import_and_export_prometheus() -> None:
    code = (
        "from felixpy.runtime.health import metrics_for\n"
        "from felixpy.runtime.felix_metrics import exposition\n"
        "m = metrics_for(True)\n"
        "m.local_endpoints.set(7)\n"
        "assert b'felixpy_local_endpoints 7.0' in exposition(m.registry), exposition(m.registry)\n"
    )
    assert "prometheus_client" in _imported(code, ("prometheus_client",))


def test_kubernetes_mode_imports_no_etcd_client_grpc_or_protobuf() -> None:
    """The Kubernetes datastore is the agent's own HTTP client; the interpreter's after-start tuning
    (the gRPC wait slice) must not import gRPC just to tune it."""
    code = (
        "import felixpy.main, felixpy.agent, felixpy.datastore.kube_kv, felixpy.datastore.kubernetes\n"
        "from felixpy import interpreter\n"
        "interpreter.tune()\n"
        "assert interpreter.slow_grpc_waits(10.0) is False\n"
    )
    assert _imported(code, ("grpc", "pyetcd", "google", *NEVER)) == []


def test_the_start_imports_no_importlib_metadata() -> None:
    """importlib.metadata (~30 ms with email, zipfile, ...) and pydantic's scan of every installed
    distribution's entry points (~5-10 ms) were paid at each start for the version string and for
    pydantic plugins felixpy has none of (felixpy.interpreter.skip_pydantic_plugins). Models still
    validate; ``felixpy version`` still reads the package's metadata."""
    code = (
        f"import {_BUILD_MODULES}\n"
        "from felixpy.resources import WorkloadEndpoint\n"
        "spec = {'node': 'n', 'interfaceName': 'cali1', 'ipNetworks': ['10.0.0.1/32']}\n"
        "WorkloadEndpoint.model_validate({'metadata': {'name': 'a', 'namespace': 'b'}, 'spec': spec})\n"
    )
    assert "importlib.metadata" not in _imported(code, ("importlib",))
    out = subprocess.run(
        [sys.executable, "-m", "felixpy.main", "version"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.startswith("felixpy ") and "unknown" not in out.stdout, out.stdout


def test_gc_paused_turns_the_collector_off_for_the_block_and_back_on_after() -> None:
    import gc

    from felixpy.interpreter import gc_paused

    was = gc.isenabled()
    gc.enable()
    try:
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():  # nested: the inner block leaves it off
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()
        with gc_paused():
            pass
        assert not gc.isenabled(), "off before the block: left off"
    finally:
        (gc.enable if was else gc.disable)()


def test_the_agents_imports_and_build_run_without_a_collection() -> None:
    """Start-up allocates ~0.5 million objects and frees almost none: each collection during the
    imports (~80 of them, ~45 ms of CPU) and the build found nothing (felixpy.interpreter.gc_paused).
    The collector is on again when run_node goes on to the writer, which holds it over the snapshot."""
    code = (
        "import argparse, gc, felixpy.interpreter\n"  # what felixpy.main imports before its pause
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(phase) if phase == 'start' else None)\n"
        "import felixpy.main\n"
        "assert gc.isenabled()\n"
        "print('main', len(runs), gc.get_freeze_count() > 10_000)\n"
        "import felixpy.agent as agent\n"
        "seen = []\n"
        "class Built(Exception):\n"
        "    pass\n"
        "def build(settings, env):\n"
        "    seen.append(gc.isenabled())\n"
        "    raise Built\n"
        "agent.build = build\n"
        "try:\n"
        "    agent.run_node(None, {})\n"
        "except Built:\n"
        "    pass\n"
        "print('build', seen, gc.isenabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["main", "0", "True", "build", "[False]", "True"], out.stdout
