"""A second registry-backup takes what the previous registry snapshot holds instead of downloading it
again: requests are counted by a plain HTTP front that forwards to a real registry (Debian's
docker-registry with TLS); the second snapshot restores byte for byte; a parent entry that is not whole
is not trusted."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.registry import OCI_MANIFEST, Seeder, digest_of, push_sample_images
from tests.scenarios.test_registry_backup_restore import assert_restored, credentials

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "registry-incremental-pw"


def steps(*args: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc


class CountingFront:
    """Plain HTTP on a free port, forwarding every request to the TLS registry and counting
    ``(method, "blobs" | "manifests" | other)``."""

    def __init__(self, server, ca: Path):
        self.counts: Counter = Counter()
        context = ssl.create_default_context(cafile=str(ca))
        port = server.port
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                parts = self.path.split("?")[0].split("/")
                kind = next((k for k in ("blobs", "manifests") if k in parts), "other")
                front.counts[(self.command, kind)] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", resp.getheader("Content-Length") or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> Counter:
        out, self.counts = self.counts, Counter()
        return out

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
    steps("init", "--repo", url, env=env)
    return url, env


def backup(url, env, front, creds, *extra) -> dict:
    out = steps(
        "registry-backup", "--repo", url, "--registry", front.url, *creds, "--repository", "proj/*",
        "--json", *extra, env=env,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_second_backup_downloads_no_blob_and_a_changed_tag_fetches_only_what_is_new(
    tmp_path, repo, registry_servers, registry_pki, front_of
):
    # GIVEN a registry (behind a front that counts requests) backed up once
    server = registry_servers("basic", {"backup": "pw-inc-1"})
    seeder = Seeder(server, "backup", "pw-inc-1")
    pushed = push_sample_images(seeder, big_layer=400_000)
    front = front_of(server)
    url, env = repo
    creds = credentials(tmp_path, registry_pki, "backup", "pw-inc-1")[2:]  # http front: no --ca
    first = backup(url, env, front, creds)
    counted = front.take()
    assert counted[("GET", "blobs")] == len(pushed.blobs) == first["blobs_downloaded"]
    assert first["parent"] is None and first["blobs_reused"] == 0
    # WHEN nothing changed and it is backed up again
    second = backup(url, env, front, creds)
    counted = front.take()
    # THEN no blob and no manifest is downloaded: tags are resolved with a HEAD each
    assert counted[("GET", "blobs")] == 0 and counted[("HEAD", "blobs")] == 0
    assert counted[("GET", "manifests")] == 0
    assert counted[("HEAD", "manifests")] == sum(len(t) for t in pushed.tags.values())
    assert second["parent"] == first["snapshot"]
    assert second["blobs_reused"] == len(pushed.blobs) and second["bytes_downloaded"] == 0
    # (a manifest two tags name is resolved once per tag)
    assert second["manifests_reused"] == first["manifests_fetched"] >= len(pushed.manifests)
    assert second["manifests_fetched"] == 0
    for key in ("manifests", "blobs", "blob_bytes", "image_bytes", "tags"):
        assert second[key] == first[key], key
    # AND a tag moved to a new image (one new layer, a new config, the shared base layer)
    base = next(d for d, (r, data) in pushed.blobs.items() if r == "proj/tool" and len(data) == 200_000)
    layer = seeder.blob("proj/tool", os.urandom(70_000))
    config = seeder.blob("proj/tool", json.dumps({"architecture": "amd64", "os": "linux", "n": 2}).encode())
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [
            {"mediaType": layer_type, "digest": base, "size": 200_000},
            {"mediaType": layer_type, **layer},
        ],
    }
    new_digest, new_bytes = seeder.manifest("proj/tool", "1.0", doc, OCI_MANIFEST)
    third = backup(url, env, front, creds)
    counted = front.take()
    # THEN only the new manifest and the two new blobs are downloaded
    assert counted[("GET", "manifests")] == 1
    assert counted[("GET", "blobs")] == 2 and third["blobs_downloaded"] == 2
    assert third["bytes_downloaded"] == layer["size"] + config["size"]
    # AND the second snapshot restores byte for byte into an emptied registry
    server.wipe()
    steps(
        "registry-restore", "--repo", url, "--registry", server.url, "--snapshot", second["snapshot"],
        *credentials(tmp_path, registry_pki, "backup", "pw-inc-1"), env=env,
    )  # fmt: skip
    assert_restored(seeder, pushed)
    # AND the third holds the moved tag's new image
    server.wipe()
    steps(
        "registry-restore", "--repo", url, "--registry", server.url, "--snapshot", third["snapshot"],
        *credentials(tmp_path, registry_pki, "backup", "pw-inc-1"), env=env,
    )  # fmt: skip
    status, data, _ = seeder.get_manifest("proj/tool", "1.0")
    assert status == 200 and data == new_bytes and digest_of(data) == new_digest
    assert seeder.get_blob("proj/tool", layer["digest"])[0] == 200
    # AND --full downloads everything again
    steps("check", "--repo", url, "--read-data", "100", env=env)
    full = backup(url, env, front, creds, "--full")
    assert front.take()[("GET", "blobs")] == full["blobs_downloaded"] == full["blobs"]


@pytest.mark.slow
def test_a_parent_entry_that_is_not_whole_is_not_trusted(
    tmp_path, repo, registry_servers, registry_pki, front_of
):
    from steps.drivers.objectstore import open_store
    from steps.repository.registry_tree import RegistryParent, registry_parent
    from steps.repository.repo import Repository

    # GIVEN a registry snapshot
    server = registry_servers("basic", {"backup": "pw-inc-2"})
    pushed = push_sample_images(Seeder(server, "backup", "pw-inc-2"), big_layer=100_000)
    front = front_of(server)
    url, env = repo
    creds = credentials(tmp_path, registry_pki, "backup", "pw-inc-2")[2:]
    first = backup(url, env, front, creds)
    os.environ.setdefault("SNAPFLOW_KDF_TEST_N", "1024")
    repository = Repository.open(open_store(url), PASSWORD)
    warnings: list[str] = []
    snap = registry_parent(repository, front.url.removeprefix("http://"), warnings.append)
    assert snap is not None and snap.id == first["snapshot"] and not warnings
    parent = RegistryParent.load(repository, snap, warnings.append)
    digest, (_, data) = next(iter(pushed.blobs.items()))
    # WHEN its entries are whole THEN they are taken
    assert parent.blob_node(digest, len(data)) is not None
    # WHEN the size asked for differs, a chunk is unknown to the index, the node is missing or the
    # description does not list the digest THEN the blob is downloaded instead
    assert parent.blob_node(digest, len(data) + 1) is None
    node = parent.blobs[digest]
    parent.blobs[digest] = {**node, "content": ["00" * 32, *node["content"][1:]]}
    assert parent.blob_node(digest, len(data)) is None
    parent.blobs[digest] = {**node, "content": node["content"][:-1]}
    assert parent.blob_node(digest, len(data)) is None
    del parent.blobs[digest]
    assert parent.blob_node(digest, len(data)) is None
    other, (_, other_data) = list(pushed.blobs.items())[1]
    del parent.described["blobs"][other]
    assert parent.blob_node(other, len(other_data)) is None
    # AND a manifest whose stored bytes do not match its digest is not used
    mdigest = next(iter(pushed.manifests))
    assert parent.manifest(mdigest) is not None
    parent.manifests[mdigest] = parent.manifests[next(d for d in pushed.manifests if d != mdigest)]
    assert parent.manifest(mdigest) is None


@pytest.mark.slow
def test_under_token_auth_tags_are_resolved_with_a_head_and_nothing_is_downloaded_again(
    tmp_path, repo, registry_servers, registry_pki
):
    # GIVEN a registry with Bearer tokens, its tagged images backed up once by a user who may only pull
    server = registry_servers("token", {"writer": ("pw-inc-4", None), "reader": ("pw-inc-3", {"pull"})})
    pushed = push_sample_images(Seeder(server, "writer", "pw-inc-4"), big_layer=100_000)
    url, env = repo
    creds = credentials(tmp_path, registry_pki, "reader", "pw-inc-3")
    images = [f"--image={server.host}/{name}:{tag}" for name, tags in pushed.tags.items() for tag in tags]
    first = json.loads(steps("registry-backup", "--repo", url, "--registry", server.url, *creds, *images,
                             "--json", env=env).stdout)  # fmt: skip
    # WHEN it is backed up again
    second = json.loads(steps("registry-backup", "--repo", url, "--registry", server.url, *creds, *images,
                              "--json", env=env).stdout)  # fmt: skip
    # THEN every tag's HEAD was answered under a pull token and nothing was downloaded
    assert first["blobs_downloaded"] == len(pushed.blobs)
    assert second["parent"] == first["snapshot"]
    assert second["blobs_downloaded"] == 0 and second["manifests_fetched"] == 0
    assert second["blobs_reused"] == len(pushed.blobs)
