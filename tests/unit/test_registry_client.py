"""The registry client's pieces: image references as pods report them, re-homing rules, and against a
real docker-registry, tag and catalog pagination (``n``/``last`` and ``Link``), chunked uploads and
cross-repository mounts."""

from __future__ import annotations

import os

import pytest

from steps.commands.registry_restore import parse_rehome, renamer
from steps.drivers.registry_client import RegistryClient, RegistryEndpoint
from steps.drivers.registry_reference import parse_reference
from steps.errors import UsageError
from tests.fixtures.registry import Seeder, digest_of

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        (f"docker-pullable://harbor.a:8443/proj/api@{DIGEST}", "harbor.a:8443", "proj/api", None, DIGEST),
        (f"harbor.a/proj/api:v1@{DIGEST}", "harbor.a", "proj/api", "v1", DIGEST),
        ("localhost/app", "localhost", "app", "latest", None),
        ("proj/api:1.2", "", "proj/api", "1.2", None),
        ("127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000", "a/b/c", "x", None),
    ],
)
def test_image_references_are_read_as_kubernetes_reports_them(text, host, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)


@pytest.mark.parametrize("text", ["", "Proj/API", "proj/api@sha256:zz", "proj/api:bad tag", "harbor.a/"])
def test_a_malformed_image_reference_is_a_usage_error_naming_the_option(text):
    with pytest.raises(UsageError, match=r"^--image: "):
        parse_reference(text)


def test_rehome_moves_a_host_and_path_prefix_and_leaves_others_alone():
    rules = parse_rehome(["harbor.a/proj=harbor.b/proj-b", "harbor.a=harbor.b/mirror"], "harbor.b")
    rename = renamer(rules, "harbor.a")
    assert rename("proj/api") == "proj-b/api"
    assert rename("projx/api") == "mirror/projx/api"  # a path prefix matches whole segments only
    assert renamer(rules, "other.host")("proj/api") == "proj/api"


@pytest.mark.parametrize(
    ("rule", "message"),
    [("harbor.a/proj", "expected OLD=NEW"), ("harbor.a/proj=harbor.c/proj", "but --registry is harbor.b")],
)
def test_a_rehome_to_another_registry_than_the_target_is_refused(rule, message):
    with pytest.raises(UsageError, match=message):
        parse_rehome([rule], "harbor.b")


def test_a_registry_url_with_credentials_or_a_path_is_refused():
    for url in ("https://u:p@harbor.a", "https://harbor.a/v2/", "ftp://harbor.a", "harbor.a"):
        with pytest.raises(UsageError, match=r"^--registry"):
            RegistryEndpoint(url)


@pytest.fixture
def basic_registry(registry_servers, registry_pki):
    server = registry_servers("basic", {"u": "p-registry-unit"})
    client = RegistryClient(RegistryEndpoint(server.url, str(registry_pki.ca), "u", "p-registry-unit"))
    return server, Seeder(server, "u", "p-registry-unit"), client


def test_tags_and_catalog_are_read_page_by_page(basic_registry):
    _, seeder, client = basic_registry
    layer = seeder.blob("pages/one", b"config")
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **layer},
        "layers": [],
    }
    tags = [f"t{i:02d}" for i in range(7)]
    for tag in tags:
        seeder.manifest("pages/one", tag, doc, doc["mediaType"])
    for repo in ("pages/two", "pages/three"):
        seeder.blob(repo, b"config")
        seeder.manifest(repo, "x", doc, doc["mediaType"])
    assert client.list_tags("pages/one", page=2) == tags
    assert client.catalog(page=1) == ["pages/one", "pages/three", "pages/two"]
    assert client.list_tags("pages/none", page=2) == []


def test_a_large_blob_is_uploaded_in_chunks_and_mounted_into_another_repository(basic_registry, tmp_path):
    _, seeder, client = basic_registry
    data = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = digest_of(data)
    assert not client.blob_exists("chunks/a", digest)
    client.push_blob("chunks/a", digest, str(path), chunk_size=1024 * 1024)
    assert client.blob_exists("chunks/a", digest)
    assert seeder.get_blob("chunks/a", digest) == (200, data)
    assert client.mount_blob("chunks/b", digest, "chunks/a")
    assert seeder.get_blob("chunks/b", digest) == (200, data)


def test_a_blob_pushed_under_a_wrong_digest_is_refused_by_the_registry(basic_registry, tmp_path):
    from steps.errors import PermanentError

    _, _seeder, client = basic_registry
    path = tmp_path / "blob"
    path.write_bytes(b"these bytes")
    with pytest.raises(PermanentError, match="push blob chunks/c@sha256:"):
        client.push_blob("chunks/c", digest_of(b"other bytes"), str(path))


def test_a_mount_the_registry_cannot_do_continues_as_an_upload(basic_registry, tmp_path):
    _, seeder, client = basic_registry
    data = b"not in the source repository"
    path = tmp_path / "blob"
    path.write_bytes(data)
    session = client.mount_blob("mounts/b", digest_of(data), "mounts/nowhere")
    assert isinstance(session, str)
    client.push_blob("mounts/b", digest_of(data), str(path), location=session)
    assert seeder.get_blob("mounts/b", digest_of(data)) == (200, data)
