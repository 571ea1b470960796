"""restore-app treats a backup as untrusted input: a repository written by a compromised writer cannot make
a restore create objects outside the namespaces the user restores into.

The crafted backup is what such a writer can commit without running any step: a manifests snapshot and a
backup record naming it. It holds the app's own objects (a ServiceAccount, a Role and the RoleBindings
granting it and ClusterRole ``view`` to that ServiceAccount, a ConfigMap) and five planted ones: a
ClusterRoleBinding of cluster-admin (that even names the app's namespace, as if it were namespaced), a
RoleBinding granting a ServiceAccount of ``kube-system`` a role, one granting a Group ClusterRole
``edit``, a ConfigMap whose ``metadata.namespace`` is ``kube-system``, and a Namespace object
``planted``. Restored with the real ``kubernetes`` client against the fake API server; the repository on
SeaweedFS.
"""

from __future__ import annotations

import json
import os

import yaml

from steps.manifests import bundle
from tests.fixtures.k8s_app import run_step

SOURCE_NS = "shop"
TARGET_NS = "shop-restored"
RBAC = "rbac.authorization.k8s.io/v1"


def _binding(name: str, subjects: list[dict], role_kind: str, role: str, namespace: str = SOURCE_NS):
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "subjects": subjects,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
    }


APP_SA = {"kind": "ServiceAccount", "name": "app", "namespace": SOURCE_NS}
APP_OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SOURCE_NS}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": SOURCE_NS}},
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app-config", "namespace": SOURCE_NS},
        "data": {"k": "v"},
    },
    {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"name": "app-reader", "namespace": SOURCE_NS},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    },
    _binding("app-reader", [APP_SA], "Role", "app-reader"),
    # a subject without a namespace is the binding's own
    _binding("app-view", [{"kind": "ServiceAccount", "name": "app"}], "ClusterRole", "view"),
]
PLANTED = [
    {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "planted-admin", "namespace": SOURCE_NS},
        "subjects": [APP_SA],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    },
    _binding(
        "foreign-sa",
        [{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}],
        "Role",
        "app-reader",
    ),
    _binding(
        "group-edit",
        [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}],
        "ClusterRole",
        "edit",
    ),
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "planted", "namespace": "kube-system"},
        "data": {"k": "v"},
    },
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "planted"}},
]
# what restore-app reports for each planted object: (object, namespace)
REFUSED = [
    ("ClusterRoleBinding.rbac.authorization.k8s.io/planted-admin", None),
    ("RoleBinding/foreign-sa", TARGET_NS),
    ("RoleBinding/group-edit", TARGET_NS),
    ("ConfigMap/planted", "kube-system"),
    ("Namespace/planted", None),
]


