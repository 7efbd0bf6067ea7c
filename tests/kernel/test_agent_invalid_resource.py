"""A stored document that does not validate (written past felixctl: etcdctl, an old or buggy client)
does not take the agent down. As Felix's validation filter does, the agent logs it with the field and
the reason (``datastore.invalid_resource``) and treats it as deleted: a policy that closed a pod and is
then overwritten by an invalid version stops applying; the valid version, written again, applies again.
(Before, the writer raised pydantic's error, the agent exited with ``writer.crashed``, and restarted
into the same document at every sync.)"""

from __future__ import annotations

import json

import pytest

from tests.kernel.test_agent_cni import NodeEnv, _ip, _wait, env  # noqa: F401 (module-scoped agent fixture)
from tests.kernel.test_agent_unenforced_policy import pings

pytestmark = pytest.mark.kernel
KEY = "/calico/resources/v3/projectcalico.org/networkpolicies/default/iweb-ingress"


def policy(order: object) -> str:
    return json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "iweb-ingress", "namespace": "default"},
            "spec": {"order": order, "selector": "role == 'iweb'", "types": ["Ingress"], "ingress": []},
        }
    )


def test_an_invalid_stored_policy_is_logged_and_treated_as_deleted_and_the_agent_stays_up(
    env: NodeEnv,  # noqa: F811
) -> None:
    client, web = env.pod("pod-icl"), env.pod("pod-iweb")
    assert env.cni("ADD", client, "icl")[0] == 0
    rc, res = env.cni("ADD", web, "iweb", extra_args=";K8S_POD_LABELS=role=iweb")
    assert rc == 0, res
    ip = _ip(res)
    assert pings(client, ip), "open before any policy"
    try:
        env.etcdctl("put", KEY, policy(10))
        _wait(lambda: not pings(client, ip), 15, "the ingress policy with no rule to close the pod")
        env.etcdctl("put", KEY, policy("first"))  # order must be a number
        _wait(lambda: pings(client, ip), 15, "the invalid version to count as deleted and open the pod")
        for _ in range(3):  # the agent stays up and ready
            assert env.ready()
        log = env.agent_log()
        assert "datastore.invalid_resource" in log and "spec.order" in log
        assert "writer.crashed" not in log
        env.etcdctl("put", KEY, policy(10))
        _wait(lambda: not pings(client, ip), 15, "the valid version written again to close the pod again")
        assert env.ready()
    finally:
        env.etcdctl("del", KEY)
