"""Shared pytest wiring: fixtures live in tests/fixtures/ as plugins, one module per real part."""

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.etcd",
        "tests.fixtures.etcd_cluster",
        "tests.fixtures.netns",
        "tests.fixtures.kubeapi",
    )
    if importlib.util.find_spec(name) is not None
]