def commit_crafted_backup(k8s, backup_id: str, objects: list[dict], captured_in: str = SOURCE_NS) -> None:
    """What a compromised writer can commit: a manifests snapshot and a backup record naming it."""
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    repo = Repository.open(
        open_store(k8s.repo, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )
    files = bundle.to_files(objects, {"backup_id": backup_id, "namespace": captured_in, "cluster": "x"})
    sid = store_files(repo, files, tags={"kind": "manifests", "backup": backup_id}, backup_id=backup_id)
    record = {
        "version": 1,
        "backup_id": backup_id,
        "app": {"cluster": "x", "namespace": SOURCE_NS, "name": "app"},
        "volumes": [],
        "manifests": sid,
        "time": "2026-12-01T00:00:00Z",
    }
    repo.save_record("backups", record, key=backup_id)


def restore(k8s, backup_id: str, *extra: str):
    return run_step(
        "restore-app", "--repo", k8s.repo, "--backup", backup_id, "--target-namespace", TARGET_NS,
        "--mover", "none", "--timeout", "20", "--json", *extra,
    )  # fmt: skip


def refused_of(res) -> list[tuple[str, str | None]]:
    return sorted((r["object"], r["namespace"]) for r in json.loads(res.last_line)["refused"])


def planted_objects(server) -> dict[str, object]:
    return {
        "ClusterRoleBinding": server.get("clusterrolebindings.rbac.authorization.k8s.io", "planted-admin"),
        "RoleBinding/foreign-sa": server.get("rolebindings.rbac.authorization.k8s.io", "foreign-sa", TARGET_NS),
        "RoleBinding/group-edit": server.get("rolebindings.rbac.authorization.k8s.io", "group-edit", TARGET_NS),
        "ConfigMap in kube-system": server.get("configmaps", "planted", "kube-system"),
        "Namespace": server.get("namespaces", "planted"),
    }  # fmt: skip


def test_crafted_backup_is_refused_whole_and_creates_nothing(k8s):
    # GIVEN a committed backup whose manifests hold the app and five planted objects
    commit_crafted_backup(k8s, "crafted-1", APP_OBJECTS + PLANTED)

    # WHEN it is restored with the defaults
    res = restore(k8s, "crafted-1")

    # THEN the restore fails before creating anything, naming each planted object on its own line with why
    assert res.rc == 3, res.stderr
    assert refused_of(res) == sorted(REFUSED)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("refused: ")]
    assert len(lines) == len(REFUSED)
    assert any("planted-admin: cluster-scoped" in ln and "--cluster-resources" in ln for ln in lines)
    assert any("foreign-sa" in ln and "subject ServiceAccount kube-system/default" in ln for ln in lines)
    assert any("group-edit" in ln and "subject Group system:authenticated" in ln for ln in lines)
    assert any(
        "ConfigMap/planted in namespace kube-system: outside the restore's namespaces" in ln for ln in lines
    )
    assert any("Namespace/planted: a namespace the restore does not target" in ln for ln in lines)
    assert res.stderr.splitlines()[-1].startswith(
        "error: restore refused: 5 objects of the backup are outside"
    )
    assert all(v is None for v in planted_objects(k8s.server).values())
    assert k8s.server.get("namespaces", TARGET_NS) is None


def test_skip_refused_restores_the_app_and_its_own_rbac_only(k8s):
    # GIVEN the crafted backup
    commit_crafted_backup(k8s, "crafted-2", APP_OBJECTS + PLANTED)

    # WHEN it is restored with --skip-refused
    res = restore(k8s, "crafted-2", "--skip-refused")

    # THEN the app's objects, its Role and both bindings of its own ServiceAccount come back, moved into the
    # target namespace; the planted ones are listed and absent
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert refused_of(res) == sorted(REFUSED)
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("skipped: ")]) == len(REFUSED)
    s = k8s.server
    assert s.get("configmaps", "app-config", TARGET_NS)["data"] == {"k": "v"}
    assert s.get("roles.rbac.authorization.k8s.io", "app-reader", TARGET_NS) is not None
    reader = s.get("rolebindings.rbac.authorization.k8s.io", "app-reader", TARGET_NS)
    assert reader["subjects"] == [{"kind": "ServiceAccount", "name": "app", "namespace": TARGET_NS}]
    view = s.get("rolebindings.rbac.authorization.k8s.io", "app-view", TARGET_NS)
    assert view["roleRef"]["name"] == "view"
    assert report["namespaces"] == [TARGET_NS]
    assert all(v is None for v in planted_objects(s).values())


def test_cluster_resources_creates_the_cluster_scoped_objects_but_never_another_namespace(k8s):
    # GIVEN the crafted backup
    commit_crafted_backup(k8s, "crafted-3", APP_OBJECTS + PLANTED)

    # WHEN the user asks for cluster-scoped objects too (and skips what is still refused)
    res = restore(k8s, "crafted-3", "--cluster-resources", "--skip-refused")

    # THEN the cluster-scoped objects and the wider bindings are created; the ConfigMap of another
    # namespace still is not (no flag reaches a namespace the user did not name)
    assert res.rc == 0, res.stderr
    assert refused_of(res) == [("ConfigMap/planted", "kube-system")]
    created = planted_objects(k8s.server)
    assert created.pop("ConfigMap in kube-system") is None
    assert all(v is not None for v in created.values()), created
    crb = created["ClusterRoleBinding"]
    assert "namespace" not in crb["metadata"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "app", "namespace": TARGET_NS}]


