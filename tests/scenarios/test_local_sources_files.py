"""The local stand-ins of what a source step's pod gets (workflows.local.source_files): the arguments a
local run hands to etcd-snapshot, etcd-restore, registry-backup and bucket-restore, from the pipelines the
rendered workflows are made of. No server is started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steps.api import UsageError
from workflows.local.run_context import LocalContext, pipeline_parameters
from workflows.local.runner import find_pipeline
from workflows.local.source_files import SourceFiles, parse_secret_dirs
from workflows.policy import Policy, parse_policy


def policy_of(source: dict) -> Policy:
    return parse_policy(
        {
            "apiVersion": "snapflow.io/v1alpha1",
            "kind": "ProtectionPolicy",
            "metadata": {"name": "src", "namespace": "platform"},
            "spec": {
                "source": source,
                "repository": {"url": "file:///srv/repo", "passwordSecret": {"name": "p"}},
            },
        }
    )


def args_of(tmp_path: Path, policy: Policy, pipeline: str, secrets: dict[str, str], **params: str):
    pipe = find_pipeline(policy, pipeline)
    values = pipeline_parameters(pipe, params)
    files = SourceFiles(secrets)
    files.check(pipe, values)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    ctx = LocalContext("backup-src-abcde", run_dir, run_dir / "plan.json", values, tmp_path / "mounts",
                       scratch_root=str(tmp_path / "scratch"))  # fmt: skip
    step = next(s for s in pipe.order() if s.source_pod is not None and (
        s.when is None or values.get(s.when.param) == s.when.value))  # fmt: skip
    return files.step_args(ctx, step), ctx


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_etcd_on_the_node_reads_the_host_path_here_and_reaches_the_member_on_this_machine(tmp_path):
    # GIVEN kubeadm's policy: certificates from the node, no endpoints
    policy = policy_of({"etcd": {"tls": {"hostPath": "/etc/kubernetes/pki/etcd"}}})
    # WHEN its snapshot step's arguments are made locally
    args, ctx = args_of(tmp_path, policy, "backup", {})
    # THEN the member is this machine's, the certificates this machine's directory, the scratch a new
    # temporary directory of the run (removed with it)
    assert option(args, "--etcd") == "https://127.0.0.1:2379"
    assert option(args, "--tls-dir") == "/etc/kubernetes/pki/etcd"
    scratch = option(args, "--scratch")
    assert Path(scratch).is_dir() and scratch.startswith(str(tmp_path / "scratch"))
    assert option(args, "--backup-id") == "backup-src-abcde"
    ctx.remove_scratch()
    assert not os.path.exists(scratch)


def test_etcd_restore_writes_the_data_directory_parameter(tmp_path):
    policy = policy_of({"etcd": {"tls": {"hostPath": "/etc/kubernetes/pki/etcd"}}})
    args, _ = args_of(tmp_path, policy, "restore", {}, **{"name": "cp1", "peer-url": "https://10.0.0.1:2380",
                                                          "data-dir": str(tmp_path / "etcd-new")})  # fmt: skip
    assert option(args, "--data-dir") == str(tmp_path / "etcd-new")
    assert (
        option(args, "--name") == "cp1"
        and option(args, "--initial-advertise-peer-urls") == "https://10.0.0.1:2380"
    )


def test_registry_credentials_are_links_to_the_secret_directory_and_the_user_name_is_read_from_it(tmp_path):
    # GIVEN a registry policy with a CA and credentials under non-default keys
    ca, robot = tmp_path / "ca", tmp_path / "robot"
    ca.mkdir()
    robot.mkdir()
    (ca / "bundle.pem").write_text("PEM")
    (robot / "user").write_text("robot$backup\n")
    (robot / "token").write_text("s3cret\n")
    policy = policy_of({"registry": {
        "url": "https://harbor.example.com", "caSecret": {"name": "harbor-ca", "key": "bundle.pem"},
        "credentialsSecret": {"name": "robot", "usernameKey": "user", "passwordKey": "token"},
        "repositories": ["shop/*"]}})  # fmt: skip
    # WHEN its backup step's arguments are made locally
    args, _ = args_of(tmp_path, policy, "backup", parse_secret_dirs([f"harbor-ca={ca}", f"robot={robot}"]))
    # THEN the files are where the step expects them, as links to the keys, and no password is an argument
    assert Path(option(args, "--ca")).name == "ca.crt"
    assert Path(option(args, "--ca")).resolve() == ca / "bundle.pem"
    password = Path(option(args, "--password-file"))
    assert password.is_symlink() and password.resolve() == robot / "token"
    assert option(args, "--username") == "robot$backup"
    assert not any("s3cret" in a for a in args)
    assert oct(password.parent.stat().st_mode & 0o777) == "0o700"


def test_bucket_restore_takes_the_target_bucket_and_the_secret_named_by_parameters(tmp_path):
    keys = tmp_path / "other-keys"
    keys.mkdir()
    (keys / "AWS_ACCESS_KEY_ID").write_text("id")
    (keys / "AWS_SECRET_ACCESS_KEY").write_text("secret")
    policy = policy_of({"bucket": {"endpoint": "http://127.0.0.1:9000", "bucket": "uploads",
                                   "credentialsSecret": {"name": "uploads-reader"}}})  # fmt: skip
    args, _ = args_of(tmp_path, policy, "restore", {"restore-writer": str(keys)},
                      **{"target-bucket": "uploads-restored", "target-credentials-secret": "restore-writer",
                         "dry-run": "false"})  # fmt: skip
    assert option(args, "--target") == "s3://uploads-restored"
    assert "--dry-run" not in args
    assert Path(option(args, "--target-access-key-file")).resolve() == keys / "AWS_ACCESS_KEY_ID"
    # and the policy's own Secret, which this restore does not read, is not asked for
    with pytest.raises(UsageError, match=r"--secret restore-writer=DIR: required by step bucket-restore"):
        args_of(
            tmp_path,
            policy,
            "restore",
            {},
            **{"target-credentials-secret": "restore-writer", "dry-run": "false"},
        )


def test_an_etcd_restore_without_the_member_name_is_refused_before_it_runs(tmp_path):
    policy = policy_of({"etcd": {"tls": {"hostPath": "/etc/kubernetes/pki/etcd"}}})
    with pytest.raises(UsageError, match=r"^-p name=VALUE: required by step etcd-restore$"):
        args_of(tmp_path, policy, "restore", {}, **{"peer-url": "https://10.0.0.1:2380"})


def test_secret_options_name_a_directory(tmp_path):
    with pytest.raises(UsageError, match=r"^--secret: expected NAME=DIR, got 'nodir'$"):
        parse_secret_dirs(["nodir"])
    with pytest.raises(UsageError, match=r"--secret x=/nonexistent: not a directory"):
        parse_secret_dirs(["x=/nonexistent"])
