"""The copy path with a dedicated mover namespace, on the fake API server through the real client.

The app's namespace keeps its snapshots; prepare-clone binds each one in the mover namespace (a
pre-provisioned VolumeSnapshotContent with the same snapshotHandle and deletionPolicy Retain, and a
VolumeSnapshot there naming it) and provisions the clone there, so the copy pod that mounts it runs in
the mover namespace. The clean-up deletes those three and never the app's snapshot data.
"""

from __future__ import annotations

import json

import pytest

from steps.drivers.snapshot_csi import (
    SNAPSHOT_API,
    mover_content_name,
    mover_snapshot_name,
    release_mover_objects,
)
from tests.fixtures.k8s_app import APP_NS, VOLUMES, run_step, tree_state

MOVERS = "shop-movers"


def _namespace(server, name: str, level: str) -> None:
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": level}},
        }
    )


def _snapshot_of(server, namespace: str, pvc: str, name: str) -> dict:
    server.create(
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"snapflow.io/backup-id": "backup-db-1", "snapflow.io/volume": "data"},
            },
            "spec": {"source": {"persistentVolumeClaimName": pvc}},
        }
    )
    return server.wait_for("vs", name, namespace, lambda s: (s.get("status") or {}).get("readyToUse"))


def _prepare(*extra: str) -> tuple[int, str, str]:
    res = run_step(
        "prepare-clone",
        "--namespace",
        APP_NS,
        "--pvc",
        "data",
        "--volume",
        "data",
        "--backup-id",
        "backup-db-1",
        "--app",
        "db",
        "--timeout",
        "20",
        *extra,
    )
    return res.rc, res.last_line, res.stderr


@pytest.fixture
def app_snapshot(kube_server, kubeconfig, monkeypatch):
    """A ready snapshot ``shop/snap-data`` of claim ``shop/data`` (one file), and the mover namespace."""
    monkeypatch.setenv("SNAPFLOW_KUBE_READ_TIMEOUT", "10")
    _namespace(kube_server, APP_NS, "restricted")
    _namespace(kube_server, MOVERS, "baseline")
    kube_server.pvc(APP_NS, "data")
    (kube_server.volume_path(APP_NS, "data") / "table").write_text("at the cut")
    snap = _snapshot_of(kube_server, APP_NS, "data", "snap-data")
    (kube_server.volume_path(APP_NS, "data") / "table").write_text("after the cut")
    return snap


def test_clone_is_made_in_the_mover_namespace_from_the_apps_snapshot_content(kube_server, app_snapshot):
    # WHEN prepare-clone runs with a mover namespace
    rc, claim, err = _prepare("--mover-namespace", MOVERS)
    assert rc == 0, err
    # THEN the clone is in the mover namespace and holds the data of the cut; nothing new in the app's
    clone = kube_server.wait_for("pvc", claim, MOVERS, lambda p: p["status"]["phase"] == "Bound")
    assert (kube_server.volume_path(MOVERS, claim) / "table").read_text() == "at the cut"
    assert [p["metadata"]["name"] for p in kube_server.list("pvc", APP_NS)] == ["data"]
    # the clone comes from a VolumeSnapshot in the mover namespace, bound to a Retain content with the
    # app snapshot's handle, driver and volume mode
    mover_vs = kube_server.get("vs", clone["spec"]["dataSource"]["name"], MOVERS)
    content = kube_server.get("vsc", mover_vs["status"]["boundVolumeSnapshotContentName"])
    app_content = kube_server.get("vsc", app_snapshot["status"]["boundVolumeSnapshotContentName"])
    assert content["metadata"]["name"] == mover_content_name(MOVERS, "backup-db-1", "data")
    assert content["spec"]["deletionPolicy"] == "Retain"
    assert content["spec"]["source"] == {"snapshotHandle": app_content["status"]["snapshotHandle"]}
    assert content["spec"]["driver"] == app_content["spec"]["driver"]
    assert content["spec"]["sourceVolumeMode"] == app_content["spec"]["sourceVolumeMode"]
    assert content["spec"]["volumeSnapshotRef"]["namespace"] == MOVERS
    assert content["spec"]["volumeSnapshotRef"]["uid"] == mover_vs["metadata"]["uid"]
    for obj in (clone, mover_vs, content):
        assert obj["metadata"]["labels"]["snapflow.io/backup-id"] == "backup-db-1"
    # AND a second attempt reuses all three
    rc, again, err = _prepare("--mover-namespace", MOVERS)
    assert rc == 0 and again == claim, err
    assert "already exists; reused" in err