def test_dry_run_lists_refused_objects_and_prints_only_the_allowed_ones(k8s):
    # GIVEN the crafted backup
    commit_crafted_backup(k8s, "crafted-4", APP_OBJECTS + PLANTED)

    # WHEN a dry run previews the restore
    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "crafted-4",
        "--target-namespace",
        TARGET_NS,
        "--dry-run",
    )

    # THEN it prints only the objects the restore may create, lists the others, and fails as the restore would
    assert res.rc == 3, res.stderr
    shown = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in yaml.safe_load_all(res.stdout))
    assert shown == [
        "ConfigMap/app-config", "Namespace/shop-restored", "Role/app-reader", "RoleBinding/app-reader",
        "RoleBinding/app-view", "ServiceAccount/app",
    ]  # fmt: skip
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("refused: ")]) == len(REFUSED)
    assert k8s.server.get("namespaces", TARGET_NS) is None


def test_backup_of_only_the_app_restores_by_default(k8s):
    # GIVEN a backup holding nothing but the app and its own RBAC
    commit_crafted_backup(k8s, "clean-1", APP_OBJECTS)

    # WHEN it is restored with the defaults
    res = restore(k8s, "clean-1")

    # THEN everything is created and nothing refused
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert report["refused"] == []
    assert len(report["created"]) == len(APP_OBJECTS)


def test_backup_whose_manifests_name_another_namespace_than_its_record_is_not_restored(k8s):
    # GIVEN a backup recorded for namespace shop whose manifests claim to come from kube-system (a
    # restore in place would go there)
    planted = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "kube-system"}},
    ]
    commit_crafted_backup(k8s, "crafted-5", planted, captured_in="kube-system")

    # WHEN the latest backup of shop is restored in place
    res = run_step(
        "restore-app", "--repo", k8s.repo, "--backup", "latest", "--source-namespace", SOURCE_NS,
        "--mover", "none", "--timeout", "20",
    )  # fmt: skip

    # THEN it is refused in one line naming both namespaces, and nothing is created
    assert res.rc == 3, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: backup crafted-5: its record names namespace shop, its manifests (snapshot "
        f"{res.stderr.split('(snapshot ')[1][:8]}) were captured in namespace kube-system; a backup that "
        "disagrees with itself is not restored"
    )
    assert k8s.server.get("configmaps", "c", "kube-system") is None


def test_a_new_namespace_is_not_created_with_privileged_pod_security_from_a_backup(k8s):
    # GIVEN a backup whose Namespace object enforces Pod Security level privileged
    privileged = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": SOURCE_NS, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
    }
    commit_crafted_backup(k8s, "crafted-6", [privileged, *APP_OBJECTS[1:]])

    # WHEN it is restored into a namespace that does not exist, by default and then skipping refusals
    refused = restore(k8s, "crafted-6")
    skipped = restore(k8s, "crafted-6", "--skip-refused")

    # THEN the first is refused naming the level; the second creates the namespace without that label
    # (the cluster's default level applies) and the app in it
    assert refused.rc == 3, refused.stderr
    assert refused_of(refused) == [("Namespace/shop-restored", None)]
    assert "enforce=privileged" in json.loads(refused.last_line)["refused"][0]["reason"]
    assert skipped.rc == 0, skipped.stderr
    ns = k8s.server.get("namespaces", TARGET_NS)
    assert "pod-security.kubernetes.io/enforce" not in (ns["metadata"].get("labels") or {})
    assert k8s.server.get("configmaps", "app-config", TARGET_NS) is not None


def test_restoring_into_an_existing_privileged_namespace_is_not_refused(k8s):
    # GIVEN the same backup, and the target namespace already created by its owner
    privileged = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": SOURCE_NS, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
    }
    commit_crafted_backup(k8s, "crafted-7", [privileged, *APP_OBJECTS[1:]])
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TARGET_NS}})

    # WHEN it is restored there  THEN nothing is refused: the restore never changes an existing namespace
    res = restore(k8s, "crafted-7")
    assert res.rc == 0, res.stderr
    assert refused_of(res) == []
    assert "pod-security.kubernetes.io/enforce" not in (
        k8s.server.get("namespaces", TARGET_NS)["metadata"].get("labels") or {}
    )
