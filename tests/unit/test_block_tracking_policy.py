"""``volumes[].blockTracking``: the policy field, what the copy step is told, and the copy's rights.

The copy of a tracked volume finds its snapshot through its clone, gets a token of its own account for
the SnapshotMetadata service and reads the service's object and the snapshot's content; its Role and
ClusterRole hold exactly that, evaluated on the fake API server with RBAC enforced.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from steps.drivers.kube import KubeClient, KubeError, KubeSettings
from workflows.render import render_files

ROOT = Path(__file__).resolve().parents[2]
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def _tracked(policy: dict, **tracking) -> dict:
    policy["spec"]["volumes"] = [
        {"pvc": "disk-vm-0", "name": "disk", "block": True, "blockTracking": tracking}
    ]
    return policy


def _copy_args(objects) -> list[str]:
    (backup,) = [o.obj for o in objects if o.kind == "WorkflowTemplate" and o.name.startswith("backup-")]
    (copy,) = [t for t in backup["spec"]["templates"] if t["name"] == "copy-disk"]
    return copy["container"]["args"]


def test_block_tracking_is_refused_on_a_volume_that_is_not_a_raw_block_pvc(minimal_policy, write_policy):
    minimal_policy["spec"]["volumes"] = [{"pvc": "data", "blockTracking": {}}]
    path = write_policy(minimal_policy)
    proc = subprocess.run(
        [sys.executable, "-m", "workflows", "lint", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"{path}: spec.volumes[0].blockTracking: expected only on a raw block PVC (pvc and block: true): "
        "changed-block tracking reads block devices"
    ]


def test_the_copy_is_told_the_namespace_its_account_and_the_full_read_period(minimal_policy, write_policy):
    # GIVEN a tracked raw block volume, once in the app's namespace and once with a mover namespace
    ns = minimal_policy["metadata"]["namespace"]
    name = minimal_policy["metadata"]["name"]
    plain = render_files([write_policy(_tracked(minimal_policy, fullReadEvery=3))]).objects
    minimal_policy["spec"]["movers"] = {"namespace": "movers"}
    moved = render_files([write_policy(_tracked(minimal_policy, driver="ebs.csi.aws.com"))]).objects

    # THEN the copy finds its snapshot where its pod runs, as its own account
    args = _copy_args(plain)
    flags = {f: args[args.index(f) + 1] for f in ("--cbt-driver", "--cbt-snapshot", "--cbt-service-account")}
    assert flags == {
        "--cbt-driver": "auto",
        "--cbt-snapshot": ns,
        "--cbt-service-account": f"snapflow-{name}-copy",
    }
    assert args[args.index("--full-read-every") + 1] == "3"
    args = _copy_args(moved)
    assert args[args.index("--cbt-snapshot") + 1] == "movers"
    assert args[args.index("--cbt-driver") + 1] == "ebs.csi.aws.com"
    assert args[args.index("--full-read-every") + 1] == "7"
    # ... with its Role where it runs only (nothing of it in the app's namespace)
    copy_roles = [o.obj for o in moved if o.kind == "Role" and o.name == f"snapflow-{name}-copy"]
    assert [r["metadata"]["namespace"] for r in copy_roles] == ["movers"]
    token = [r for r in copy_roles[0]["rules"] if r["resources"] == ["serviceaccounts/token"]]
    assert token == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "resourceNames": [f"snapflow-{name}-copy"],
            "verbs": ["create"],
        }
    ]
    # ... and an untracked policy's copy still holds nothing but the executor's rule
    minimal_policy["spec"].pop("movers")
    minimal_policy["spec"]["volumes"] = [{"pvc": "disk-vm-0", "name": "disk", "block": True}]
    untracked = render_files([write_policy(minimal_policy)]).objects
    assert "--cbt-driver" not in _copy_args(untracked)
    (role,) = [o.obj for o in untracked if o.kind == "Role" and o.name == f"snapflow-{name}-copy"]
    assert [r["resources"] for r in role["rules"]] == [["workflowtaskresults"]]
    assert not [o for o in untracked if o.kind == "ClusterRole" and o.name.endswith("-copy")]


def test_the_copy_account_may_do_what_tracking_needs_and_no_more(
    minimal_policy, write_policy, kube_server, tmp_path
):
    # GIVEN the rendered RBAC of a tracked volume applied to the fake API server, RBAC enforced
    ns = minimal_policy["metadata"]["namespace"]
    name = minimal_policy["metadata"]["name"]
    objects = render_files([write_policy(_tracked(minimal_policy))]).objects
    for o in objects:
        if o.kind in RBAC_KINDS:
            kube_server.create(o.obj)
    kube_server.enforce_rbac = True
    account = f"snapflow-{name}-copy"
    token = kube_server.service_account_token(ns, account)
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig-copy", token=token)
    client = KubeClient(KubeSettings.from_env(kubeconfig=str(kubeconfig)))

    def status(call) -> int:
        try:
            call()
        except KubeError as err:
            return err.status or 0
        return 200

    def token_of(sa: str):
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": ["x"]},
        }
        return lambda: client.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body=body
        )

    snapshots = "snapshot.storage.k8s.io/v1"
    with client:
        # THEN it gets a token of its own account, reads the service, snapshots, contents and claims
        assert status(token_of(account)) == 200
        assert (
            status(lambda: client.get("cbt.storage.k8s.io/v1alpha1", "SnapshotMetadataService", "d")) == 404
        )
        assert status(lambda: client.get(snapshots, "VolumeSnapshot", "s", ns)) == 404
        assert status(lambda: client.get(snapshots, "VolumeSnapshotContent", "c")) == 404
        assert status(lambda: client.get("v1", "PersistentVolumeClaim", "clone", ns)) == 404
        # ... and cannot mint a token of another step's account, list or change anything
        assert status(token_of(f"snapflow-{name}-finalize")) == 403
        assert status(lambda: client.list(snapshots, "VolumeSnapshot", ns)) == 403
        assert status(lambda: client.list("v1", "Secret", ns)) == 403
        assert status(lambda: client.delete("v1", "PersistentVolumeClaim", "clone", ns)) == 403
