"""A registry policy with imagesOf backs up exactly the images an app's pods run.

The pods live in the fake Kubernetes API server, the images in a real registry (Debian's
docker-registry over TLS) or in a fake one whose answers the test corrupts. The policy is rendered, its
RBAC applied and enforced, and registry-backup runs with the rendered --images-of values as the
rendered ServiceAccount: it backs up the images by their imageID digests under the tags the pod specs
name, skips a sidecar from another registry with a warning, and may read pods in the named namespace
only. Hostile input (an imageID without a digest, a registry serving other bytes for the digest) is
one line with nothing stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.drivers.kube import KubeClient, KubeError, KubeSettings
from tests.fixtures.registry import OCI_MANIFEST, Seeder, digest_of, push_sample_images
from tests.fixtures.rendered import apply_rendered
from workflows.render import render_files

ROOT = Path(__file__).resolve().parents[2]
POLICY_NS = "snapflow-registry"
APP_NS = "shop"
ACCOUNT = "snapflow-shop-images-registry-backup"
HUB_DIGEST = "sha256:" + "e" * 64


def steps(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "images-of-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    assert steps("init", "--repo", url, env=env).returncode == 0
    return url, env


def make_pod(server, namespace: str, name: str, labels: dict, containers: list, init: list = ()) -> None:
    """A pod whose containers are (name, spec image, imageID), running."""
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "initContainers": [{"name": n, "image": i} for n, i, _ in init],
                "containers": [{"name": n, "image": i} for n, i, _ in containers],
            },
        }
    )
    server.set_status(
        "pods",
        name,
        {
            "phase": "Running",
            "initContainerStatuses": [{"name": n, "image": i, "imageID": d} for n, i, d in init],
            "containerStatuses": [{"name": n, "image": i, "imageID": d} for n, i, d in containers],
        },
        namespace,
    )


def render_policy(tmp_path, registry_url: str, selector: str) -> tuple[list[dict], list[str]]:
    """The policy rendered: its objects, and the registry-backup step's --images-of values."""
    doc = {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": "shop-images", "namespace": POLICY_NS},
        "spec": {
            "source": {
                "registry": {
                    "url": registry_url,
                    "credentialsSecret": {"name": "registry-robot"},
                    "imagesOf": [{"namespace": APP_NS, "selector": selector}],
                }
            },
            "repository": {
                "url": "s3://backups/registry",
                "credentialsSecret": {"name": "snapflow-s3"},
                "passwordSecret": {"name": "snapflow-repository"},
            },
        },
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    objects = [o.obj for o in render_files([path]).ordered()]
    (backup,) = [
        o
        for o in objects
        if o["kind"] == "WorkflowTemplate" and o["metadata"]["name"] == "backup-shop-images"
    ]
    (step,) = [t for t in backup["spec"]["templates"] if t["name"] == "registry-backup"]
    args = step["container"]["args"]
    assert "automountServiceAccountToken" not in step  # it reads pods: its token is mounted
    assert step["serviceAccountName"] == ACCOUNT
    return objects, [args[i + 1] for i, a in enumerate(args) if a == "--images-of"]


def as_account(server, tmp_path) -> Path:
    token = server.service_account_token(POLICY_NS, ACCOUNT)
    return server.write_kubeconfig(tmp_path / "kubeconfig-registry-backup", token=token)


def status_of(call) -> int | None:
    try:
        call()
    except KubeError as err:
        return err.status
    return 200


@pytest.mark.slow
def test_the_images_the_pods_run_are_backed_up_as_the_rendered_account_and_restored(
    tmp_path, repo, kube_server, registry_servers, registry_pki
):
    # GIVEN a registry with proj/app (v1, latest) and proj/tool (1.0), and in namespace shop an api pod
    # running proj/app:v1 with proj/tool:1.0 as init container and a sidecar from Docker Hub, plus a pod
    # the selector leaves out
    server = registry_servers("basic", {"robot": "s3cret-Im1"})
    seeder = Seeder(server, "robot", "s3cret-Im1")
    pushed = push_sample_images(seeder)
    app_digest, tool_digest = pushed.tags["proj/app"]["v1"], pushed.tags["proj/tool"]["1.0"]
    host = server.host
    make_pod(
        kube_server,
        APP_NS,
        "api-0",
        {"app": "api"},
        [
            ("api", f"{host}/proj/app:v1", f"docker-pullable://{host}/proj/app@{app_digest}"),
            ("proxy", "envoyproxy/envoy:v1.30", f"docker.io/envoyproxy/envoy@{HUB_DIGEST}"),
        ],
        init=[("setup", f"{host}/proj/tool:1.0", f"{host}/proj/tool@{tool_digest}")],
    )
    make_pod(
        kube_server,
        APP_NS,
        "other-0",
        {"app": "other"},
        [("x", f"{host}/proj/app:latest", f"{host}/proj/app@{app_digest}")],
    )
    make_pod(
        kube_server,
        "elsewhere",
        "x-0",
        {"app": "api"},
        [("x", f"{host}/proj/app:v1", f"{host}/proj/app@{app_digest}")],
    )
    # AND the policy rendered, its RBAC applied and enforced
    objects, images_of = render_policy(tmp_path, server.url, "app=api")
    assert images_of == ["shop:app=api"]
    apply_rendered(kube_server, objects)
    kube_server.enforce_rbac = True
    kubeconfig = as_account(kube_server, tmp_path)
    url, env = repo
    secret = tmp_path / "password"
    secret.write_text("s3cret-Im1")
    creds = ["--ca", str(registry_pki.ca), "--username", "robot", "--password-file", str(secret)]

    # WHEN registry-backup runs with the rendered selection as the rendered ServiceAccount
    args = [a for v in images_of for a in ("--images-of", v)]
    proc = steps("registry-backup", "--repo", url, "--registry", server.url, *creds, *args, "--json",
                 env={**env, "KUBECONFIG": str(kubeconfig)})  # fmt: skip

    # THEN it backs up proj/app and proj/tool by the digests the pods run, under their spec's tags
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["repositories"] == 2 and summary["tags"] == 2
    assert "forbidden" not in proc.stderr.lower()
    # AND says which container it skipped, and why
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert "pod shop/api-0 container proxy" in warning and "docker.io/envoyproxy/envoy" in warning
    # AND the account may read pods in shop only: not in another namespace, and no Secret
    client = KubeClient(KubeSettings.from_env(kubeconfig=str(kubeconfig)))
    assert status_of(lambda: client.list("v1", "Pod", APP_NS)) == 200
    assert status_of(lambda: client.list("v1", "Pod", "elsewhere")) == 403
    assert status_of(lambda: client.list("v1", "Secret", APP_NS)) == 403
    assert status_of(lambda: client.list("v1", "Pod", POLICY_NS)) == 403

    # WHEN the registry is emptied and the snapshot restored
    server.wipe()
    out = steps("registry-restore", "--repo", url, "--registry", server.url, *creds, "--json", env=env)
    assert out.returncode == 0, out.stderr
    # THEN exactly the tags the pods name are back, with the same digests; latest (not run) is not
    assert seeder.tags("proj/app") == ["v1"] and seeder.tags("proj/tool") == ["1.0"]
    for repository, tag, digest in (("proj/app", "v1", app_digest), ("proj/tool", "1.0", tool_digest)):
        status, data, _ = seeder.get_manifest(repository, tag)
        assert status == 200 and digest_of(data) == digest
    images = json.loads(out.stdout)["images"]
    assert {i["from"] for i in images} == {
        f"{host}/proj/app:v1@{app_digest}",
        f"{host}/proj/tool:1.0@{tool_digest}",
    }


def _backup(tmp_path, repo, kube_server, hostile_registry, registry_pki, *extra: str):
    url, env = repo
    secret = tmp_path / "password"
    secret.write_text("p")
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig")
    return steps(
        "registry-backup", "--repo", url, "--registry", hostile_registry.url, "--ca", str(registry_pki.ca),
        "--username", "u", "--password-file", str(secret), "--images-of", f"{APP_NS}:app=api", *extra,
        env={**env, "KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip


def assert_nothing_stored(proc, repo, *words: str, code: int = 3) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    url, env = repo
    listed = steps("snapshots", "--repo", url, "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout


def test_a_manifest_whose_bytes_do_not_match_the_imageid_digest_is_refused(
    tmp_path, repo, kube_server, hostile_registry, registry_pki
):
    # GIVEN a pod running proj/app at digest D, and a registry serving other bytes for D
    host = f"127.0.0.1:{hostile_registry.port}"
    served = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode()
    asked = digest_of(b"the manifest the node pulled")
    hostile_registry.manifests[("proj/app", asked)] = (served, OCI_MANIFEST)
    make_pod(
        kube_server,
        APP_NS,
        "api-0",
        {"app": "api"},
        [("api", f"{host}/proj/app:v1", f"{host}/proj/app@{asked}")],
    )
    # WHEN its images are backed up THEN one line names the digest, and nothing is stored
    proc = _backup(tmp_path, repo, kube_server, hostile_registry, registry_pki)
    assert_nothing_stored(proc, repo, host, asked, digest_of(served), "nothing was stored")


def test_an_imageid_without_a_digest_is_refused_before_the_registry_is_asked(
    tmp_path, repo, kube_server, hostile_registry, registry_pki
):
    host = f"127.0.0.1:{hostile_registry.port}"
    make_pod(
        kube_server, APP_NS, "api-0", {"app": "api"}, [("api", f"{host}/proj/app:v1", f"{host}/proj/app:v1")]
    )
    proc = _backup(tmp_path, repo, kube_server, hostile_registry, registry_pki)
    assert_nothing_stored(proc, repo, "pod shop/api-0 container api", "names no digest")
    assert not [p for _, p, _ in hostile_registry.seen if "/manifests/" in p]


def test_pods_running_only_images_of_other_registries_are_refused(
    tmp_path, repo, kube_server, hostile_registry, registry_pki
):
    make_pod(
        kube_server,
        APP_NS,
        "api-0",
        {"app": "api"},
        [("api", "postgres:16", f"docker.io/library/postgres@{HUB_DIGEST}")],
    )
    proc = _backup(tmp_path, repo, kube_server, hostile_registry, registry_pki)
    assert proc.returncode == 2, proc.stderr
    assert (
        "run no image of 127.0.0.1" in proc.stderr
        and "pod shop/api-0 container api runs docker.io" in proc.stderr
    )


def test_a_selector_matching_no_pod_is_refused(tmp_path, repo, kube_server, hostile_registry, registry_pki):
    make_pod(
        kube_server,
        APP_NS,
        "web-0",
        {"app": "web"},
        [("web", "x.example.com/web:1", f"x.example.com/web@{HUB_DIGEST}")],
    )
    proc = _backup(tmp_path, repo, kube_server, hostile_registry, registry_pki)
    assert_nothing_stored(
        proc, repo, "--images-of shop:app=api", "no pod in namespace shop matches app=api", code=2
    )
