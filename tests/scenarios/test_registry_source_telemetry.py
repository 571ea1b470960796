"""A registry backed up twice by the real registry-backup step with a policy's identity: the second
snapshot's change telemetry counts what changed since the first (files of the tree: manifests, blobs,
registry.json) with only the new blobs' bytes as new, its summary the new blob bytes the report's dedup
divides by, and its run record names the app and when the images were read."""

from __future__ import annotations

import json
import os

import pytest

from steps.api import open_repository
from tests.fixtures.registry import Seeder, push_sample_images
from tests.scenarios.test_registry_backup_restore import credentials
from tests.scenarios.test_registry_incremental import PASSWORD, steps

APP = {"cluster": "prod-eu", "namespace": "snapflow-registry", "name": "harbor-shop", "policy": "harbor-shop"}


@pytest.mark.slow
def test_a_registry_snapshot_records_what_changed_and_whose_run_it_is(
    tmp_path, registry_servers, registry_pki, monkeypatch
):
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    steps("init", "--repo", url, env=env)
    server = registry_servers("basic", {"backup": "pw-tel-1"})
    seeder = Seeder(server, "backup", "pw-tel-1")
    push_sample_images(seeder, big_layer=300_000)
    creds = credentials(tmp_path, registry_pki, "backup", "pw-tel-1")
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {"app": APP, "repository": {"url": url}, "source": {"kind": "registry", "name": APP["policy"]}}
        )
    )

    def backup(backup_id: str) -> dict:
        out = steps(
            "registry-backup", "--repo", url, "--registry", server.url, *creds, "--repository", "proj/*",
            "--backup-id", backup_id, "--cluster", APP["cluster"], "--namespace", APP["namespace"],
            "--app", APP["name"], "--policy", APP["policy"], "--json", env=env,
        )  # fmt: skip
        # (verified and committed: the next backup's parent is a committed snapshot)
        steps("verify", "--repo", url, "--backup-id", backup_id, "--read-data", "100", env=env)
        steps(
            "finalize",
            "--plan",
            str(plan),
            "--backup-id",
            backup_id,
            "--workflow-status",
            "Succeeded",
            env=env,
        )
        return json.loads(out.stdout)

    # GIVEN a first backup, then one after a new image of 80 kB was pushed under a new tag
    first = backup("backup-harbor-shop-1")
    layer = seeder.blob("proj/tool", os.urandom(80_000))
    config = seeder.blob("proj/tool", json.dumps({"architecture": "amd64", "os": "linux", "n": 3}).encode())
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    seeder.manifest("proj/tool", "2.0", doc, doc["mediaType"])
    second = backup("backup-harbor-shop-2")

    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    repo = open_repository(url)
    snaps = {s.id: s.data for s in repo.list_snapshots()}

    # THEN the first snapshot counts every file as added, with no parent
    c1 = snaps[first["snapshot"]]["changes"]
    assert c1["parent"] is False and c1["files_added"] == c1["files_total"] > 5 and c1["new_bytes"] > 300_000
    # AND the second counts the new manifest and two blobs as added, registry.json as changed, nothing
    # deleted, and only about the new blobs' bytes as new
    c2 = snaps[second["snapshot"]]["changes"]
    assert c2["parent"] is True and c2["files_total"] == c1["files_total"] + 3
    assert (c2["files_added"], c2["files_deleted"], c2["files_renamed"]) == (3, 0, 0)
    assert c2["files_changed"] >= 1  # (registry.json at least)
    assert 80_000 < c2["new_bytes"] < 120_000
    assert snaps[second["snapshot"]]["summary"]["blob_bytes_new"] >= c2["new_bytes"]
    # AND the committed record sums them as its changes
    (record,) = [r.data for r in repo.list_records("backups", key="backup-harbor-shop-2")]
    assert (record["changes"]["filesAdded"], record["changes"]["newBytes"]) == (3, c2["new_bytes"])
    # AND the run record names the app and when the images were read
    (run,) = [
        r.data for r in repo.list_records("runs", key="backup-harbor-shop-2") if r.data["name"] == "registry"
    ]
    assert run["app"] == APP and run["time"] and run["snapshot"] == second["snapshot"]
    assert (snaps[second["snapshot"]]["namespace"], snaps[second["snapshot"]]["app"]) == (
        APP["namespace"],
        APP["name"],
    )
