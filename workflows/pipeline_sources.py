"""The backup and restore pipelines of a policy with ``spec.source`` (etcd, registry, bucket).

The backup::

    <source>-backup/-snapshot  (retried on exit 75 only) ── verify
    finalize (always, after everything: the exit handler)

Its step takes ``--backup-id {{workflow.name}}`` so that verify checks what it stored. finalize reads the
plan (:func:`source_plan_for`: the source's kind, no targets, no volumes) and commits the backup record
when the newest snapshot of this backup of the source's kind was checked by the passing verify
(:func:`steps.repository.records.backup_record`); it has nothing to thaw or clean up in the cluster, so
its container gets no ServiceAccount token either. Restores take committed snapshots; ``allow-uncommitted``
(default false) also restores an etcd or registry snapshot whose backup was never committed.

Pods: a registry or bucket step calls no Kubernetes API, so its container gets no ServiceAccount token
(only Argo's executor reports outputs, with the step's account) and passes Pod Security
``restricted``; the one exception is a registry backup with ``imagesOf``, which lists the selected pods
(its token and Roles: :mod:`workflows.rbac_sources`); source credentials are Secrets mounted as files. The etcd snapshot is pinned to
control-plane nodes and reaches the member on its node (``status.hostIP``); with kubeadm's
certificates from the node (``tls.hostPath``) it runs as root with a read-only hostPath, which only
``privileged`` admits.
"""

from __future__ import annotations

from steps.api import Plan, plan_from_dict
from steps.runtime import SCRATCH_VOLUME_DIR
from workflows.pipeline import (
    Arg,
    BackupId,
    Condition,
    EnvValue,
    FileMount,
    Needs,
    NodeAddress,
    Param,
    Parameter,
    Pipeline,
    PlanFile,
    SourcePod,
    Step,
    WorkflowStatus,
)
from workflows.pipeline_notifications import with_notifications
from workflows.pipeline_settings import (
    BOOLEAN,
    app_mutex,
    finish,
    identity_args,
    percent_param,
    repository_args,
)
from workflows.policy import Policy

SOURCE_DIR = "/etc/snapflow/source"  # the source's Secrets, read-only
WORK_DIR = SCRATCH_VOLUME_DIR  # an emptyDir with a size limit: streamed snapshots and blobs
ETCD_CLIENT_PORT = 2379
REGISTRY_USER_ENV = "REGISTRY_USERNAME"
BACKUP_COMMAND = {"etcd": "etcd-snapshot", "registry": "registry-backup", "bucket": "bucket-backup"}
RESTORE_COMMAND = {"etcd": "etcd-restore", "registry": "registry-restore", "bucket": "bucket-restore"}
SOURCE_COMMANDS = frozenset(BACKUP_COMMAND.values()) | frozenset(RESTORE_COMMAND.values())


def _identity(policy: Policy) -> tuple[str, ...]:
    # the app's identity in the snapshot and its run record, as copy's (steps.commands._identity)
    return identity_args(policy)


def _etcd_backup(policy: Policy) -> tuple[tuple[Arg, ...], SourcePod]:
    etcd = policy.spec.source.etcd  # type: ignore[union-attr]
    assert etcd is not None
    endpoint: Arg = ",".join(etcd.endpoints) if etcd.endpoints else NodeAddress(ETCD_CLIENT_PORT)
    args: tuple[Arg, ...] = ("--etcd", endpoint, "--tls-dir", f"{SOURCE_DIR}/etcd")
    if etcd.server_name:
        args += ("--server-name", etcd.server_name)
    args += ("--scratch", WORK_DIR)
    tls = etcd.tls
    mount = (
        FileMount("etcd-tls", f"{SOURCE_DIR}/etcd", host_path=tls.host_path)
        if tls.host_path
        else FileMount(
            "etcd-tls",
            f"{SOURCE_DIR}/etcd",
            secret=tls.secret_name,
            items=(("ca.crt", "ca.crt"), ("tls.crt", "tls.crt"), ("tls.key", "tls.key")),
        )
    )
    pod = SourcePod(
        mounts=(mount,),
        work_size=etcd.scratch_size,
        control_plane=True,
        as_root=tls.host_path is not None,
    )
    return args, pod