def test_clean_up_deletes_the_mover_side_and_keeps_the_apps_snapshot_data(
    kube_server, app_snapshot, kubeconfig
):
    # GIVEN a clone made in the mover namespace
    rc, claim, err = _prepare("--mover-namespace", MOVERS)
    assert rc == 0, err
    kube_server.wait_for("pvc", claim, MOVERS, lambda p: p["status"]["phase"] == "Bound")
    data = kube_server.snapshot_path(APP_NS, "snap-data")
    content = mover_content_name(MOVERS, "backup-db-1", "data")
    # and someone switched the mover content to deletionPolicy Delete
    kube_server.patch("vsc", content, {"spec": {"deletionPolicy": "Delete"}})
    # WHEN the mover side is cleaned up
    from steps.drivers.kube import KubeClient, KubeSettings

    with KubeClient(KubeSettings.from_env()) as client:
        done = release_mover_objects(client, MOVERS, "backup-db-1", ["data"])
    # THEN the clone, the mover snapshot and its content are gone; the content was set back to Retain first
    assert not done["errors"], done
    assert sorted(d.split("/")[0] for d in done["deleted"]) == [
        "PersistentVolumeClaim",
        "VolumeSnapshot",
        "VolumeSnapshotContent",
    ]
    kube_server.wait_for("pvc", claim, MOVERS, gone=True)
    assert kube_server.list("vs", MOVERS) == [] and kube_server.get("vsc", content) is None
    # and the app's snapshot, its content and its data are untouched, still usable for a clone
    import time

    time.sleep(0.2)  # a deletion of the snapshot data would run in the background
    assert (data / "table").read_text() == "at the cut"
    assert kube_server.get("vs", "snap-data", APP_NS)["status"]["readyToUse"] is True
    # AND running it again is harmless
    with KubeClient(KubeSettings.from_env()) as client:
        assert release_mover_objects(client, MOVERS, "backup-db-1", ["data"]) == {"deleted": [], "errors": []}


def test_clean_up_leaves_a_content_that_points_elsewhere_alone(kube_server, app_snapshot, kubeconfig):
    # GIVEN a content with this backup's mover name that does not point into the mover namespace
    handle = kube_server.get("vsc", app_snapshot["status"]["boundVolumeSnapshotContentName"])["status"][
        "snapshotHandle"
    ]
    name = mover_content_name(MOVERS, "backup-db-1", "data")
    kube_server.create(
        {
            "apiVersion": SNAPSHOT_API,
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": name, "labels": {"snapflow.io/backup-id": "backup-db-1"}},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": "hostpath.csi.k8s.io",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"namespace": "elsewhere", "name": "x"},
            },
        }
    )
    from steps.drivers.kube import KubeClient, KubeSettings

    with KubeClient(KubeSettings.from_env()) as client:
        done = release_mover_objects(client, MOVERS, "backup-db-1", ["data"])
    # THEN it is reported and kept (deleting it would delete the app's snapshot)
    assert done["deleted"] == [] and "left alone" in done["errors"][0]
    assert kube_server.get("vsc", name) is not None
    assert (kube_server.snapshot_path(APP_NS, "snap-data") / "table").exists()
    # AND prepare-clone refuses to reuse it
    rc, _, err = _prepare("--mover-namespace", MOVERS)
    assert rc != 0 and "is not this backup's" in err and "Traceback" not in err


def _finalize_plan(tmp_path, delete_after_copy: bool):
    """The plan of the one-volume app of :func:`app_snapshot` (no hook, no repository: nothing to commit)."""
    plan = {
        "version": 1,
        "app": {"cluster": "test", "namespace": APP_NS, "name": "db", "policy": "db"},
        "snapshot": {"driver": "csi", "delete_after_copy": delete_after_copy},
        "targets": [],
        "volumes": [{"name": "data", "pvc": "data"}],
    }
    path = tmp_path / f"plan-{delete_after_copy}.json"
    path.write_text(json.dumps(plan))
    return path


def _finalize(plan, *extra: str) -> tuple[int, dict, str]:
    res = run_step(
        "finalize", "--plan", plan, "--backup-id", "backup-db-1", "--workflow-status", "Failed", "--json",
        *extra,
    )  # fmt: skip
    summary = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
    return res.rc, summary, res.stderr


