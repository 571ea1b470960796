"""What an incremental registry-backup trusts in its parent, and what verify checks: a parent snapshot
written with the key (the layout registry-backup writes, stored as it stores it) that lists a manifest
under another media type is not reused for it, and a restore of it refuses before pushing; a parent whose
blob file holds other bytes of the right size makes verify of the next backup fail naming the digest, so
that backup is never committed; a directory copy carrying the registry tags is no parent at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import OCI_INDEX, OCI_MANIFEST, Seeder, push_sample_images
from tests.scenarios.test_registry_backup_restore import credentials
from tests.scenarios.test_registry_incremental import PASSWORD, CountingFront, backup

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def front_of(registry_pki):
    made = []

    def make(server):
        made.append(CountingFront(server, registry_pki.ca))
        return made[-1]

    yield make
    for front in made:
        front.stop()


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    proc = run_steps("init", "--repo", url, env=env)
    assert proc.returncode == 0, proc.stderr
    return url, env


def run_steps(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def restored_layout(url: str, env: dict, snapshot: str, target: Path) -> Path:
    """The files of registry snapshot ``snapshot`` (registry.json, manifests/, blobs/) under ``target``."""
    proc = run_steps("restore", "--repo", url, "--snapshot", snapshot, "--target", str(target), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (target / "registry.json").is_file()
    return target


def store_as_registry_backup(url: str, host: str, workdir: Path) -> str:
    """Store ``workdir`` as registry-backup stores its staging directory (what a writer holding the
    repository key can do); returns the snapshot ID."""
    from steps.drivers.objectstore import open_store
    from steps.repository.registry_tree import store_registry_tree
    from steps.repository.repo import Repository

    os.environ.setdefault("SNAPFLOW_KDF_TEST_N", "1024")
    repository = Repository.open(open_store(url), PASSWORD)
    repository.begin_write()
    result = store_registry_tree(
        repository, str(workdir), {}, tags={"kind": "registry", "registry": host}, backup_id=None,
        identity={}, parent=None,
    )  # fmt: skip
    return result.snapshot_id


@pytest.mark.slow
def test_a_media_type_the_parent_lists_against_its_document_is_not_reused_and_not_restored(
    tmp_path, repo, registry_servers, registry_pki, front_of
):
    # GIVEN a registry backed up once
    server = registry_servers("basic", {"backup": "pw-trust-1"})
    seeder = Seeder(server, "backup", "pw-trust-1")
    pushed = push_sample_images(seeder, big_layer=60_000)
    front = front_of(server)
    url, env = repo
    host = front.url.removeprefix("http://")
    creds = credentials(tmp_path, registry_pki, "backup", "pw-trust-1")[2:]
    first = backup(url, env, front, creds)
    front.take()
    # AND a newer snapshot of that registry, stored with the key, listing the OCI index of proj/app
    # as an image manifest (its bytes, and so its digest, unchanged)
    work = restored_layout(url, env, first["snapshot"], tmp_path / "forged")
    index = pushed.tags["proj/app"]["v1"]
    desc = json.loads((work / "registry.json").read_text())
    assert desc["manifests"][index]["media_type"] == OCI_INDEX
    desc["manifests"][index]["media_type"] = OCI_MANIFEST
    (work / "registry.json").write_text(json.dumps(desc))
    forged = store_as_registry_backup(url, host, work)
    # AND a still newer directory copy carrying the registry's tags (not written by registry-backup)
    copied = run_steps("copy", "--repo", url, "--source", str(work), "--tag", "kind=registry",
                       "--tag", f"registry={host}", "--json", env=env)  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    # WHEN the registry is backed up again
    second = backup(url, env, front, creds)
    counted = front.take()
    # THEN the parent is the snapshot written as registry-backup writes it, not the copy
    assert second["parent"] == forged
    # AND the index is fetched again (once per tag naming it) instead of taken with the wrong type,
    # and so every image below it is in the new snapshot, as in the first
    assert counted[("GET", "manifests")] == second["manifests_fetched"] == 2
    assert second["blobs_downloaded"] == 0
    for key in ("manifests", "blobs", "blob_bytes", "image_bytes", "tags"):
        assert second[key] == first[key], key
    # AND a restore of the forged snapshot refuses in one line naming the manifest, pushing nothing
    server.wipe()
    proc = run_steps(
        "registry-restore", "--repo", url, "--registry", server.url, "--snapshot", forged,
        *credentials(tmp_path, registry_pki, "backup", "pw-trust-1"), env=env,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and index in lines[0] and "nothing was pushed" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert seeder.tags("proj/app") == [] and seeder.tags("proj/tool") == []
    assert seeder.get_manifest("proj/app", index)[0] == 404
    assert all(seeder.get_blob(r, d)[0] == 404 for d, (r, _) in pushed.blobs.items())


@pytest.mark.slow
def test_a_parent_blob_holding_other_bytes_fails_verify_of_the_backup_that_reuses_it(
    tmp_path, repo, registry_servers, registry_pki, front_of
):
    from steps.drivers.objectstore import open_store
    from steps.repository.registry_tree import registry_parent
    from steps.repository.repo import Repository

    # GIVEN a registry backed up once, and a newer snapshot stored with the key in which one layer's
    # file holds other bytes of the same size
    server = registry_servers("basic", {"backup": "pw-trust-2"})
    pushed = push_sample_images(Seeder(server, "backup", "pw-trust-2"), big_layer=60_000)
    front = front_of(server)
    url, env = repo
    host = front.url.removeprefix("http://")
    creds = credentials(tmp_path, registry_pki, "backup", "pw-trust-2")[2:]
    first = backup(url, env, front, creds)
    work = restored_layout(url, env, first["snapshot"], tmp_path / "poisoned")
    layer = next(d for d, (_, data) in pushed.blobs.items() if len(data) == 60_000)
    path = work / "blobs" / "sha256" / layer.removeprefix("sha256:")
    path.chmod(0o644)
    path.write_bytes(os.urandom(60_000))
    poisoned = store_as_registry_backup(url, host, work)
    front.take()
    # WHEN the next backup runs (with a backup ID, as a pipeline's does)
    second = backup(url, env, front, creds, "--backup-id", "backup-reg-2")
    # THEN it takes every blob from that parent, the layer too
    assert second["parent"] == poisoned and second["blobs_downloaded"] == 0
    assert front.take()[("GET", "blobs")] == 0
    # AND verify reading every pack fails, naming the layer's digest and the snapshot
    proc = run_steps("verify", "--repo", url, "--backup-id", "backup-reg-2", "--read-data", "100", env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"registry blob {layer}" in proc.stdout and second["snapshot"][:8] in proc.stdout
    assert "Traceback" not in proc.stderr
    # AND only that blob is named: the good blobs and every manifest read back as their digests
    assert proc.stdout.count("does not match its digest") == 1, proc.stdout
    # AND the first snapshot (good bytes) verifies
    ok = run_steps("verify", "--repo", url, "--snapshot", first["snapshot"], "--read-data", "100", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # AND the backup is not committed, so it is no parent; nor is the parent it reused from trusted
    # again, and the warning says why
    repository = Repository.open(open_store(url), PASSWORD)
    warnings: list[str] = []
    assert registry_parent(repository, host, warnings.append) is None
    assert len(warnings) == 1 and second["snapshot"][:8] in warnings[0] and "backup-reg-2" in warnings[0]
    # WHEN the backup runs again THEN it downloads every blob, and its verify passes
    third = backup(url, env, front, creds, "--backup-id", "backup-reg-4")
    assert third["parent"] is None and third["blobs_downloaded"] == len(pushed.blobs)
    ok = run_steps("verify", "--repo", url, "--backup-id", "backup-reg-4", "--read-data", "100", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_a_good_parent_is_still_reused_and_verifies(tmp_path, repo, registry_servers, registry_pki, front_of):
    # GIVEN a registry backed up once
    server = registry_servers("basic", {"backup": "pw-trust-3"})
    pushed = push_sample_images(Seeder(server, "backup", "pw-trust-3"), big_layer=60_000)
    front = front_of(server)
    url, env = repo
    creds = credentials(tmp_path, registry_pki, "backup", "pw-trust-3")[2:]
    first = backup(url, env, front, creds)
    front.take()
    # WHEN it is backed up again with a backup ID
    second = backup(url, env, front, creds, "--backup-id", "backup-reg-3")
    # THEN no blob is downloaded and every manifest is taken from the parent
    assert second["parent"] == first["snapshot"]
    assert front.take()[("GET", "blobs")] == 0 and second["blobs_reused"] == len(pushed.blobs)
    assert second["manifests_fetched"] == 0
    # AND verify reading every pack (every registry file hashed) passes
    proc = run_steps("verify", "--repo", url, "--backup-id", "backup-reg-3", "--read-data", "100", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not match" not in proc.stdout
    # AND the parent stays trusted: a passed verify of a backup that reused it is no reason to doubt it
    from steps.drivers.objectstore import open_store
    from steps.repository.registry_tree import registry_parent
    from steps.repository.repo import Repository

    warnings: list[str] = []
    repository = Repository.open(open_store(url), PASSWORD)
    snap = registry_parent(repository, front.url.removeprefix("http://"), warnings.append)
    assert snap is not None and snap.id == first["snapshot"] and not warnings
