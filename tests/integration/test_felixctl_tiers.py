"""Tiers end to end on a real etcd: felixctl (the real command line) writes and refuses them, and the
agent's own wiring (SyncSources → Writer → CalcGraph → its policy stage's PolicyCompiler) follows them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from felixpy.calc.graph import CalcGraph
from felixpy.calc.policy_stage import PolicyCalc
from felixpy.calc.updates import Update
from felixpy.datastore.kv import KV
from felixpy.datastore.tiers import ensure_default_tier
from felixpy.resources import WorkloadEndpoint
from felixpy.runtime.sync import SyncSources
from felixpy.runtime.writer import NullDataplane, Writer
from policy.compiler import PolicyCompiler
from tests.fixtures import waiting
from tests.fixtures.kubeapi import KubeAPI
from tests.integration.test_felixctl import ROOT, Ctl, keys

pytestmark = pytest.mark.integration
V3 = "projectcalico.org/v3"
IFACE = "cali0123456789a"


@pytest.fixture
def ctl(etcd_kv: KV, etcd_endpoints: str) -> Ctl:
    return Ctl(etcd_endpoints)  # etcd_kv first: the keyspace starts empty


def tier(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "Tier", "metadata": {"name": name}, "spec": spec}


def gnp(name: str, tier_name: str | None, **spec: Any) -> dict[str, Any]:
    spec = {**({"tier": tier_name} if tier_name else {}), "selector": "app == 'web'", **spec}
    return {"apiVersion": V3, "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(name: str, ns: str, tier_name: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns}
    return {"apiVersion": V3, "kind": "NetworkPolicy", "metadata": meta, "spec": {"tier": tier_name}}


def write(tmp_path: Path, name: str, *docs: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_tiers_through_felixctl(ctl: Ctl, etcd_kv: KV, tmp_path: Path) -> None:
    tiers = write(tmp_path, "tiers.yaml", tier("security", order=100, defaultAction="Pass"), tier("platform"))
    assert ctl("apply", "-f", tiers).stdout == "Successfully applied 2 'Tier' resource(s)\n"
    assert keys(etcd_kv) == ["tiers/platform", "tiers/security"]
    stored = json.loads(etcd_kv.get(ROOT + "tiers/security").value)  # type: ignore[union-attr]
    assert stored["spec"] == {"order": 100, "defaultAction": "Pass"} and stored["kind"] == "Tier"

    assert ctl("get", "tiers").stdout.splitlines() == [
        "NAME       ORDER   DEFAULTACTION",
        "platform           Deny",
        "security   100     Pass",
    ]
    one = yaml.safe_load(ctl("get", "tier", "security", "-o", "yaml").stdout)
    assert (one["kind"], one["metadata"]["name"], one["spec"]) == ("Tier", "security", stored["spec"])
    listed = json.loads(ctl("get", "tiers", "-o", "json").stdout)
    assert listed["kind"] == "TierList" and [i["metadata"]["name"] for i in listed["items"]] == [
        "platform",
        "security",
    ]

    # policies: the tier must exist (default always does) and the name carry the tier's prefix
    ok = write(tmp_path, "ok.yaml", gnp("security.block", "security"), np("security.allow", "x", "security"),
               gnp("plain", None))  # fmt: skip
    assert ctl("create", "-f", ok).stdout == "Successfully created 3 resource(s)\n"
    missing = ctl("create", "-f", write(tmp_path, "m.yaml", gnp("audit.log", "audit")), rc=1).stderr
    assert "field 'spec.tier': tier 'audit' does not exist; create the Tier first" in missing
    assert "GlobalNetworkPolicy 'audit.log'" in missing
    bad_name = ctl("apply", "-f", write(tmp_path, "n.yaml", gnp("block2", "security")), rc=1).stderr
    assert "field 'metadata.name': a policy in tier 'security' must be named 'security.<name>'" in bad_name
    bad_order = ctl("apply", "-f", write(tmp_path, "o.yaml", tier("ops", order=-5)), rc=1).stderr
    assert "Tier 'ops': field 'spec.order'" in bad_order and "greater than or equal to 0" in bad_order
    late = write(tmp_path, "late.yaml", gnp("ops.a", "ops"), tier("ops", order=5))  # tier after its policy
    assert "tier 'ops' does not exist" in ctl("apply", "-f", late, rc=1).stderr
    assert "tiers/ops" not in keys(etcd_kv) and "globalnetworkpolicies/audit.log" not in keys(etcd_kv)
    early = write(tmp_path, "early.yaml", tier("ops", order=5), gnp("ops.a", "ops"))
    assert ctl("apply", "-f", early).stdout == "Successfully applied 2 resource(s)\n"

    # deleting: not while policies remain, never the default tier
    refused = ctl("delete", "tier", "security", rc=1).stderr
    in_use = "Tier 'security': cannot delete a tier that still has policies: 2 policies in tier 'security'"
    assert in_use in refused
    assert "(GlobalNetworkPolicy 'security.block', NetworkPolicy 'x/security.allow')" in refused
    assert "tiers/security" in keys(etcd_kv)
    policies = (gnp("security.block", "security"), np("security.allow", "x", "security"))
    tier_first = write(tmp_path, "d1.yaml", tier("security"), *policies)
    assert "still has policies" in ctl("delete", "-f", tier_first, rc=1).stderr
    tier_last = write(tmp_path, "d2.yaml", *policies, tier("security"))
    assert ctl("delete", "-f", tier_last).stdout == "Successfully deleted 3 resource(s)\n"
    default = ctl("delete", "tier", "default", rc=1).stderr
    assert "Tier 'default': the default tier cannot be deleted" in default
    assert ctl("delete", "tiers", "platform").stdout == "Successfully deleted 1 'Tier' resource(s)\n"
    assert keys(etcd_kv, ROOT + "tiers/") == ["tiers/ops"]


def test_agent_stores_the_default_tier_once(ctl: Ctl, etcd_backend: Any) -> None:
    assert ensure_default_tier(etcd_backend) is True
    assert ensure_default_tier(etcd_backend) is False  # a second node finds it
    assert ctl("get", "tiers").stdout.splitlines()[1].split() == ["default", "1000000", "Deny"]


def test_tiers_as_crds_in_kubernetes_mode(kube_api: KubeAPI, tmp_path: Path) -> None:
    """The same verbs with DATASTORE_TYPE=kubernetes (stand-in API server, tests/fixtures/kubeapi.py):
    a Tier is a tiers.crd.projectcalico.org object, and the tier checks read policies as CRDs."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "s", "cluster": {"server": kube_api.url}}],
              "users": [{"name": "u", "user": {}}],
              "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}]}  # fmt: skip
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    kctl = Ctl("")
    kctl.env.pop("ETCD_ENDPOINTS")
    kctl.env |= {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(tmp_path / "kubeconfig")}
    docs = write(tmp_path, "k.yaml", tier("security", order=100), np("security.a", "x", "security"))
    kctl("apply", "-f", docs)
    stored = kube_api.store.get("tiers.crd.projectcalico.org", None, "security")
    assert stored["apiVersion"] == "crd.projectcalico.org/v1" and stored["spec"] == {"order": 100}
    assert kctl("get", "tiers").stdout.splitlines()[1].split() == ["security", "100", "Deny"]
    refused = kctl("delete", "tier", "security", rc=1).stderr
    assert "still has policies: 1 policy in tier 'security' (NetworkPolicy 'x/security.a')" in refused
    missing = write(tmp_path, "g.yaml", gnp("ops.a", "ops"))
    assert "tier 'ops' does not exist" in kctl("apply", "-f", missing, rc=1).stderr