@pytest.mark.parametrize("delete_after_copy", [False, True])
def test_finalize_cleans_the_mover_side_first_and_keeps_the_apps_snapshot_data(
    kube_server, app_snapshot, tmp_path, delete_after_copy
):
    # GIVEN a clone made in the mover namespace, whose content someone switched to deletionPolicy Delete
    rc, claim, err = _prepare("--mover-namespace", MOVERS)
    assert rc == 0, err
    kube_server.wait_for("pvc", claim, MOVERS, lambda p: p["status"]["phase"] == "Bound")
    content = mover_content_name(MOVERS, "backup-db-1", "data")
    kube_server.patch("vsc", content, {"spec": {"deletionPolicy": "Delete"}})
    data = kube_server.snapshot_path(APP_NS, "snap-data")
    plan = _finalize_plan(tmp_path, delete_after_copy)
    # WHEN finalize runs with the mover namespace
    rc, summary, err = _finalize(plan, "--mover-namespace", MOVERS)
    # THEN the clone, the mover snapshot and its content are gone, before anything of the app's namespace
    assert rc == 0 and not summary["cleanup"]["errors"], (summary, err)
    deleted = summary["cleanup"]["deleted"]
    assert deleted[:3] == [
        f"PersistentVolumeClaim/{claim}",
        f"VolumeSnapshot/{mover_snapshot_name('backup-db-1', 'data')}",
        f"VolumeSnapshotContent/{content}",
    ]
    assert f"VolumeSnapshotContent/{content}: deletionPolicy set back to Retain" in err
    kube_server.wait_for("pvc", claim, MOVERS, gone=True)
    assert kube_server.list("vs", MOVERS) == [] and kube_server.get("vsc", content) is None
    if delete_after_copy:
        # the app's snapshot follows spec.snapshot.deleteAfterCopy, after the mover side
        assert deleted[3:] == ["VolumeSnapshot/snap-data"]
        kube_server.wait_for("vs", "snap-data", APP_NS, gone=True)
    else:
        # the app's snapshot and its data are untouched (a deletion of the data would run in the background)
        import time

        time.sleep(0.2)
        assert deleted[3:] == []
        assert (data / "table").read_text() == "at the cut"
        assert kube_server.get("vs", "snap-data", APP_NS)["status"]["readyToUse"] is True
    # AND a retried finalize deletes nothing more and reports nothing
    rc, summary, err = _finalize(plan, "--mover-namespace", MOVERS)
    assert rc == 0 and summary["cleanup"] == {"deleted": [], "errors": []}, (summary, err)
    if not delete_after_copy:
        assert (data / "table").read_text() == "at the cut"


def test_a_retried_finalize_deletes_what_an_interrupted_one_left(kube_server, app_snapshot, tmp_path):
    # GIVEN a first clean-up that stopped after the clone and the mover snapshot were deleted
    rc, claim, err = _prepare("--mover-namespace", MOVERS)
    assert rc == 0, err
    kube_server.wait_for("pvc", claim, MOVERS, lambda p: p["status"]["phase"] == "Bound")
    kube_server.delete("pvc", claim, MOVERS)
    kube_server.delete("vs", mover_snapshot_name("backup-db-1", "data"), MOVERS)
    kube_server.wait_for("vs", mover_snapshot_name("backup-db-1", "data"), MOVERS, gone=True)
    content = mover_content_name(MOVERS, "backup-db-1", "data")
    assert kube_server.get("vsc", content)["spec"]["deletionPolicy"] == "Retain"
    # WHEN finalize runs again
    rc, summary, err = _finalize(_finalize_plan(tmp_path, False), "--mover-namespace", MOVERS)
    # THEN the content left over is deleted, and the app's snapshot data is still there
    assert rc == 0 and summary["cleanup"] == {"deleted": [f"VolumeSnapshotContent/{content}"], "errors": []}
    assert kube_server.get("vsc", content) is None
    assert (kube_server.snapshot_path(APP_NS, "snap-data") / "table").read_text() == "at the cut"


