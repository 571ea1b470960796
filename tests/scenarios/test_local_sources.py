"""``snapflow run --local`` of policies with ``spec.source``: the backup pipeline of the rendered workflow
(the source's step, verify, finalize) as local processes against real servers — two SeaweedFS servers
(the repository's and a bucket's), Debian's docker-registry and etcd with client certificates made in
the test — then the committed backup record, a restore through the restore pipeline and a comparison;
and a source that cannot be reached: a non-zero exit, one line naming it, nothing committed."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.bucket_source import unique_bucket
from tests.fixtures.etcd import make_pki
from tests.fixtures.registry import Seeder, push_sample_images
from tests.scenarios.test_bucket_backup_restore import put, read_all
from tests.scenarios.test_registry_backup_restore import assert_restored
from workflows.demo.seaweedfs import free_port
from workflows.local.repository_access import open_policy_repository
from workflows.local.runner import RunSettings, run_local
from workflows.local.view import TerminalView
from workflows.policy import Policy, load_policies


def write_policy(
    path: Path, name: str, source: dict[str, Any], repo_url: str, endpoint: str | None
) -> Policy:
    repository: dict[str, Any] = {"url": repo_url, "passwordSecret": {"name": "unused-locally"}}
    if endpoint:
        repository.update(endpoint=endpoint, pathStyle=True)
    doc = {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": name, "namespace": "platform"},
        "spec": {
            "cluster": "test",
            "source": source,
            "repository": repository,
            "verify": {"readDataPercent": 100},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_policies([path])[0].policy


def secret_dir(base: Path, name: str, files: dict[str, str | bytes]) -> str:
    """A Secret as Kubernetes mounts it: one file per key."""
    directory = base / "secrets" / name
    directory.mkdir(parents=True)
    for key, value in files.items():
        (directory / key).write_bytes(value.encode() if isinstance(value, str) else value)
    return str(directory)


def run(policy: Policy, settings: RunSettings, pipeline: str = "backup", **params: str):
    out = io.StringIO()
    result = run_local(
        policy, pipeline, with_params(settings, params), TerminalView(out, tty=False, colour=False)
    )
    return result, out.getvalue()


def with_params(settings: RunSettings, params: dict[str, str]) -> RunSettings:
    return dataclasses.replace(settings, params=params)


def committed_backups(policy: Policy, env: dict[str, str] | None = None) -> list[dict]:
    import os

    repo = open_policy_repository(policy, {**os.environ, **(env or {})})
    return [r.data for r in repo.list_records("backups")]


def init_repository(policy: Policy, settings: RunSettings) -> None:
    result, output = run(policy, settings, "init")
    assert result.ok, output


def assert_committed(policy: Policy, result, output: str, kind: str) -> dict:
    assert result.ok and result.exit_code() == 0, output
    assert [s.name for s in result.all_steps()] == [f"{result.steps[0].name}", "verify", "finalize"]
    assert f"Backup {result.backup_id} committed: a restore point." in output
    records = committed_backups(policy)
    assert [r["backup_id"] for r in records] == [result.backup_id]
    record = records[0]
    assert record["source"]["kind"] == kind
    assert record["app"]["policy"] == policy.name and record["verify"]["ok"] is True
    assert record["snapshots"] == [record["source"]["snapshot"]]
    return record


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "local-sources-pw")
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    return RunSettings(state_dir=tmp_path / "state", backoff_s=0.05, scratch_dir=str(tmp_path / "scratch"))


# ------------------------------------------------------------------------------------------------ bucket


def test_a_bucket_policy_backs_up_commits_and_restores_into_another_bucket(
    tmp_path, s3_repo, s3_server, bucket_source_server, source_client, settings
):
    # GIVEN a bucket on one S3 server, a repository on another, and the bucket's keys as a Secret directory
    source_bucket, target_bucket = unique_bucket("uploads"), unique_bucket("restored")
    source = source_client(source_bucket)
    objects = {f"images/{i:03d}.bin": bytes([i]) * (1000 + 37 * i) for i in range(40)}
    objects["images/nested/deep/readme.txt"] = b"hello"
    objects["other/skipped.txt"] = b"outside the prefix"
    for key, data in objects.items():
        put(source, key, data, "application/octet-stream", {"origin": "test"})
    keys = secret_dir(
        tmp_path,
        "uploads-reader",
        {
            "AWS_ACCESS_KEY_ID": bucket_source_server.access_key,
            "AWS_SECRET_ACCESS_KEY": bucket_source_server.secret_key,
        },
    )
    policy = write_policy(
        tmp_path / "bucket.yaml",
        "uploads",
        {
            "bucket": {
                "endpoint": bucket_source_server.endpoint,
                "bucket": source_bucket,
                "prefix": "images/",
                "credentialsSecret": {"name": "uploads-reader"},
            }
        },
        s3_repo,
        s3_server.endpoint,
    )
    settings.secret_dirs = {"uploads-reader": keys}
    init_repository(policy, settings)

    # WHEN its backup pipeline runs locally
    result, output = run(policy, settings)

    # THEN the bucket step, verify and finalize ran, the backup is committed as a bucket source's
    record = assert_committed(policy, result, output, "bucket")
    assert (
        result.steps[0].name == "bucket-backup"
        and result.steps[0].result["snapshot"] == record["snapshots"][0]
    )
    # and no key file was copied into the run's state: the step saw links to the Secret directory
    links = list((settings.state_dir / "runs" / result.backup_id / "secrets").rglob("*"))
    assert links and all(p.is_symlink() or p.is_dir() for p in links)

    # WHEN the restore pipeline runs with its default (a dry run), then for real into another bucket
    target = source_client(target_bucket)
    dry, output = run(policy, settings, "restore", **{"target-bucket": target_bucket})
    assert dry.ok, output
    assert [s.status for s in dry.steps] == ["Skipped", "Succeeded"]
    assert target.list() == []
    restored, output = run(
        policy, settings, "restore", **{"target-bucket": target_bucket, "dry-run": "false"}
    )

    # THEN the target holds every object under the prefix, byte for byte, and nothing else
    assert restored.ok, output
    expected = {k: v for k, v in read_all(source).items() if k.startswith("images/")}
    assert len(expected) == 41 and read_all(target) == expected


@pytest.mark.parametrize("kind", ["bucket", "registry", "etcd"])
def test_an_unreachable_source_fails_in_one_line_and_commits_nothing(kind, tmp_path, settings):
    # GIVEN a policy whose source is at an address nothing listens on (certificates valid for etcd)
    address = f"127.0.0.1:{free_port()}"
    source: dict[str, Any] = {
        "bucket": {"bucket": {"endpoint": f"http://{address}", "bucket": "uploads"}},
        "registry": {"registry": {"url": f"https://{address}", "repositories": ["proj/*"]}},
        "etcd": {"etcd": {"endpoints": [f"https://{address}"], "tls": {"secretName": "etcd-client"}}},
    }[kind]
    if kind == "etcd":
        pki = make_pki(tmp_path / "pki")
        settings.secret_dirs = {
            "etcd-client": secret_dir(
                tmp_path, "etcd-client", {"ca.crt": pki.ca.read_bytes(), "tls.crt": pki.client_cert.read_bytes(),
                                          "tls.key": pki.client_key.read_bytes()}
            )
        }  # fmt: skip
    policy = write_policy(tmp_path / "policy.yaml", "gone", source, f"file://{tmp_path / 'repo'}", None)
    init_repository(policy, settings)

    # WHEN its backup runs (the step exits 75 every time: retried once, then failed)
    result, output = run(policy, dataclasses.replace(settings, retry_limit=1))

    # THEN the run fails with the step's exit code, one line names the source's address, nothing is
    # committed, and the finalizer ran
    assert not result.ok and result.exit_code() == 75, output
    failed = [line for line in output.splitlines() if line.startswith("Failed:")]
    assert len(failed) == 1 and address in failed[0], output
    assert "Traceback" not in output
    assert f"Backup {result.backup_id} NOT committed" in output
    assert [s.status for s in result.all_steps()] == ["Failed", "Omitted", "Succeeded"]
    assert result.steps[0].attempts == 2
    assert committed_backups(policy) == []


# ---------------------------------------------------------------------------------------------- registry


def test_a_registry_policy_backs_up_commits_and_restores_every_digest_into_the_emptied_registry(
    tmp_path, registry_servers, registry_pki, settings
):
    # GIVEN a registry with htpasswd users and TLS of a CA made in the test, its CA and credentials as
    # Secret directories, and a repository in a local directory
    server = registry_servers("basic", {"backup": "s3cret-Bb1"})
    seeder = Seeder(server, "backup", "s3cret-Bb1")
    pushed = push_sample_images(seeder, big_layer=300_000)
    ca = secret_dir(tmp_path, "registry-ca", {"ca.crt": registry_pki.ca.read_bytes()})
    creds = secret_dir(tmp_path, "registry-robot", {"username": "backup\n", "password": "s3cret-Bb1\n"})
    policy = write_policy(
        tmp_path / "registry.yaml",
        "images",
        {
            "registry": {
                "url": server.url,
                "caSecret": {"name": "registry-ca"},
                "credentialsSecret": {"name": "registry-robot"},
                "repositories": ["proj/*"],
            }
        },
        f"file://{tmp_path / 'repo'}",
        None,
    )
    settings.secret_dirs = {"registry-ca": ca, "registry-robot": creds}
    init_repository(policy, settings)

    # WHEN its backup pipeline runs locally
    result, output = run(policy, settings)

    # THEN it is committed as a registry source's backup, and no password reached a command line
    assert_committed(policy, result, output, "registry")
    argv = (
        settings.state_dir / "runs" / result.backup_id / "steps" / "registry-backup" / "argv.json"
    ).read_text()
    assert "s3cret-Bb1" not in argv

    # WHEN the registry is emptied and the restore pipeline runs (into the policy's registry by default)
    server.wipe()
    assert seeder.tags("proj/app") == []
    restored, output = run(policy, settings, "restore")

    # THEN every tag, manifest and blob is served again under the same digests
    assert restored.ok, output
    assert_restored(seeder, pushed)


def test_the_command_line_backs_up_a_registry_with_its_secrets_as_directories(
    tmp_path, registry_servers, registry_pki, snapflow
):
    # GIVEN a registry with one image, its CA and credentials as Secret directories, a policy file
    server = registry_servers("basic", {"backup": "s3cret-Bb1"})
    push_sample_images(Seeder(server, "backup", "s3cret-Bb1"), big_layer=100_000)
    ca = secret_dir(tmp_path, "registry-ca", {"ca.crt": registry_pki.ca.read_bytes()})
    creds = secret_dir(tmp_path, "registry-robot", {"username": "backup", "password": "s3cret-Bb1"})
    source = {"registry": {"url": server.url, "caSecret": {"name": "registry-ca"},
                           "credentialsSecret": {"name": "registry-robot"}, "images": [f"{server.host}/proj/tool:1.0"]}}  # fmt: skip
    write_policy(tmp_path / "registry.yaml", "tool", source, f"file://{tmp_path / 'repo'}", None)
    env = {"SNAPFLOW_PASSWORD": "local-sources-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    common = ["--local", "--state-dir", str(tmp_path / "state"), "--plain"]
    init = snapflow("run", str(tmp_path / "registry.yaml"), *common, "--pipeline", "init", env=env)
    assert init.returncode == 0, init.stderr
    # WHEN snapflow run backs it up, the summary as JSON
    proc = snapflow("run", str(tmp_path / "registry.yaml"), *common, "--json",
                    "--secret", f"registry-ca={ca}", "--secret", f"registry-robot={creds}", env=env)  # fmt: skip
    # THEN it exits 0 with the backup committed, and the live view went to stderr
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["committed"] is True and summary["status"] == "Succeeded"
    assert [s["name"] for s in summary["steps"]] == ["registry-backup", "verify", "finalize"]
    assert "committed: a restore point" in proc.stderr


# -------------------------------------------------------------------------------------------------- etcd


def test_an_etcd_policy_backs_up_commits_and_restores_a_data_directory_an_etcd_starts_on(
    tmp_path, etcd_server, etcd_servers, settings
):
    # GIVEN an etcd requiring client certificates, with keys written, deleted and rewritten
    etcd_server.put_many({f"registry/pods/ns-{i % 7}/pod-{i:04d}": f"spec {i} " * 10 for i in range(300)})
    for i in range(20):
        etcd_server.put("leases/leader", f"term {i}")
    etcd_server.delete("registry/pods/ns-3/pod-0003")
    pki = etcd_server.pki
    tls = secret_dir(
        tmp_path,
        "etcd-client",
        {
            "ca.crt": pki.ca.read_bytes(),
            "tls.crt": pki.client_cert.read_bytes(),
            "tls.key": pki.client_key.read_bytes(),
        },
    )
    policy = write_policy(
        tmp_path / "etcd.yaml",
        "cluster-etcd",
        {"etcd": {"endpoints": [etcd_server.url], "tls": {"secretName": "etcd-client"}}},
        f"file://{tmp_path / 'repo'}",
        None,
    )
    settings.secret_dirs = {"etcd-client": tls}
    init_repository(policy, settings)

    # WHEN its backup pipeline runs locally
    result, output = run(policy, settings)

    # THEN it is committed as an etcd source's backup, and the snapshot's scratch space is gone
    record = assert_committed(policy, result, output, "etcd")
    assert result.steps[0].name == "etcd-snapshot"
    summary = result.steps[0].result
    assert isinstance(summary, dict) and summary["snapshot"] == record["source"]["snapshot"]
    assert list(Path(settings.scratch_dir).iterdir()) == []
    revision = summary["revision"]

    # WHEN the restore pipeline writes a new data directory and an etcd starts on it
    restored = etcd_servers(name="restored-1", data_dir=tmp_path / "restored", token="restored-token")
    done, output = run(
        policy,
        settings,
        "restore",
        **{
            "name": "restored-1",
            "peer-url": restored.peer_url,
            "token": "restored-token",
            "data-dir": str(restored.data_dir),
        },
    )
    assert done.ok, output
    restored.start()

    # THEN it holds every key and value of the source at the snapshot's revision
    restored_revision, got = restored.read_all()
    assert restored_revision == revision
    assert got == etcd_server.read_all(revision)[1]
    assert b"registry/pods/ns-3/pod-0003" not in got and got[b"leases/leader"] == b"term 19"


# --------------------------------------------------------------------------------------- the command line


def test_a_secret_the_policy_names_but_the_command_line_does_not_give_is_one_line(tmp_path, snapflow):
    # GIVEN the example bucket policy, whose keys are in Secret uploads-reader
    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "sources" / "bucket.yaml"
    state = tmp_path / "state"
    # WHEN it runs locally without --secret
    proc = snapflow("run", str(example), "--local", "--state-dir", str(state), env={"SNAPFLOW_PASSWORD": "x"})
    # THEN one line says which option is missing and why, exit 2, and nothing started
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --secret uploads-reader=DIR: required by step bucket-backup, which reads Secret uploads-reader"
        " at /etc/snapflow/source/credentials (DIR holds one file per key of the Secret)"
    ]
    assert not (state / "runs").exists() or not any((state / "runs").iterdir())
    # WHEN a directory is given that lacks one of the keys
    partial = Path(secret_dir(tmp_path, "uploads-reader", {"AWS_ACCESS_KEY_ID": "AKIA-not-real"}))
    proc = snapflow(
        "run", str(example), "--local", "--state-dir", str(state), "--secret", f"uploads-reader={partial}",
        env={"SNAPFLOW_PASSWORD": "x"},
    )  # fmt: skip
    # THEN the missing key is named, never the value of the other
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --secret uploads-reader={partial}: {partial}/AWS_SECRET_ACCESS_KEY is missing"
        " (key AWS_SECRET_ACCESS_KEY of Secret uploads-reader)"
    ]
    assert "AKIA-not-real" not in proc.stdout + proc.stderr


def test_restore_pipeline_of_an_app_policy_points_at_snapflow_restore(tmp_path, snapflow):
    # GIVEN an app policy on a local directory
    data = tmp_path / "data"
    data.mkdir()
    policy = tmp_path / "app.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "snapflow.io/v1alpha1",
                "kind": "ProtectionPolicy",
                "metadata": {"name": "files", "namespace": "local"},
                "spec": {
                    "volumes": [{"path": str(data), "name": "data"}],
                    "repository": {"url": f"file://{tmp_path / 'repo'}", "passwordSecret": {"name": "x"}},
                },
            }
        )
    )
    # WHEN its restore pipeline is asked of snapflow run
    proc = snapflow("run", str(policy), "--local", "--pipeline", "restore", env={"SNAPFLOW_PASSWORD": "x"})
    # THEN one line points at the command that restores an app's volume
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert re.search(r"snapflow restore POLICY --local", proc.stderr)
    shutil.rmtree(tmp_path / "repo", ignore_errors=True)