# --------------------------------------------------------------------------- the agent's path


class PolicyOnlyDataplane(NullDataplane):
    """The Writer's dataplane: calc's policy stage runs the real compiler (``compiler``); after
    each batch, the tier markers of the local endpoint's policy list chain (no kernel is written)."""

    def __init__(self, iface: str) -> None:
        self.iface = iface
        self.compiler = PolicyCompiler("node-a")
        self.lock = threading.Lock()
        self.tier_lines: list[str] | None = None

    def apply(self, updates: list[Update]) -> None:
        chains = {name: chain for (_, name), chain in self.compiler.chains().items()}
        tw = chains.get(f"cali-tw-{self.iface}")
        lines = None
        if tw is not None:
            body = chains[tw.rules[0].action.removeprefix("-g ")]
            lines = [r.comment.split(".")[0] for r in body.rules if "tier" in r.comment]
        with self.lock:
            self.tier_lines = lines

    def lines(self) -> list[str] | None:
        with self.lock:
            return self.tier_lines


@pytest.fixture
def agent(etcd_kv: KV, etcd_backend: Any) -> Iterator[tuple[PolicyOnlyDataplane, SyncSources]]:
    wep = WorkloadEndpoint.model_validate({
        "metadata": {"name": "node--a-k8s-web-eth0", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"node": "node-a", "pod": "web", "endpoint": "eth0", "orchestrator": "k8s",
                 "ipNetworks": ["10.80.0.5/32"], "interfaceName": IFACE, "profiles": ["kns.shop"]},
    })  # fmt: skip
    etcd_backend.apply(wep)
    dataplane = PolicyOnlyDataplane(IFACE)
    writer = Writer(CalcGraph("node-a", policy=PolicyCalc([dataplane.compiler])), dataplane)
    sources = SyncSources(etcd_kv, etcd_backend, writer)
    stop = threading.Event()
    threading.Thread(target=writer.run, args=(stop,), daemon=True).start()
    sources.start(stop)
    try:
        yield dataplane, sources
    finally:
        stop.set()
        sources.syncer.stop(timeout=5)


def until(check: Callable[[], bool], sources: SyncSources, what: str, timeout: float = 15.0) -> None:
    def ready() -> bool:  # a sync error fails at once, not at the deadline
        assert sources.error() is None, sources.error()
        return check()

    waiting.wait_for(ready, what, timeout, every=0.05)


def test_tier_changes_reach_the_compiler(
    ctl: Ctl, agent: tuple[PolicyOnlyDataplane, SyncSources], tmp_path: Path
) -> None:
    dp, sources = agent
    security = ["Start of tier security", "End of tier security"]
    default = ["Start of tier default", "End of tier default"]
    docs = (tier("security", order=10), gnp("security.web", "security"), gnp("web", None))
    ctl("apply", "-f", write(tmp_path, "p.yaml", *docs))
    until(lambda: dp.lines() == security + default, sources, "security before default")
    ctl("apply", "-f", write(tmp_path, "t.yaml", tier("security", order=2_000_000, defaultAction="Pass")))
    until(lambda: dp.lines() == [*default, security[0]], sources, "security last, without end-of-tier drop")
    # the tier deleted under its policy (felixctl refuses; etcdctl would not): the agent carries on
    sources.kv.delete(ROOT + "tiers/security")
    until(lambda: dp.lines() == default, sources, "the policy left out")
    assert dp.compiler.policies_without_tier() == {"gnp/security.web": "security"}
    ctl("apply", "-f", write(tmp_path, "back.yaml", tier("security", order=1)))
    until(lambda: dp.lines() == security + default, sources, "the policy back once its tier is")