def test_finalize_leaves_a_content_that_points_elsewhere_alone(kube_server, app_snapshot, tmp_path):
    # GIVEN a content of this backup's mover name, deletionPolicy Delete, bound into another namespace
    app_content = app_snapshot["status"]["boundVolumeSnapshotContentName"]
    handle = kube_server.get("vsc", app_content)["status"]["snapshotHandle"]
    name = mover_content_name(MOVERS, "backup-db-1", "data")
    kube_server.create(
        {
            "apiVersion": SNAPSHOT_API,
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": name, "labels": {"snapflow.io/backup-id": "backup-db-1"}},
            "spec": {
                "deletionPolicy": "Delete",
                "driver": "hostpath.csi.k8s.io",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"namespace": "elsewhere", "name": "x"},
            },
        }
    )
    # WHEN finalize runs with the mover namespace (the workflow failed: nothing to commit)
    rc, summary, err = _finalize(_finalize_plan(tmp_path, False), "--mover-namespace", MOVERS)
    # THEN finalize still exits 0, reports the content in one line, and keeps it and the app's snapshot data
    assert rc == 0, err
    (problem,) = summary["cleanup"]["errors"]
    assert f"VolumeSnapshotContent/{name} is not this backup's" in problem and "left alone" in problem
    assert f"finalize: cleanup: VolumeSnapshotContent/{name}" in err and "Traceback" not in err
    assert kube_server.get("vsc", name)["spec"]["deletionPolicy"] == "Delete"
    assert kube_server.get("vsc", app_content) is not None
    assert (kube_server.snapshot_path(APP_NS, "snap-data") / "table").read_text() == "at the cut"


def test_finalize_refuses_the_apps_namespace_as_mover_namespace(kube_server, app_snapshot, tmp_path):
    res = run_step(
        "finalize", "--plan", _finalize_plan(tmp_path, False), "--backup-id", "backup-db-1",
        "--workflow-status", "Failed", "--mover-namespace", APP_NS,
    )  # fmt: skip
    assert res.rc == 2 and "--mover-namespace: must differ from the plan's namespace (shop)" in res.stderr
    assert "Traceback" not in res.stderr
    assert kube_server.get("vs", "snap-data", APP_NS) is not None


def test_mover_namespace_equal_to_the_apps_is_refused(kube_server, app_snapshot):
    rc, _, err = _prepare("--mover-namespace", APP_NS)
    assert rc == 2 and "--mover-namespace: must differ from --namespace" in err
    assert "Traceback" not in err


