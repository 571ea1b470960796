"""Images of a real registry (Debian's docker-registry, distribution 2.8, TLS with a CA made in the test)
backed up into the repository, the registry emptied, restored, and every manifest, blob and tag
compared by digest; with Basic (bcrypt htpasswd) and Bearer token authentication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import OCI_INDEX, Seeder, digest_of, push_sample_images

ROOT = Path(__file__).resolve().parents[2]


def steps(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert not check or proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "registry-test-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    steps("init", "--repo", url, env=env)
    return url, env


def credentials(tmp_path, pki, user: str, password: str) -> list[str]:
    secret = tmp_path / f"{user}.password"
    secret.write_text(password + "\n")
    return ["--ca", str(pki.ca), "--username", user, "--password-file", str(secret)]


def assert_restored(seeder: Seeder, pushed, rename=lambda r: r) -> None:
    """Every tag, manifest (bytes and media type) and blob pushed is served again, under the same
    digests, by the registry of ``seeder``."""
    for repo, tags in pushed.tags.items():
        assert seeder.tags(rename(repo)) == sorted(tags)
        for tag, digest in tags.items():
            status, data, _ = seeder.get_manifest(rename(repo), tag)
            assert status == 200 and digest_of(data) == digest
    for digest, (repo, data, media_type) in pushed.manifests.items():
        status, got, content_type = seeder.get_manifest(rename(repo), digest)
        assert status == 200 and got == data, digest
        assert content_type == media_type
    for digest, (repo, data) in pushed.blobs.items():
        status, got = seeder.get_blob(rename(repo), digest)
        assert status == 200 and got == data, digest


@pytest.mark.slow
def test_backup_of_whole_repositories_restores_every_digest_and_tag_after_the_registry_is_emptied(
    tmp_path, repo, registry_servers, registry_pki
):
    # GIVEN a registry with a multi-arch OCI index, a Docker manifest list and an OCI artifact
    server = registry_servers("basic", {"backup": "s3cret-Bb1"})
    seeder = Seeder(server, "backup", "s3cret-Bb1")
    pushed = push_sample_images(seeder)
    url, env = repo
    creds = credentials(tmp_path, registry_pki, "backup", "s3cret-Bb1")
    # WHEN its repositories are backed up, the registry emptied and the backup restored into it
    out = steps(
        "registry-backup",
        "--repo",
        url,
        "--registry",
        server.url,
        *creds,
        "--repository",
        "proj/*",
        "--json",
        env=env,
    )
    summary = json.loads(out.stdout)
    assert summary["manifests"] == len(pushed.manifests)
    assert summary["blobs"] == len(pushed.blobs)
    # the base layer is shared by four images: stored once
    assert summary["blob_bytes"] == sum(len(d) for _, d in pushed.blobs.values())
    assert summary["image_bytes"] > summary["blob_bytes"]
    server.wipe()
    assert seeder.tags("proj/app") == []
    out = steps(
        "registry-restore",
        "--repo",
        url,
        "--registry",
        server.url,
        *creds,
        "--chunk-size",
        "1",
        "--json",
        env=env,
    )
    restored = json.loads(out.stdout)
    # THEN every tag, manifest and blob is back under the same digest
    assert_restored(seeder, pushed)
    # AND the base layer proj/tool shares with proj/app was mounted, not uploaded twice
    assert restored["blobs_mounted"] == 1
    assert restored["blobs_pushed"] == len(pushed.blobs)  # distinct digests: the shared one counted once
    # AND a second restore finds every blob already there (HEAD) and pushes none
    again = json.loads(
        steps("registry-restore", "--repo", url, "--registry", server.url, *creds, "--json", env=env).stdout
    )
    assert again["blobs_pushed"] == 0 and again["blobs_present"] > 0


@pytest.mark.slow
def test_images_by_digest_move_to_another_registry_under_token_auth_with_scoped_tokens(
    tmp_path, repo, registry_servers, registry_pki
):
    # GIVEN a source registry with Basic auth and a target registry with Bearer tokens, where the
    # restoring user may push and a reader only pull
    source = registry_servers("basic", {"backup": "pw-source-1"})
    pushed = push_sample_images(Seeder(source, "backup", "pw-source-1"), big_layer=300_000)
    app_index = pushed.tags["proj/app"]["v1"]
    target = registry_servers("token", {"restorer": ("pw-target-2", None), "reader": ("pw-read-3", {"pull"})})
    url, env = repo
    # WHEN the image a pod runs (its imageID) is backed up and restored re-homed into proj-b
    image_id = f"docker-pullable://{source.host}/proj/app@{app_index}"
    steps(
        "registry-backup",
        "--repo",
        url,
        "--registry",
        source.url,
        *credentials(tmp_path, registry_pki, "backup", "pw-source-1"),
        "--image",
        image_id,
        "--backup-id",
        "backup-shop-1",
        env=env,
    )
    # (a backup run that was never committed is no restore point unless asked for)
    uncommitted = steps(
        "registry-restore",
        "--repo",
        url,
        "--registry",
        target.url,
        *credentials(tmp_path, registry_pki, "restorer", "pw-target-2"),
        env=env,
        check=False,
    )
    assert uncommitted.returncode == 2 and "backup-shop-1, never committed" in uncommitted.stderr
    out = steps(
        "registry-restore",
        "--repo",
        url,
        "--registry",
        target.url,
        *credentials(tmp_path, registry_pki, "restorer", "pw-target-2"),
        "--rehome",
        f"{source.host}/proj={target.host}/proj-b",
        "--allow-uncommitted",
        "--json",
        env=env,
    )
    # THEN the index and both platforms are in proj-b/app under the same digests
    reader = Seeder(target, "restorer", "pw-target-2")
    status, data, content_type = reader.get_manifest("proj-b/app", app_index)
    assert status == 200 and digest_of(data) == app_index and content_type == OCI_INDEX
    for child in json.loads(data)["manifests"]:
        status, got, _ = reader.get_manifest("proj-b/app", child["digest"])
        assert status == 200 and digest_of(got) == child["digest"]
        for layer in json.loads(got)["layers"]:
            status, blob = reader.get_blob("proj-b/app", layer["digest"])
            assert status == 200 and digest_of(blob) == layer["digest"]
    # AND the reference rewrite restore-app needs is reported
    images = json.loads(out.stdout)["images"]
    assert images == [
        {"from": f"{source.host}/proj/app@{app_index}", "to": f"{target.host}/proj-b/app@{app_index}"}
    ]
    # AND tokens were asked per scope: pushes with a pull,push token, never with a pull-only one
    scopes = [s for r in target.tokens.requests for s in r["scopes"]]
    assert "repository:proj-b/app:pull,push" in scopes
    # AND a user who may only pull cannot restore: one line, non-zero exit
    refused = steps(
        "registry-restore",
        "--repo",
        url,
        "--registry",
        target.url,
        *credentials(tmp_path, registry_pki, "reader", "pw-read-3"),
        "--rehome",
        f"{source.host}/proj={target.host}/proj-c",
        "--allow-uncommitted",
        env=env,
        check=False,
    )
    assert refused.returncode == 3, refused.stderr
    assert "access refused" in refused.stderr and target.host in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