def _registry_files(policy: Policy, prefix: str) -> tuple[tuple[Arg, ...], tuple[FileMount, ...]]:
    reg = policy.spec.source.registry  # type: ignore[union-attr]
    assert reg is not None
    args: tuple[Arg, ...] = ()
    mounts: list[FileMount] = []
    if reg.ca_secret:
        mounts.append(
            FileMount(
                "registry-ca",
                f"{SOURCE_DIR}/ca",
                secret=reg.ca_secret.name,
                items=((reg.ca_secret.key, "ca.crt"),),
            )
        )
        args += ("--ca", f"{SOURCE_DIR}/ca/ca.crt")
    if reg.credentials_secret:
        cs = reg.credentials_secret
        mounts.append(
            FileMount(
                "registry-credentials",
                f"{SOURCE_DIR}/credentials",
                secret=cs.name,
                items=((cs.password_key, "password"),),
            )
        )
        # the user name is no secret of its own, but stays out of the manifests: read from the Secret
        args += (
            "--username",
            EnvValue(REGISTRY_USER_ENV),
            "--password-file",
            f"{SOURCE_DIR}/credentials/password",
        )
    return (prefix, reg.url, *args), tuple(mounts)


def _registry_env(policy: Policy) -> tuple[tuple[str, str, str], ...]:
    cs = policy.spec.source.registry.credentials_secret  # type: ignore[union-attr]
    return ((REGISTRY_USER_ENV, cs.name, cs.username_key),) if cs else ()


def _bucket_files(
    policy: Policy, side: str, secret: str | None = None
) -> tuple[tuple[Arg, ...], tuple[FileMount, ...]]:
    """The options and mounts of the bucket's keys and CA; ``secret`` names another Secret of the same
    keys (the restore's target-credentials-secret parameter)."""
    bucket = policy.spec.source.bucket  # type: ignore[union-attr]
    assert bucket is not None
    args: tuple[Arg, ...] = ()
    mounts: list[FileMount] = []
    if bucket.credentials_secret:
        cs = bucket.credentials_secret
        mounts.append(
            FileMount(
                "bucket-credentials",
                f"{SOURCE_DIR}/credentials",
                secret=secret or cs.name,
                items=(
                    (cs.access_key_id_key, "access-key-id"),
                    (cs.secret_access_key_key, "secret-access-key"),
                ),
            )
        )
        args += (
            f"--{side}-access-key-file", f"{SOURCE_DIR}/credentials/access-key-id",
            f"--{side}-secret-key-file", f"{SOURCE_DIR}/credentials/secret-access-key",
        )  # fmt: skip
    if bucket.ca_bundle_secret:
        ca = bucket.ca_bundle_secret
        mounts.append(FileMount("bucket-ca", f"{SOURCE_DIR}/ca", secret=ca.name, items=((ca.key, "ca.crt"),)))
        args += (f"--{side}-ca-bundle", f"{SOURCE_DIR}/ca/ca.crt")
    if bucket.region:
        args += (f"--{side}-region", bucket.region)
    return args, tuple(mounts)


def source_backup_pipeline(policy: Policy) -> Pipeline:
    source = policy.spec.source
    assert source is not None
    kind = source.kind
    repo = repository_args(policy)
    if kind == "etcd":
        args, pod = _etcd_backup(policy)
        what = "the etcd member on the control-plane node" if not source.etcd.endpoints else "etcd"  # type: ignore[union-attr]
    elif kind == "registry":
        reg = source.registry
        assert reg is not None
        args, mounts = _registry_files(policy, "--registry")
        for pattern in reg.repositories:
            args += ("--repository", pattern)
        for image in reg.images:
            args += ("--image", image)
        for pods in reg.images_of:
            args += ("--images-of", pods.arg)
        args += ("--scratch", WORK_DIR)
        # imagesOf reads the pods through the API: the token, and get/list on pods where they run
        # (workflows.rbac_sources)
        pod = SourcePod(
            mounts=mounts,
            work_size="20Gi",
            secret_env=_registry_env(policy),
            api_token=bool(reg.images_of),
        )
        what = f"images of {reg.url}"
    else:
        bucket = source.bucket
        assert bucket is not None
        files, mounts = _bucket_files(policy, "source")
        args = ("--source-endpoint", bucket.endpoint, "--source", bucket.source_url, *files)
        if bucket.versions:
            args += ("--versions",)
        args += ("--readers", str(bucket.readers))
        pod = SourcePod(mounts=mounts)
        what = f"{bucket.source_url} at {bucket.endpoint}"
    step = Step(
        name=BACKUP_COMMAND[kind],
        command=BACKUP_COMMAND[kind],
        args=(*repo, *args, "--backup-id", BackupId(), *_identity(policy), "--json"),
        title=f"Back up {what} into the repository",
        needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
        prints_result=True,
        source_pod=pod,
    )
    verify = Step(
        name="verify",
        command="verify",
        args=(*repo, "--backup-id", BackupId(), "--read-data", Param("read-data-percent"), "--json"),
        title="Check what this backup wrote and read back a sample",
        depends=(step.name,),
        needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
        prints_result=True,
    )
    finalize_args: tuple[Arg, ...] = ("--plan", PlanFile(), "--backup-id", BackupId())
    finalize_args += ("--workflow-status", WorkflowStatus())
    finalize_args += policy.spec.anomaly.finalize_args()  # a flagged backup locks the last good one
    finalize = Step(
        name="finalize",
        command="finalize",
        args=finalize_args,
        title="Commit the backup record if everything passed",
        needs=frozenset({Needs.PLAN, Needs.REPOSITORY}),
        source_pod=SourcePod(),  # the plan and the repository only: no API token
    )
    finalize = with_notifications(policy, finalize)  # spec.notifications: --notify and its Secrets
    return finish(
        policy,
        name="backup",
        title=f"Back up {kind} {policy.name} ({policy.namespace})",
        description=(
            f"Snapflow backup of {what} ({kind}) into {policy.spec.repository.url}, then verify. "
            "The backup is committed only when every step passed."
        ),
        steps=(step, verify),
        exit_step=finalize,
        parameters=(
            percent_param(
                "read-data-percent",
                "Percent of this backup's data read back by verify (0: structure only).",
                policy.spec.verify.read_data_percent,
            ),
        ),
        mutex=app_mutex(policy),
    )


