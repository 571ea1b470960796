"""A registry that lies or refuses: each case is one line naming the registry, a non-zero exit and no
snapshot in the repository. A fake registry over TLS serves crafted answers; wrong credentials and an
unknown CA are tried against a real docker-registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import OCI_INDEX, OCI_MANIFEST, BlobHost, Seeder, digest_of, push_sample_images

ROOT = Path(__file__).resolve().parents[2]


def steps(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "hostile-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    assert steps("init", "--repo", url, env=env).returncode == 0
    return url, env


def backup(tmp_path, repo, registry_url: str, ca, *selection: str, user="u", password="p", extra_env=None):
    url, env = repo
    secret = tmp_path / "password"
    secret.write_text(password)
    return steps(
        "registry-backup",
        "--repo",
        url,
        "--registry",
        registry_url,
        "--ca",
        str(ca),
        "--username",
        user,
        "--password-file",
        str(secret),
        *selection,
        env={**env, **(extra_env or {})},
    )


def assert_refused(proc, repo, *words: str, code: int = 3) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    url, env = repo
    listed = steps("snapshots", "--repo", url, "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout


def image(layer: bytes) -> tuple[bytes, dict]:
    config = b'{"architecture":"amd64","os":"linux"}'
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(layer),
                "size": len(layer),
            }
        ],
    }
    return json.dumps(doc).encode(), {digest_of(config): config, digest_of(layer): layer}


def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused(
    tmp_path, repo, hostile_registry, registry_pki
):
    # GIVEN a registry serving a layer with one byte changed
    manifest, blobs = image(b"layer bytes " * 1000)
    hostile_registry.manifests[("proj/app", "v1")] = (manifest, OCI_MANIFEST)
    hostile_registry.blobs.update(blobs)
    layer = json.loads(manifest)["layers"][0]["digest"]
    hostile_registry.blobs[layer] = b"layer bytes " * 999 + b"LAYER bytes "
    # WHEN it is backed up THEN the blob is named and nothing is stored
    proc = backup(tmp_path, repo, hostile_registry.url, registry_pki.ca, "--image", "proj/app:v1")
    assert_refused(proc, repo, f"127.0.0.1:{hostile_registry.port}", layer, "nothing was stored")


def test_a_manifest_that_is_not_json_is_refused(tmp_path, repo, hostile_registry, registry_pki):
    hostile_registry.manifests[("proj/app", "v1")] = (b"<html>not a manifest</html>", OCI_MANIFEST)
    proc = backup(tmp_path, repo, hostile_registry.url, registry_pki.ca, "--image", "proj/app:v1")
    assert_refused(proc, repo, "proj/app:v1", "not a JSON object")


def test_a_manifest_served_under_another_digest_is_refused(tmp_path, repo, hostile_registry, registry_pki):
    manifest, _ = image(b"x" * 100)
    asked = digest_of(b"another manifest")
    hostile_registry.manifests[("proj/app", asked)] = (manifest, OCI_MANIFEST)
    proc = backup(tmp_path, repo, hostile_registry.url, registry_pki.ca, "--image", f"proj/app@{asked}")
    assert_refused(proc, repo, asked, digest_of(manifest))


def test_a_manifest_list_that_references_itself_is_refused(tmp_path, repo, hostile_registry, registry_pki):
    # GIVEN an index (tag "self") listing a child that the registry serves as the index itself: digests
    # make a true cycle impossible to build, so a registry can only claim one by serving a list as its
    # own child
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": digest_of(b"child"), "size": 5}],
    }
    data = json.dumps(doc).encode()
    hostile_registry.manifests[("proj/app", "self")] = (data, OCI_INDEX)
    hostile_registry.manifests[("proj/app", digest_of(b"child"))] = (data, OCI_INDEX)
    # WHEN it is backed up THEN the walk stops at the child, named, and nothing is stored
    proc = backup(tmp_path, repo, hostile_registry.url, registry_pki.ca, "--image", "proj/app:self")
    assert_refused(proc, repo, f"proj/app@{digest_of(b'child')}", digest_of(data), "nothing was stored")


def test_a_blob_redirected_to_another_host_gets_no_credentials(
    tmp_path, repo, hostile_registry, registry_pki
):
    # GIVEN a registry that sends blob downloads to another host (object storage)
    manifest, blobs = image(b"redirected layer " * 500)
    hostile_registry.manifests[("proj/app", "v1")] = (manifest, OCI_MANIFEST)
    other = BlobHost(registry_pki, blobs).start()
    try:
        hostile_registry.redirect_to = other.url
        # WHEN it is backed up
        proc = backup(tmp_path, repo, hostile_registry.url, registry_pki.ca, "--image", "proj/app:v1")
    finally:
        other.stop()
    # THEN the blobs come from the other host, which never saw the registry's credentials
    assert proc.returncode == 0, proc.stderr
    assert len(other.seen) == 2
    assert all("Authorization" not in h for h in other.seen)
    assert any("Authorization" in h for _, _, h in hostile_registry.seen)


@pytest.mark.slow
def test_wrong_credentials_and_an_unknown_ca_are_named(tmp_path, repo, registry_servers, registry_pki):
    server = registry_servers("basic", {"backup": "right-pw"})
    push_sample_images(Seeder(server, "backup", "right-pw"), big_layer=1000)
    # wrong password
    proc = backup(
        tmp_path,
        repo,
        server.url,
        registry_pki.ca,
        "--repository",
        "proj/*",
        user="backup",
        password="wrong-pw",
    )
    assert_refused(proc, repo, server.host, "access refused")
    assert "wrong-pw" not in proc.stderr
    # a CA that did not sign the registry's certificate; the environment's CA variables point at the
    # right one, and must not win over --ca
    right = {"SSL_CERT_FILE": str(registry_pki.ca), "REQUESTS_CA_BUNDLE": str(registry_pki.ca)}
    proc = backup(
        tmp_path,
        repo,
        server.url,
        registry_pki.other_ca,
        "--repository",
        "proj/*",
        user="backup",
        password="right-pw",
        extra_env=right,
    )
    assert_refused(proc, repo, server.host, "not trusted", "--ca")


@pytest.mark.slow
def test_a_damaged_registry_backup_pushes_nothing(tmp_path, repo, registry_servers, registry_pki):
    # GIVEN a registry snapshot whose layer bytes do not match the digest its manifest names
    stage = tmp_path / "stage"
    manifest, blobs = image(b"good layer " * 100)
    layer = json.loads(manifest)["layers"][0]["digest"]
    blobs[layer] = b"evil layer " * 100
    for kind, items in (("manifests", {digest_of(manifest): manifest}), ("blobs", blobs)):
        (stage / kind / "sha256").mkdir(parents=True)
        for digest, data in items.items():
            (stage / kind / "sha256" / digest.split(":")[1]).write_bytes(data)
    desc = {
        "kind": "registry",
        "format": 1,
        "registry": "harbor.a",
        "repositories": {"proj/app": {"tags": {"v1": digest_of(manifest)}, "digests": []}},
        "manifests": {digest_of(manifest): {"media_type": OCI_MANIFEST, "size": len(manifest)}},
        "blobs": {d: {"size": len(b)} for d, b in blobs.items()},
    }
    (stage / "registry.json").write_text(json.dumps(desc))
    url, env = repo
    made = steps("copy", "--repo", url, "--source", str(stage), "--tag", "kind=registry", env=env)
    assert made.returncode == 0, made.stderr
    server = registry_servers("basic", {"r": "pw-r"})
    secret = tmp_path / "pw"
    secret.write_text("pw-r")
    # WHEN it is restored THEN the layer is named and the registry is left untouched
    proc = steps(
        "registry-restore",
        "--repo",
        url,
        "--registry",
        server.url,
        "--ca",
        str(registry_pki.ca),
        "--username",
        "r",
        "--password-file",
        str(secret),
        env=env,
    )
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert layer in proc.stderr and "nothing was pushed" in proc.stderr
    status, _, body = Seeder(server, "r", "pw-r").call("GET", "/v2/_catalog", "registry:catalog:*")
    assert status == 200 and json.loads(body)["repositories"] == []


def test_an_unreachable_registry_is_worth_a_retry(tmp_path, repo, registry_pki):
    from workflows.demo.seaweedfs import free_port

    closed = f"https://127.0.0.1:{free_port()}"
    proc = backup(tmp_path, repo, closed, registry_pki.ca, "--image", "proj/app:v1")
    assert_refused(proc, repo, closed.removeprefix("https://"), "cannot reach", code=75)
