"""Capture, restore-app and the per-step RBAC against a real API server.

- capture reads every kind at one served version, a kind served only at a version its group does not
  prefer included, and stores each object once (by uid);
- restore-app refuses a backup holding one object twice before it creates anything;
- the rendered per-step accounts hold what their step uses and nothing else, as the real authorizer
  sees it (``kubectl auth can-i --as``).

Deselected by default; run with ``pytest -m on_cluster tests/cluster`` (docs/user/on-cluster-tests.md).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter

import pytest

from tests.cluster.argo_world import create_namespace, init_repository, kubectl, setup_app
from tests.fixtures.k8s_app import run_step

pytestmark = pytest.mark.on_cluster

CRD = "apiextensions.k8s.io/v1"
SCHEMA = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


def crd(group: str, kind: str, versions: list[str]) -> dict:
    plural = kind.lower() + "s"
    return {
        "apiVersion": CRD,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {"name": v, "served": True, "storage": i == 0, "schema": SCHEMA}
                for i, v in enumerate(versions)
            ],
        },
    }


def established(obj) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def test_capture_reads_every_kind_once_at_a_served_version_and_stores_each_object_once(real_cluster):
    from steps.manifests.export import collect

    world = real_cluster
    init_repository(world)
    group = f"sf-{world.run_id}.snapflow.test"
    ns = world.namespace("sf-capture")
    with world.client() as client:
        # GIVEN a group whose preferred version is v1, one kind served at v1 and v1beta1 (one object
        # served twice, one uid) and one served only at v1beta1
        crds = [crd(group, "Widget", ["v1", "v1beta1"]), crd(group, "Gadget", ["v1beta1"])]
        try:
            for c in crds:
                client.create(c)
                client.wait_for(CRD, "CustomResourceDefinition", c["metadata"]["name"], None, established, 60)
            create_namespace(client, ns)
            objects = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "settings"},
                    "data": {"a": "1"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
                },
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "Ingress",
                    "metadata": {"name": "web"},
                    "spec": {
                        "rules": [
                            {
                                "host": "web.example.com",
                                "http": {
                                    "paths": [
                                        {
                                            "path": "/",
                                            "pathType": "Prefix",
                                            "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                        }
                                    ]
                                },
                            }
                        ]
                    },
                },
                {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"n": 1}},
                {
                    "apiVersion": f"{group}/v1beta1",
                    "kind": "Gadget",
                    "metadata": {"name": "g1"},
                    "spec": {"n": 2},
                },
            ]
            for obj in objects:
                obj["metadata"]["namespace"] = ns
                client.create(obj)
            version = client.request("GET", "/version", what="version")

            # WHEN it is captured (stored, and collected as capture collects)
            res = run_step(
                "capture",
                "--repo",
                world.repo,
                "--namespace",
                ns,
                "--backup-id",
                f"cap-{world.run_id}",
                "--json",
            )
            warnings: list[str] = []
            collected, unreadable = collect(client, ns, warnings.append)
            types = client.namespaced_types()
        finally:
            for c in crds:
                with contextlib.suppress(Exception):
                    client.delete(CRD, "CustomResourceDefinition", c["metadata"]["name"])

    # THEN every kind is listed at one version, each object is there once, at the version expected
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    twice = [k for k, n in Counter((t.group, t.kind) for t in types).items() if n > 1]
    assert twice == [], f"kinds listed at two versions: {twice}"
    uids = Counter(o["metadata"].get("uid") for o in collected)
    assert [u for u, n in uids.items() if n > 1] == [], "an object was collected twice"
    found = Counter((o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in collected)
    for want in (
        ("v1", "ConfigMap", "settings"),
        ("v1", "Service", "web"),
        ("networking.k8s.io/v1", "Ingress", "web"),
        (f"{group}/v1", "Widget", "w1"),
        (f"{group}/v1beta1", "Gadget", "g1"),
    ):
        assert found[want] == 1, f"{want} collected {found[want]} times: {sorted(found)}"
    assert not [u for u in unreadable if group in u], unreadable
    if int(str(version.get("minor", "0")).rstrip("+") or 0) >= 22:
        # no built-in kind is served by two groups any more: nothing to alias
        assert summary["aliases"] == 0, summary
    assert summary["objects"] >= len(objects)


def _repository(world):
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository

    return Repository.open(open_store(world.repo, world.endpoint), os.environ["SNAPFLOW_PASSWORD"])


def test_restore_app_refuses_a_backup_holding_one_object_twice_before_creating_anything(real_cluster):
    from steps.manifests import bundle
    from steps.repository.stored_files import store_files

    world = real_cluster
    init_repository(world)
    ns = world.namespace("sf-twice")  # not created: the restore would create it first
    backup_id = f"twice-{world.run_id}"
    rule = {"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix"}]}}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": ns}, "data": {}},
        {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns},
         "spec": {"rules": [rule]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns},
         "spec": {"rules": [rule]}},
    ]  # fmt: skip
    repo = _repository(world)
    files = bundle.to_files(objects, {"backup_id": backup_id, "namespace": ns, "cluster": "old"})
    sid = store_files(repo, files, tags={"kind": "manifests", "backup": backup_id}, backup_id=backup_id)
    repo.save_record(
        "backups",
        {
            "version": 1,
            "backup_id": backup_id,
            "app": {"cluster": "old", "namespace": ns, "name": "web"},
            "volumes": [],
            "manifests": sid,
            "time": "2026-12-01T00:00:00Z",
        },
        key=backup_id,
    )

    res = run_step(
        "restore-app", "--repo", world.repo, "--backup", backup_id, "--mover", "none", "--timeout", "60"
    )

    assert res.rc == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: restore refused: the backup holds one object twice: "), line
    assert "created nothing" in line
    with world.client() as client:
        assert client.get_or_none("v1", "Namespace", ns) is None
        assert client.get_or_none("v1", "ConfigMap", "web-config", ns) is None


def can_i(namespace: str, account: str, *what: str) -> bool:
    res = kubectl(
        "auth", "can-i", *what, "-n", namespace, f"--as=system:serviceaccount:{namespace}:{account}"
    )
    answer = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(what)}: {res.stdout} {res.stderr}"
    return answer == "yes"


def test_each_step_account_holds_only_what_its_step_uses(real_cluster, tmp_path):
    world = real_cluster
    with world.client() as client:
        app = setup_app(
            world,
            client,
            tmp_path,
            "sf-rbac",
            ["files-a"],
            quiesce=[
                {
                    "hook": "custom",
                    "pod": "app-0",
                    "container": "app",
                    "params": {"freeze": ["sync"], "thaw": ["true"]},
                }
            ],
            data=False,
        )
        try:
            app.apply()
            ns = app.namespace

            # the pods that read the app's data and hold the repository's credentials: no exec, no Secret
            for step in ("copy", "verify"):
                for what in (
                    ("create", "pods", "--subresource=exec"),
                    ("list", "secrets"),
                    ("get", "secrets"),
                    ("create", "pods"),
                ):
                    assert not can_i(ns, app.account(step), *what), f"{step} may {' '.join(what)}"
            # the steps that need them have them
            assert can_i(ns, app.account("consistent-point"), "create", "pods", "--subresource=exec")
            assert can_i(ns, app.account("finalize"), "create", "pods", "--subresource=exec")  # thaws again
            assert can_i(ns, app.account("capture"), "list", "secrets")  # capture.secrets is on
            assert not can_i(ns, app.account("consistent-point"), "list", "secrets")
            # and the control: an account this policy did not render has nothing
            assert not can_i(ns, "default", "create", "pods", "--subresource=exec")
        finally:
            app.cleanup()
