"""The on-cluster tests that need no kubelet, controller or kubectl, run against the fake API server and
SeaweedFS of the default suite: their code keeps working between the runs on a real cluster (a renamed
option or field would otherwise go unnoticed until then). The real cluster's answers are still only
checked by ``pytest -m on_cluster`` (docs/user/on-cluster-tests.md)."""

from __future__ import annotations

import os

import pytest

from tests.cluster import test_on_cluster_argo_backup as argo_backup
from tests.cluster import test_on_cluster_capture_and_rbac as capture_and_rbac
from tests.fixtures.cluster import RealCluster


@pytest.fixture
def fake_cluster(kubeconfig, s3_repo, monkeypatch) -> RealCluster:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return RealCluster(
        image="snapflow/steps:test",
        endpoint=os.environ["SNAPFLOW_S3_ENDPOINT"],
        repo=s3_repo,
        storage_class="standard",
        snapshot_class="csi-snapclass",
        run_id="fake01",
    )


def test_capture_of_every_served_version(fake_cluster):
    capture_and_rbac.test_capture_reads_every_kind_once_at_a_served_version_and_stores_each_object_once(
        fake_cluster
    )


def test_restore_app_refusing_one_object_twice(fake_cluster):
    capture_and_rbac.test_restore_app_refuses_a_backup_holding_one_object_twice_before_creating_anything(
        fake_cluster
    )


def test_preflight_in_a_restricted_namespace(fake_cluster, tmp_path):
    argo_backup.test_preflight_names_the_copy_template_as_rejected_by_a_restricted_namespace(
        fake_cluster, tmp_path
    )