def test_backup_copies_from_the_mover_namespace_and_restores_identical_data(k8s, tmp_path):
    """The copy path end to end: snapshots in the app's (restricted) namespace, static content + snapshot +
    clone in the mover namespace, the copy reads the clone there, verify and commit pass, and finalize's
    clean-up leaves the mover namespace empty while the app's snapshots stay (delete_after_copy off)."""
    # GIVEN the app in a namespace enforcing restricted and an empty mover namespace enforcing baseline
    k8s.deploy_app()
    k8s.server.patch(
        "namespaces", APP_NS, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    _namespace(k8s.server, MOVERS, "baseline")
    before = k8s.volume_state()
    backup_id = "backup-db-movers"
    plan = k8s.plan()
    data = json.loads(plan.read_text())
    data["snapshot"]["delete_after_copy"] = False
    plan.write_text(json.dumps(data))
    # WHEN the backup runs: capture and consistent-point act on the app's namespace,
    res = run_step(
        "capture", "--repo", k8s.repo, "--namespace", APP_NS, "--backup-id", backup_id, "--app", "db"
    )
    assert res.rc == 0, res.stderr
    res = run_step("consistent-point", "--plan", plan, "--backup-id", backup_id)
    assert res.rc == 0, res.stderr
    # the clones are made in the mover namespace and the copy reads them there,
    snapshots = {}
    for volume, pvc in VOLUMES.items():
        res = run_step(
            "prepare-clone", "--namespace", APP_NS, "--mover-namespace", MOVERS, "--pvc", pvc,
            "--volume", volume, "--backup-id", backup_id, "--app", "db", "--timeout", "20",
        )  # fmt: skip
        assert res.rc == 0, res.stderr
        claim = res.last_line
        k8s.server.wait_for("pvc", claim, MOVERS, lambda p: p["status"]["phase"] == "Bound")
        assert k8s.server.get("pvc", claim, APP_NS) is None
        res = run_step(
            "copy", "--repo", k8s.repo, "--source", k8s.server.volume_path(MOVERS, claim),
            "--backup-id", backup_id, "--cluster", "test", "--namespace", APP_NS, "--app", "db",
            "--volume", volume, "--policy", "db",
        )  # fmt: skip
        assert res.rc == 0, res.stderr
        snapshots[volume] = res.last_line
    res = run_step("verify", "--repo", k8s.repo, "--backup-id", backup_id, "--read-data", "100")
    assert res.rc == 0, res.stdout + res.stderr
    res = run_step(
        "finalize", "--plan", plan, "--backup-id", backup_id, "--workflow-status", "Succeeded",
        "--mover-namespace", MOVERS, "--json",
    )  # fmt: skip
    assert res.rc == 0, res.stderr
    cleanup = json.loads(res.stdout.strip().splitlines()[-1])["cleanup"]
    # THEN the backup is committed and restores byte- and metadata-identical to the app's volumes
    assert not cleanup["errors"] and len(cleanup["deleted"]) == 3 * len(VOLUMES), cleanup
    for volume, snapshot_id in snapshots.items():
        target = tmp_path / f"restored-{volume}"
        res = run_step("restore", "--repo", k8s.repo, "--snapshot", snapshot_id, "--target", target)
        assert res.rc == 0, res.stderr
        assert tree_state(target) == before[volume]
    # and the mover namespace is empty again, its contents gone, while the app's snapshots keep their data
    assert k8s.server.list("pvc", MOVERS) == [] or all(
        p["metadata"].get("deletionTimestamp") for p in k8s.server.list("pvc", MOVERS)
    )
    assert k8s.server.list("vs", MOVERS) == []
    assert not [c for c in k8s.server.list("vsc") if c["spec"].get("deletionPolicy") == "Retain"]
    app_snapshots = k8s.server.list("vs", APP_NS, label_selector=f"snapflow.io/backup-id={backup_id}")
    assert len(app_snapshots) == len(VOLUMES)
    for vs in app_snapshots:
        assert vs["status"]["readyToUse"] is True
        assert any(k8s.server.snapshot_path(APP_NS, vs["metadata"]["name"]).iterdir())


@pytest.mark.parametrize("consistency", ["volume", "group"])
def test_rendered_backup_runs_in_the_mover_namespace_with_only_the_rendered_rbac(k8s, consistency):
    """The rendered backup template with a mover namespace, each step as its rendered account, RBAC
    enforced: the app's namespace enforces restricted and gets no pod and no claim; the copy mounts its
    clone in the mover namespace; the backup is committed; finalize's exit handler cleans up the mover side."""
    import yaml

    from tests.fixtures.rendered import TemplateRunner, app_policy, apply_rendered, repository_secrets
    from workflows.render import render_files

    # GIVEN the app in a restricted namespace, the mover namespace with the repository's Secrets, and
    # the policy rendered with spec.movers and its RBAC applied
    k8s.deploy_app()
    k8s.server.patch(
        "namespaces", APP_NS, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    _namespace(k8s.server, MOVERS, "baseline")
    repository_secrets(k8s.server, MOVERS)
    before = k8s.volume_state()
    doc = app_policy(k8s, consistency, False)
    doc["spec"]["movers"] = {"namespace": MOVERS}
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    objects = [o.obj for o in render_files([path]).ordered()]
    (plan,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert plan["metadata"]["namespace"] == MOVERS  # beside the workflows that mount it
    apply_rendered(k8s.server, objects)
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}
    assert templates["backup-db"]["metadata"]["namespace"] == MOVERS
    k8s.server.enforce_rbac = True
    runner = TemplateRunner(k8s.server, k8s.tmp, objects)

    # WHEN the backup template runs
    backup = runner.run(templates["backup-db"], "backup-db-movers1")

    # THEN every step succeeded as its own account and the backup is committed
    assert backup.status == "Succeeded", backup.stderr()
    assert backup.exit is not None and backup.exit.result.rc == 0, backup.stderr()
    assert "forbidden" not in backup.stderr().lower()
    assert "finalize: backup backup-db-movers1: committed" in backup.exit.result.stderr
    assert not k8s.frozen_marker.exists()
    # the clones were made in the mover namespace, none in the app's
    assert {p["metadata"]["name"] for p in k8s.server.list("pvc", APP_NS)} == set(VOLUMES.values())
    # and each copied volume restores identical to the app's
    res = run_step("snapshots", "--repo", k8s.repo, "--backup-id", "backup-db-movers1", "--json")
    assert res.rc == 0, res.stderr
    listed = json.loads(res.stdout)
    for volume in VOLUMES:
        (snap,) = [s for s in listed if volume in (s.get("volume"), (s.get("tags") or {}).get("volume"))]
        target = k8s.tmp / f"restored-{volume}"
        res = run_step("restore", "--repo", k8s.repo, "--snapshot", snap["id"], "--target", target)
        assert res.rc == 0, res.stderr
        assert tree_state(target) == before[volume]

    # AND the exit handler, finalize as its own account, cleaned up the mover side: nothing of the backup
    # is left there, no pre-provisioned content either
    finalize_log = backup.exit.result.stderr
    assert "cleanup" not in finalize_log, finalize_log
    assert finalize_log.count(f"in namespace {MOVERS}") == 2 * len(VOLUMES), finalize_log
    assert k8s.server.list("vs", MOVERS) == []
    assert all(p["metadata"].get("deletionTimestamp") for p in k8s.server.list("pvc", MOVERS))
    assert not [c for c in k8s.server.list("vsc") if c["spec"].get("deletionPolicy") == "Retain"]
    assert not [
        c for c in k8s.server.list("vsc") if (c["metadata"].get("labels") or {}).get("snapflow.io/role")
    ]

    # WHEN the clean-up is repeated as finalize's account
    from steps.drivers.kube import KubeClient, KubeSettings

    config = k8s.server.write_kubeconfig(
        k8s.tmp / "kubeconfig-finalize",
        token=k8s.server.service_account_token(MOVERS, "snapflow-db-finalize"),
    )
    with KubeClient(KubeSettings.from_env(kubeconfig=str(config))) as client:
        done = release_mover_objects(client, MOVERS, "backup-db-movers1", list(VOLUMES))
    # THEN the rendered RBAC allows it and there is nothing left to do
    assert done == {"deleted": [], "errors": []}


def test_preflight_of_a_mover_policy_checks_both_namespaces_and_the_contents(k8s, capsys):
    import yaml

    from tests.fixtures.rendered import app_policy, apply_rendered, repository_secrets
    from workflows.cli import main
    from workflows.render import render_files

    # GIVEN the app in a restricted namespace, a baseline mover namespace with the repository's Secrets,
    # and the rendered RBAC of a policy with a mover namespace applied
    k8s.deploy_app()
    k8s.server.patch(
        "namespaces", APP_NS, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    _namespace(k8s.server, MOVERS, "baseline")
    repository_secrets(k8s.server, MOVERS)
    doc = app_policy(k8s, "volume", True)
    doc["spec"]["movers"] = {"namespace": MOVERS}
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(k8s.server, [o for o in objects if o["kind"] != "ConfigMap"])

    # WHEN preflight runs
    rc = main(["preflight", str(path), "--json", "--skip-repository"])
    out = capsys.readouterr()
    checks = json.loads(out.out.strip().splitlines()[-1])["policies"][0]["checks"]
    found = {(c["check"], c["status"]) for c in checks}
    # THEN the steps' rights in the app's namespace, the mover side and the contents all pass, and Pod
    # Security passes: restricted where the app runs, baseline where the workflows run
    assert rc == 0 and not [c for c in checks if c["status"] == "fail"], checks
    assert {("rbac", "ok"), ("rbac-movers", "ok"), ("rbac-restore", "ok"), ("pod-security", "ok")} <= found
    assert any(
        f"{MOVERS}/snapflow-db-consistent-point" in c["message"] for c in checks if c["check"] == "rbac"
    )

    # WHEN finalize's Role in the mover namespace is gone
    k8s.server.delete("rolebindings.rbac.authorization.k8s.io", "snapflow-db-finalize", MOVERS)
    rc = main(["preflight", str(path), "--json", "--skip-repository"])
    out = capsys.readouterr()
    checks = json.loads(out.out.strip().splitlines()[-1])["policies"][0]["checks"]
    # THEN preflight fails and names what finalize may not do there
    (failed,) = [c for c in checks if c["status"] == "fail"]
    assert rc != 0 and failed["check"] == "rbac-movers"
    assert (
        f"{MOVERS}/snapflow-db-finalize: delete persistentvolumeclaims in namespace {MOVERS}"
        in failed["message"]
    )

    # WHEN restore-app's Role in the mover namespace is gone too
    k8s.server.delete("rolebindings.rbac.authorization.k8s.io", "snapflow-db-restore", MOVERS)
    rc = main(["preflight", str(path), "--json", "--skip-repository"])
    out = capsys.readouterr()
    checks = json.loads(out.out.strip().splitlines()[-1])["policies"][0]["checks"]
    # THEN rbac-restore fails and names its staging claims and mover pods there
    (failed,) = [c for c in checks if c["status"] == "fail" and c["check"] == "rbac-restore"]
    assert rc != 0
    assert f"create persistentvolumeclaims in namespace {MOVERS}" in failed["message"]
    assert f"get pods/log in namespace {MOVERS}" in failed["message"]
    assert "persistentvolumes" not in failed["message"]  # its ClusterRole is still bound


def test_static_binding_as_on_a_real_cluster(kube_server, kubeconfig, monkeypatch):
    """The on-cluster test of the static binding (tests/cluster/test_on_cluster_mover_namespace.py), run
    against the fake API server so that its code keeps working between real-cluster runs."""
    from tests.cluster.test_on_cluster_mover_namespace import bind_clone_and_release
    from tests.fakes.csi import SNAPSHOT_CLASS, STORAGE_CLASS
    from tests.fixtures.cluster import RealCluster

    monkeypatch.setenv("SNAPFLOW_KUBE_READ_TIMEOUT", "10")
    bind_clone_and_release(
        RealCluster(
            image="snapflow/steps:test",
            endpoint="",
            repo="",
            storage_class=STORAGE_CLASS,
            snapshot_class=SNAPSHOT_CLASS,
            run_id="fake01",
        )
    )


def test_preflight_finds_the_repository_secrets_only_in_the_mover_namespace(k8s, capsys):
    import os

    import yaml

    from tests.fixtures.k8s_app import b64
    from tests.fixtures.rendered import app_policy, repository_secrets
    from workflows.cli import main

    # GIVEN a policy with a mover namespace whose repository Secrets were created in the app's namespace
    k8s.deploy_app()
    _namespace(k8s.server, MOVERS, "baseline")
    repository_secrets(k8s.server, APP_NS)
    doc = app_policy(k8s, "volume", True)
    doc["spec"]["movers"] = {"namespace": MOVERS}
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))

    def secrets_check() -> tuple[int, dict, str]:
        rc = main(["preflight", str(path), "--json", "--skip-repository"])
        out = capsys.readouterr()
        checks = json.loads(out.out.strip().splitlines()[-1])["policies"][0]["checks"]
        (found,) = [c for c in checks if c["check"] == "secrets"]
        return rc, found, out.out + out.err

    # WHEN preflight runs
    rc, found, output = secrets_check()
    # THEN it fails and says the pods mount them from the mover namespace
    assert rc != 0 and found["status"] == "fail", found
    assert found["message"].startswith(
        f"Secret {MOVERS}/snapflow-repository does not exist (one in {APP_NS} is not used: the step pods "
        f"run in {MOVERS}); Secret {MOVERS}/snapflow-s3 does not exist"
    )
    # WHEN they are in the mover namespace, one of them without the key the pods read
    repository_secrets(k8s.server, MOVERS)
    k8s.server.patch(
        "secrets", "snapflow-s3", {"data": {"AWS_SECRET_ACCESS_KEY": None, "SECRET": b64("x")}}, MOVERS
    )
    rc, found, output = secrets_check()
    # THEN preflight names the Secret and the key, and never a value
    assert found["status"] == "fail" and found["message"].startswith(
        f"Secret {MOVERS}/snapflow-s3 has no key AWS_SECRET_ACCESS_KEY:"
    ), found
    assert os.environ["SNAPFLOW_PASSWORD"] not in output and os.environ["AWS_ACCESS_KEY_ID"] not in output
    # AND with every key there the check passes
    k8s.server.patch(
        "secrets",
        "snapflow-s3",
        {"data": {"AWS_SECRET_ACCESS_KEY": b64(os.environ["AWS_SECRET_ACCESS_KEY"])}},
        MOVERS,
    )
    rc, found, output = secrets_check()
    assert found == {
        "check": "secrets",
        "status": "ok",
        "message": f"Secret snapflow-repository, Secret snapflow-s3 in the mover namespace {MOVERS}",
    }


def test_rendered_restore_app_runs_its_movers_in_the_mover_namespace_with_only_the_rendered_rbac(k8s):
    """The rendered restore-app template with a mover namespace, as the rendered restore account, RBAC and
    Pod Security enforced: the target namespace enforces restricted, the mover pods run in the mover
    namespace on staging claims, and each filled volume is handed over to its claim in the target."""
    import yaml

    from tests.fixtures.k8s_app import StepPodKubelet
    from tests.fixtures.rendered import TemplateRunner, app_policy, apply_rendered, repository_secrets
    from workflows.render import render_files

    # GIVEN a committed backup made by the rendered backup template of a policy with a mover namespace
    k8s.deploy_app()
    _namespace(k8s.server, MOVERS, "baseline")
    repository_secrets(k8s.server, MOVERS)
    before = k8s.volume_state()
    doc = app_policy(k8s, "volume", False)
    doc["spec"]["movers"] = {"namespace": MOVERS}
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(k8s.server, objects)
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}
    k8s.server.enforce_rbac = True
    runner = TemplateRunner(k8s.server, k8s.tmp, objects)
    backup = runner.run(templates["backup-db"], "backup-db-movers2")
    assert backup.status == "Succeeded", backup.stderr()
    # ... a target namespace enforcing restricted, prepared as the docs say (the restore ClusterRole
    # bound there to the restore account, which lives in the mover namespace), Pod Security enforced
    target = "shop-dr"
    _namespace(k8s.server, target, "restricted")
    k8s.server.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "snapflow.shop.db-restore", "namespace": target},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "snapflow.shop.db-restore",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "snapflow-db-restore", "namespace": MOVERS}],
        }
    )
    k8s.server.cluster.enforce_pod_security = True
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    ran_in: list[str] = []

    def runner_of_pods(pod: dict, mounts: dict[str, str]):
        if (pod["metadata"].get("labels") or {}).get("snapflow.io/role") == "mover":
            ran_in.append(pod["metadata"]["namespace"])
        return kubelet(pod, mounts)

    k8s.server.set_pod_runner(runner_of_pods)
    restore_args = next(
        t["container"]["args"] for t in templates["restore-app-db"]["spec"]["templates"] if t.get("container")
    )
    assert restore_args[restore_args.index("--mover-namespace") + 1] == MOVERS

    # WHEN the rendered restore-app template runs into it (the app's own pods are not made for restricted:
    # it does not wait for them)
    restore = runner.run(
        templates["restore-app-db"],
        "restore-app-db-movers2",
        {"target-namespace": target, "wait-ready": "false"},
    )

    # THEN it succeeds as the restore account, nothing refused; every mover pod ran in the mover namespace
    assert restore.status == "Succeeded", restore.stderr() + "\n".join(r["stderr"] for r in kubelet.runs)
    assert "forbidden" not in restore.stderr().lower()
    assert sorted(ran_in) == [MOVERS] * len(VOLUMES)
    assert sorted(r["rc"] for r in kubelet.runs) == [0] * len(VOLUMES)
    # AND each claim in the target is bound to the volume filled there, holding the backup's data, with
    # the volume's reclaim policy back and no mark of the restore left
    assert k8s.volume_state(target) == before
    for pvc in VOLUMES.values():
        claim = k8s.server.get("persistentvolumeclaims", pvc, target)
        assert claim["status"]["phase"] == "Bound"
        pv = k8s.server.get("persistentvolumes", claim["spec"]["volumeName"])
        assert pv["spec"]["claimRef"]["namespace"] == target
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        assert not [k for k in (pv["metadata"].get("labels") or {}) if k.startswith("snapflow.io/restore")]
    # AND nothing of the restore is left in the mover namespace: no staging claim, no mover pod, and the
    # repository's Secrets were used there, never copied into the target
    assert not [
        c
        for c in k8s.server.list("persistentvolumeclaims", MOVERS)
        if (c["metadata"].get("labels") or {}).get("snapflow.io/restore-id")
        and not c["metadata"].get("deletionTimestamp")
    ]
    assert not [p for p in k8s.server.list("pods", MOVERS) if not p["metadata"].get("deletionTimestamp")]
    assert {s["metadata"]["name"] for s in k8s.server.list("secrets", target)} & {
        "snapflow-repository",
        "snapflow-s3",
    } == set()
    assert k8s.server.get("statefulsets.apps", "db", target)["spec"]["replicas"] == 1
