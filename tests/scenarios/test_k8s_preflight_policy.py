"""`snapflow preflight POLICY` against a live API (the fake API server, through the real kubernetes
client): snapshot classes, the rendered ServiceAccounts' RBAC, Pod Security and the repository."""

from __future__ import annotations

import json

import yaml

from tests.fixtures.k8s_app import APP_NS
from tests.fixtures.rendered import app_policy, apply_rendered, repository_secrets
from workflows.cli import main
from workflows.render import render_files


def write_policy(k8s, consistency: str = "volume", **snapshot) -> str:
    doc = app_policy(k8s, consistency, secrets=True)
    doc["spec"]["snapshot"].update(snapshot)
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def checks_of(out: str) -> set[tuple[str, str]]:
    (policy,) = json.loads(out.strip().splitlines()[-1])["policies"]
    return {(c["check"], c["status"]) for c in policy["checks"]}


def test_preflight_passes_once_the_rendered_manifests_are_applied(k8s, capsys):
    # GIVEN the app, the repository's Secrets, and the policy's rendered RBAC applied
    k8s.deploy_app()
    repository_secrets(k8s.server, APP_NS)
    path = write_policy(k8s, "group", groupClassName="csi-hostpath-groupsnapclass")
    apply_rendered(k8s.server, [o.obj for o in render_files([path]).ordered()])

    # WHEN an administrator runs snapflow preflight for the policy
    rc = main(["preflight", path, "--json"])

    # THEN every check passes, the ServiceAccounts' included, and the repository opens
    out = capsys.readouterr()
    assert rc == 0, out.err
    found = checks_of(out.out)
    assert {c for c, status in found if status == "fail"} == set()
    assert {
        ("api", "ok"),
        ("namespace", "ok"),
        ("snapshot-api", "ok"),
        ("snapshot-class", "ok"),
        ("rbac", "ok"),
        ("rbac-restore", "ok"),
        ("pod-security", "ok"),
        ("repository", "ok"),
    } <= found
    messages = json.loads(out.out)["policies"][0]["checks"]
    assert any("group class csi-hostpath-groupsnapclass" in c["message"] for c in messages)
    assert any(
        "shop/snapflow-db-consistent-point" in c["message"] and "have every permission" in c["message"]
        for c in messages
        if c["check"] == "rbac"
    )


def test_preflight_names_each_problem_one_line_each(k8s, capsys, monkeypatch):
    # GIVEN a policy naming a group snapshot class that does not exist, whose RBAC was never applied,
    # and no repository password on this machine
    k8s.deploy_app()
    path = write_policy(k8s, "group", groupClassName="no-such-groupclass")
    monkeypatch.delenv("SNAPFLOW_PASSWORD")

    # WHEN preflight runs
    rc = main(["preflight", path])

    # THEN it fails with exit code 3, one line per problem, and says what it did not check
    out = capsys.readouterr()
    assert rc == 3
    lines = out.out.splitlines()
    assert lines[0] == "policy shop/db:"
    assert any(
        "FAIL snapshot-class" in ln and "no VolumeGroupSnapshotClass no-such-groupclass for driver" in ln
        for ln in lines
    )
    assert any(
        "FAIL rbac " in ln
        and "ServiceAccounts" in ln
        and "shop/snapflow-db-capture: list configmaps (capture)" in ln
        and "shop/snapflow-db-consistent-point: create volumesnapshots" in ln
        for ln in lines
    )
    assert any(
        "FAIL rbac-restore" in ln and "ServiceAccount shop/snapflow-db-restore may not" in ln for ln in lines
    )
    assert any("warn repository" in ln and "not checked: set SNAPFLOW_PASSWORD" in ln for ln in lines)
    (last,) = out.err.strip().splitlines()
    assert last.startswith("error: preflight: ") and "check(s) failed: shop/db snapshot-class:" in last