def source_restore_pipeline(policy: Policy) -> Pipeline:
    source = policy.spec.source
    assert source is not None
    kind = source.kind
    repo = repository_args(policy)
    snapshot = Parameter("snapshot", f"The {kind} snapshot: an ID, a unique prefix or latest.", "latest")
    allow = Parameter(
        "allow-uncommitted", "Also restore a snapshot whose backup was not committed.", "false", BOOLEAN
    )
    params: list[Parameter] = [snapshot]
    args: tuple[Arg, ...] = (*repo, "--snapshot", Param("snapshot"))
    if kind == "etcd":
        params += [
            Parameter(
                "node", "The control-plane node whose data directory is written (kubernetes.io/hostname)."
            ),
            Parameter("name", "This member's name (etcd --name)."),
            Parameter("peer-url", "This member's peer URL, https://NODE_IP:2380."),
            Parameter("initial-cluster", "Every member, NAME=PEER_URL,...; empty: this member alone.", ""),
            Parameter("token", "The restored cluster's token; empty: a new one (printed).", ""),
            Parameter("data-dir", "The new, empty data directory on the node.", "/var/lib/etcd-restored"),
            allow,
            Parameter(
                "allow-version-mismatch",
                "Restore with the step image's etcd tool even when its minor version is not the snapshot's"
                " (a warning, then the written database is checked; docs/user/etcd.md).",
                "false",
                BOOLEAN,
            ),
        ]
        args += (
            "--data-dir", "/snapflow/etcd-data",
            "--name", Param("name"),
            "--initial-advertise-peer-urls", Param("peer-url"),
            "--initial-cluster", Param("initial-cluster"),
            "--initial-cluster-token", Param("token"),
            "--allow-version-mismatch", Param("allow-version-mismatch"),
            "--scratch", WORK_DIR,
        )  # fmt: skip
        etcd = source.etcd
        assert etcd is not None
        pod = SourcePod(
            mounts=(
                FileMount("etcd-data", "/snapflow/etcd-data", host_path="{{workflow.parameters.data-dir}}"),
            ),
            work_size=etcd.scratch_size,
            control_plane=True,
            as_root=True,
            node_param="node",
        )
        what = "a new etcd data directory on a control-plane node"
    elif kind == "registry":
        reg = source.registry
        assert reg is not None
        files, mounts = _registry_files(policy, "--registry")
        # the registry pushed to: the host the rehome rules move to (rehome's NEW must be on it)
        target = f"https://{reg.rehome[0].to.split('/')[0]}" if reg.rehome else reg.url
        params.append(
            Parameter(
                "target-registry",
                "The registry pushed to, https://HOST[:PORT] (the policy's CA bundle and credentials apply).",
                target,
            )
        )
        files = (files[0], Param("target-registry"), *files[2:])
        args += (*files, "--chunk-size", str(reg.chunk_size_mi_b), "--scratch", WORK_DIR)
        for rule in reg.rehome:
            args += ("--rehome", f"{rule.from_}={rule.to}")
        params.append(allow)
        pod = SourcePod(mounts=mounts, work_size="20Gi", secret_env=_registry_env(policy))
        what = "the registry target-registry"
    else:
        bucket = source.bucket
        assert bucket is not None
        params += [
            Parameter("target-endpoint", "S3 endpoint to restore into.", bucket.endpoint),
            Parameter("target-bucket", "Bucket to restore into.", bucket.bucket),
            Parameter("from-prefix", "Restore only keys starting with this (empty: all).", ""),
            Parameter(
                "to-prefix",
                "Write them with this in place of from-prefix (empty: without it; repeat from-prefix to keep it).",
                "",
            ),
            Parameter("dry-run", "Only list what would change.", "true", BOOLEAN),
            Parameter(
                "versions",
                "latest: each key's object; all: every version kept, delete markers included (a target"
                " with versioning enabled; needs versions: true).",
                "latest",
                ("latest", "all"),
            ),
            Parameter(
                "as-of", "Each key as it was at this time, e.g. 2026-11-26T19:40:00Z (empty: latest).", ""
            ),
        ]
        target_secret = None
        if bucket.credentials_secret:
            cs = bucket.credentials_secret
            params.append(
                Parameter(
                    "target-credentials-secret",
                    f"Secret with the target's access key pair (keys {cs.access_key_id_key} and "
                    f"{cs.secret_access_key_key}), in the namespace the workflow runs in.",
                    cs.name,
                )
            )
            target_secret = "{{workflow.parameters.target-credentials-secret}}"
        files, mounts = _bucket_files(policy, "target", target_secret)
        args += (
            "--bucket", bucket.bucket,
            "--target-endpoint", Param("target-endpoint"),
            "--target", "s3://" + "{{workflow.parameters.target-bucket}}",
            "--from-prefix", Param("from-prefix"),
            "--to-prefix", Param("to-prefix"),
            "--versions", Param("versions"),
            "--as-of", Param("as-of"),
            *files,
        )  # fmt: skip
        pod = SourcePod(mounts=mounts)
        what = "a bucket"
    command = RESTORE_COMMAND[kind]
    steps: tuple[Step, ...]
    base = Step(
        name=command,
        command=command,
        args=(*args, "--json"),
        title=f"Restore the {kind} snapshot into {what}",
        needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
        source_pod=pod,
    )
    if kind == "bucket":
        steps = (
            Step(**{**base.__dict__, "when": _when("dry-run", "false")}),
            Step(**{**base.__dict__, "name": f"{command}-dry-run", "args": (*args, "--dry-run", "--json"),
                    "title": base.title + " (dry run: list only)", "when": _when("dry-run", "true")}),
        )  # fmt: skip
    else:
        steps = (
            Step(**{**base.__dict__, "when": _when("allow-uncommitted", "false")}),
            Step(**{**base.__dict__, "name": f"{command}-uncommitted",
                    "args": (*args, "--allow-uncommitted", "--json"), "when": _when("allow-uncommitted", "true")}),
        )  # fmt: skip
    return finish(
        policy,
        name="restore",
        title=f"Restore {kind} {policy.name} ({policy.namespace})",
        description=f"Restore a {kind} snapshot of {policy.spec.repository.url} into {what}.",
        steps=steps,
        parameters=tuple(params),
        mutex=app_mutex(policy),
    )


def source_plan_for(policy: Policy) -> Plan:
    """The plan JSON of a source policy (what finalize's ``--plan FILE`` holds): the source's kind, the
    policy as the backup's owner, the repository; no targets, no volumes, no credential."""
    spec = policy.spec
    assert spec.source is not None
    return plan_from_dict(
        {
            "app": {
                "namespace": policy.namespace,
                "name": policy.app,
                "cluster": spec.cluster,
                "policy": policy.name,
            },
            "repository": {"url": spec.repository.url, "endpoint": spec.repository.endpoint},
            "source": {"kind": spec.source.kind, "name": policy.name},
        },
        f"plan of policy {policy.name}",
    )


def _when(param: str, value: str) -> Condition:
    return Condition(param, value)


def source_pipelines(policy: Policy) -> list[Pipeline]:
    """The pipelines of a source policy: backup, restore, check and init (no restore-app; no prune
    pipeline yet: the policy refuses a prune schedule with spec.source)."""
    from workflows.pipelines import check_pipeline, init_pipeline

    return [
        source_backup_pipeline(policy),
        source_restore_pipeline(policy),
        check_pipeline(policy),
        init_pipeline(policy),
    ]
