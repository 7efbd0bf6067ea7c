"""The node agent's rarer datastore paths, under exactly the chart's RBAC (Kubernetes datastore).

tests/kernel/test_kube_fresh_install.py shows a fresh install comes up under the rendered RBAC and that
every grant of the felixpy-node ServiceAccount is used, except those listed in its NOT_EXERCISED (paths
one node with one pod never takes). Here each of those paths is taken by the agent's own code, connected
as the agent connects (``DatastoreConfig.from_env`` with a kubeconfig carrying the ServiceAccount's
token) to the RBAC-enforcing stand-in (tests/fixtures/kubeapi.py) that enforces the rendered
ClusterRole/Role and bindings: no request is refused, and each of those grants is seen in the audit,
so none of them is a grant the agent does not need.

- a dual-stack pod: two addresses for one handle (``update ipamhandles``);
- an affinity left without its block (written by an older, non-atomic writer, or a crash between its
  writes): the next claim reads it and completes it (``get``/``update blockaffinities``);
- a pod on another node borrows from a block whose node is then deleted (the controllers release the
  address of its pod and its affinity): the borrower's CNI DEL empties the un-owned block and deletes
  it (``delete ipamblocks``);
- a CalicoNodeStatus naming the node gets its status written (``update caliconodestatuses``).

(KubeKV.revision(), needed only after a transaction with no operation, which no agent path makes,
lists ipamblocks, a grant the agent uses anyway: the chart grants no ``list ipamconfigs`` for it.)
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.datastore.config import DatastoreConfig, connect
from felixpy.datastore.kube_kv import KubeKV
from felixpy.datastore.kubernetes import KubernetesBackend
from felixpy.resources.stored import CalicoNodeStatus
from felixpy.runtime.node_status_reporter import NodeStatusReporter
from ipam.ipam import IPAM
from ipam.store import affinity_key
from tests.fixtures import chart, kubeapi
from tests.fixtures.kuberbac import RBAC
from tests.integration.ipam_helpers import make_pool
from tests.integration.test_calico_node_status import EngineBGP, cns, wait_for
from tests.integration.test_controllers_rbac import ADMIN, client
from tests.kernel.test_kube_fresh_install import NOT_EXERCISED, _grants

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SA = f"system:serviceaccount:{chart.NAMESPACE}:felixpy-node"
TOKEN, ADMIN_TOKEN = "node-sa-token", "admin-token"
V4, V6 = "10.88.0.0/30", "fd00:88::/126"  # one block each: the node's claim, then only borrowing
BLOCK_V4 = ipaddress.ip_network(V4)


def _agent_ipam(url: str, tmp: Path) -> tuple[IPAM, KubernetesBackend]:
    """IPAM and backend as felixpy.agent._startup builds them, from the node container's datastore env."""
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": url}}],
        "users": [{"name": "felixpy-node", "user": {"token": TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "felixpy-node"}}],
    }))
    kv, backend = connect(DatastoreConfig.from_env({"DATASTORE_TYPE": "kubernetes",
                                                    "KUBECONFIG": str(kubeconfig)}))
    assert isinstance(backend, KubernetesBackend)
    return IPAM(kv, backend), backend


@pytest.fixture
def rendered() -> list[dict[str, Any]]:
    return chart.render({"datastore": {"type": "kubernetes"}})


def test_the_agents_rare_paths_use_exactly_the_grants_listed_as_not_exercised(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    roles = [d for d in rendered if "Role" in d["kind"]]
    api = kubeapi.KubeAPI(rbac=RBAC.from_manifests(roles + ADMIN, {TOKEN: SA, ADMIN_TOKEN: "admin"}))
    reporter: NodeStatusReporter | None = None
    try:
        admin = client(api.url, ADMIN_TOKEN)  # the operator (helm, kubectl) and the controllers
        make_pool(admin, "v4", V4, blockSize=30)
        make_pool(admin, "v6", V6, blockSize=126)
        for n in ("n1", "n2"):
            api.store.create("nodes", None, {"metadata": {"name": n}})
        # An affinity of n1 without its block: a claim cut short before the block was written.
        pending = json.dumps({"state": "pending", "deleted": False}).encode()
        KubeKV(admin).create(affinity_key("n1", BLOCK_V4), pending)

        n1, agent_backend = _agent_ipam(api.url, tmp_path)
        pod = n1.auto_assign("k8s-pod-network.dual", node="n1", num_v4=1, num_v6=1, new_handle=True)
        assert len(pod.v4) == 1 and len(pod.v6) == 1
        assert sorted(n1.affine_blocks("n1")) == sorted([V4, V6])
        assert n1.store.get_affinity("n1", BLOCK_V4).state == "confirmed"  # type: ignore[union-attr]

        n2, _ = _agent_ipam(api.url, tmp_path)
        borrowed = n2.auto_assign("k8s-pod-network.borrow", node="n2", num_v4=1, new_handle=True).v4[0]
        assert ipaddress.ip_address(borrowed) in BLOCK_V4 and n2.affine_blocks("n2") == []

        # n1 is deleted; the controllers free its pod's addresses and its affinities (admin grants here:
        # the controllers' own RBAC is tests/integration/test_controllers_rbac.py's).
        controllers = IPAM(KubeKV(admin), admin, cache_seconds=0)
        api.store.delete("nodes", None, "n1", None)
        controllers.release_by_handle("k8s-pod-network.dual")
        controllers.release_affinity(V4, "n1", must_be_empty=False)
        assert controllers.store.get_block(BLOCK_V4) is not None  # kept: n2's pod still holds an address
        # n2's CNI DEL: the block is empty and no node's: the agent deletes it.
        assert n2.release_by_handle("k8s-pod-network.borrow") == [borrowed]
        assert controllers.store.get_block(BLOCK_V4) is None
        # A transaction with nothing in it still answers the current revision, within the same grants.
        assert n2.kv.txn([]) >= 1

        # CalicoNodeStatus of n2, filled in by the agent's reporter.
        admin.create(cns("n2-status", "n2", ["BGP"], 0))
        reporter = NodeStatusReporter(agent_backend, "n2", EngineBGP(), tick=0.2).start()
        wait_for(lambda: admin.get(CalicoNodeStatus, "n2-status").status is not None,  # type: ignore[attr-defined]
                 "the reporter to write n2's CalicoNodeStatus")
        assert reporter.failure() is None
    finally:
        if reporter is not None:
            reporter.stop()
        api.stop()
    mine = [a for a in api.store.audit if a["user"] == SA]
    refused = [a for a in mine if a["code"] in (401, 403)]
    assert not refused, f"refused under the chart's RBAC: {refused[:5]}"
    used = {(a["verb"], a["group"], a["resource"]) for a in mine}
    granted = _grants(rendered)
    assert used <= granted
    rare = set(NOT_EXERCISED)
    assert rare <= used, f"listed as used on rarer paths, not used by them: {sorted(rare - used)}"