def test_preflight_of_the_current_identity_against_a_bare_cluster(
    kube_server, kube_client, kubeconfig, tmp_path, capsys
):
    # GIVEN an API server without the policy's namespace, reached through a kubeconfig
    from kubernetes import client

    client.CoreV1Api(kube_client).create_namespace({"metadata": {"name": "other"}})
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "snapflow.io/v1alpha1",
                "kind": "ProtectionPolicy",
                "metadata": {"name": "orders-db", "namespace": "shop"},
                "spec": {
                    "volumes": [{"pvc": "data-orders-db-0", "name": "data"}],
                    "repository": {"url": "s3://backups/shop", "passwordSecret": {"name": "repo"}},
                },
            }
        )
    )

    # WHEN preflight checks what the caller itself may do, without the repository
    rc = main(["preflight", str(path), "--current-identity", "--skip-repository", "--json"])

    # THEN the missing namespace and PVC fail, the caller (an administrator) has every right, and
    # neither the restore identity nor the repository was checked
    out = capsys.readouterr()
    assert rc == 3
    found = checks_of(out.out)
    assert ("namespace", "fail") in found and ("snapshot-class", "fail") in found
    assert ("rbac", "ok") in found
    assert not {c for c, _ in found} & {"rbac-restore", "repository"}


def test_bad_input_is_one_line_and_exit_2(kubeconfig, tmp_path, capsys, minimal_policy, write_policy):
    path = str(write_policy(minimal_policy))
    cases = [
        (
            ["preflight", str(tmp_path / "missing.yaml")],
            f"{tmp_path / 'missing.yaml'}: cannot read: no such file",
        ),
        (
            ["preflight", path, "--service-account", "snapflow-orders-db"],
            "error: --service-account: expected NAMESPACE/NAME, got 'snapflow-orders-db'",
        ),
        (
            ["preflight", path, "--name", "billing/db"],
            "error: --name: no policy 'billing/db' in the given files (policies: shop/orders-db)",
        ),
    ]
    for argv, expected in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert (rc, err) == (2, [expected]), argv


def test_preflight_says_whether_block_tracking_will_work(k8s, capsys):
    # GIVEN a policy tracking the changed blocks of its data volume, its rendered RBAC applied, and no
    # SnapshotMetadataService for the volume's driver yet
    k8s.deploy_app()
    repository_secrets(k8s.server, APP_NS)
    doc = app_policy(k8s, "volume", secrets=True)
    doc["spec"]["volumes"][0].update(block=True, blockTracking={})
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(k8s.server, objects)
    pvc = k8s.server.get("persistentvolumeclaims", doc["spec"]["volumes"][0]["pvc"], APP_NS)
    driver = k8s.server.get("storageclasses", pvc["spec"]["storageClassName"])["provisioner"]

    def block_check() -> dict:
        assert main(["preflight", str(path), "--json", "--skip-repository"]) in (0, 1)
        out = capsys.readouterr().out
        (check,) = [c for c in json.loads(out)["policies"][0]["checks"] if c["check"] == "block-tracking"]
        return check

    # THEN preflight warns that the volume will be read in full, naming the missing service
    missing = block_check()
    assert missing["status"] == "warn"
    assert f"no SnapshotMetadataService {driver!r}" in missing["message"]
    # ... and once the driver publishes it, tracking is available
    k8s.server.register_kind(
        "cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False, status=False
    )
    k8s.server.create(
        {
            "apiVersion": "cbt.storage.k8s.io/v1alpha1",
            "kind": "SnapshotMetadataService",
            "metadata": {"name": driver},
            "spec": {"address": "sms.example:6443", "audience": "sms", "caCert": "Cg=="},
        }
    )
    assert block_check() == {
        "check": "block-tracking",
        "status": "ok",
        "message": f"changed-block tracking available for data ({driver})",
    }
    # ... and without the copy's cluster-wide reads it says which right is missing
    (binding,) = [
        o for o in objects if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"].endswith("-copy")
    ]
    k8s.server.delete("clusterrolebindings", binding["metadata"]["name"])
    denied = block_check()
    assert denied["status"] == "warn"
    assert (
        f"{APP_NS}/snapflow-db-copy: may not get snapshotmetadataservices.cbt.storage.k8s.io"
        in denied["message"]
    )
