"""The pipelines of a policy (backup, restore, restore-app, check, prune, init) and the plan its steps
read.

The backup pipeline, as DESIGN draws it::

    capture ───────────────────────────────────────────────┐
    consistent-point ─┬─ prepare-clone-<v1> ── copy-<v1> ──┼─ verify
                      └─ prepare-clone-<v2> ── copy-<v2> ──┘
    finalize (always, after everything: the exit handler)

The restores are built in :mod:`workflows.pipeline_restore`; what every step's pod gets from the
policy in :mod:`workflows.pipeline_settings`. :func:`plan_for` turns a policy into the plan JSON that
steps read (``--plan FILE``).
"""

from __future__ import annotations

from dataclasses import replace

from steps.api import (
    AppRef,
    CaptureSpec,
    FreezeSpec,
    Plan,
    RepositoryRef,
    SnapshotSpec,
    Volume,
    plan_from_dict,
)
from workflows.names import Names
from workflows.pipeline import (
    Arg,
    BackupId,
    CloneOf,
    Condition,
    CopyResultField,
    Needs,
    Output,
    OutputFile,
    Param,
    Parameter,
    Pipeline,
    PlanFile,
    Retry,
    ScratchPath,
    ScratchSpace,
    Step,
    VerdictField,
    VolumeSourcePath,
    WorkflowStatus,
)
from workflows.pipeline_notifications import with_notifications
from workflows.pipeline_restore import restore_app_pipeline, restore_pipeline
from workflows.pipeline_settings import (
    BOOLEAN,
    app_mutex,
    finish,
    identity_args,
    object_lock_args,
    percent_param,
    prune_grace_seconds,
    repository_args,
    repository_mutex,
)
from workflows.policy import BlockTracking, Policy

RESTORE_TEST_PARAM = "restore-test"
CONSISTENT_POINT_OUT = "consistent-point.json"


def block_tracking_args(policy: Policy, tracking: BlockTracking) -> tuple[str, ...]:
    """The copy's changed-block tracking flags: the snapshot is the one its clone was made from, in the
    namespace the copy pod runs in (prepare-clone binds it there with a mover namespace), and the token
    the service checks is the copy's own ServiceAccount's (TokenRequest; the sidecar reviews it and asks
    whether it may get VolumeSnapshots there)."""
    names = Names.of(policy)
    return (
        "--cbt-driver", tracking.driver or "auto",
        "--cbt-snapshot", names.workflow_namespace,
        "--cbt-service-account", names.step_account("copy"),
        "--full-read-every", str(tracking.full_read_every),
    )  # fmt: skip


def backup_pipeline(policy: Policy) -> Pipeline:
    spec = policy.spec
    local = policy.is_local
    repo = repository_args(policy)
    steps: list[Step] = []
    roots: list[str] = []
    if not local:
        capture_args: tuple[Arg, ...] = (*repo, "--namespace", policy.namespace)
        if spec.selector:
            capture_args += ("--selector", spec.selector)
        if not spec.capture.secrets:
            capture_args += ("--no-secrets",)
        capture_args += ("--backup-id", BackupId(), "--cluster", spec.cluster, "--app", policy.app,
                         "--policy", policy.name)  # fmt: skip
        steps.append(
            Step(
                name="capture",
                command="capture",
                args=capture_args,
                title="Export the app's Kubernetes objects",
                needs=frozenset({Needs.REPOSITORY, Needs.KUBERNETES}),
            )
        )
        roots.append("capture")
    steps.append(
        Step(
            name="consistent-point",
            command="consistent-point",
            args=("--plan", PlanFile(), "--backup-id", BackupId(), "--out", OutputFile("verdict")),
            title="Freeze, snapshot every volume, thaw",
            retry=Retry.NEVER,
            needs=frozenset({Needs.PLAN, Needs.REPOSITORY, Needs.KUBERNETES}),
            holds_freeze=True,
            output_files=(("verdict", CONSISTENT_POINT_OUT),),
        )
    )
    copies: list[str] = []
    for vol in spec.volumes:
        v = vol.volume_name
        copy_depends = ("consistent-point",)
        if not local:
            clone_args: tuple[Arg, ...] = (
                "--namespace", policy.namespace,
                "--pvc", vol.pvc or "",
                "--volume", v,
                "--app", policy.app,
                "--backup-id", BackupId(),
                "--timeout", str(spec.snapshot.timeout_seconds),
                "--out", OutputFile("claim"),
            )  # fmt: skip
            if spec.movers.namespace:
                # the copy pod runs in the mover namespace: the snapshot is bound there, the clone made there
                clone_args += ("--mover-namespace", spec.movers.namespace)
            steps.append(
                Step(
                    name=f"prepare-clone-{v}",
                    command="prepare-clone",
                    # The VolumeSnapshot is found by its labels (backup ID and volume), also for the
                    # members of a VolumeGroupSnapshot, whose names the CSI controller chooses.
                    args=clone_args,
                    title=f"Wait for the snapshot of {v} and clone it into a PVC",
                    depends=("consistent-point",),
                    needs=frozenset({Needs.KUBERNETES}),
                    volume=v,
                    output_files=(("claim", "claim"),),
                )
            )
            copy_depends = (f"prepare-clone-{v}",)
        copy_args: tuple[Arg, ...] = (
            *repo,
            "--source", VolumeSourcePath(v),
            "--backup-id", BackupId(),
            *identity_args(policy),
            "--volume", v,
        )  # fmt: skip
        for pattern in spec.exclude:
            copy_args += ("--exclude", pattern)
        copy_needs = {Needs.REPOSITORY, Needs.SOURCE, Needs.DATA_MOVER}
        if vol.block_tracking is not None and not local:
            copy_args += block_tracking_args(policy, vol.block_tracking)
            copy_needs.add(Needs.KUBERNETES)  # the service is found, and its token got, through the API
        copy_args += ("--json",)
        steps.append(
            Step(
                name=f"copy-{v}",
                command="copy",
                args=copy_args,
                title=f"Copy volume {v} into the repository",
                depends=copy_depends,
                needs=frozenset(copy_needs),
                volume=v,
                prints_result=True,
                claim=None if local else CloneOf(v),
            )
        )
        copies.append(f"copy-{v}")
    steps.append(
        Step(
            name="verify",
            command="verify",
            args=(*repo, "--backup-id", BackupId(), "--read-data", Param("read-data-percent"), "--json"),
            title="Check what this backup wrote and read back a sample",
            depends=(*roots, *copies),
            needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
            prints_result=True,
        )
    )
    finalize_args: tuple[Arg, ...] = (
        "--plan", PlanFile(), "--backup-id", BackupId(), "--workflow-status", WorkflowStatus(),
    )  # fmt: skip
    if spec.movers.namespace and not local:
        # the clones, bound snapshots and pre-provisioned contents prepare-clone made there
        finalize_args += ("--mover-namespace", spec.movers.namespace)
    finalize_args += spec.anomaly.finalize_args()  # a flagged backup locks the last good one
    finalize = Step(
        name="finalize",
        command="finalize",
        args=finalize_args,
        title="Thaw (again), clean up, commit the backup record if everything passed",
        needs=frozenset({Needs.PLAN, Needs.REPOSITORY} | (set() if local else {Needs.KUBERNETES})),
    )
    finalize = with_notifications(policy, finalize)  # spec.notifications: --notify and its Secrets
    outputs = [
        Output("consistency", "app-consistent, crash-consistent or inconsistent", VerdictField("$.verdict")),
        Output(
            "freeze-window-ms",
            "how long the app was quiesced (milliseconds)",
            VerdictField("$.freeze_window_ms"),
        ),
    ]
    for vol in spec.volumes:
        v = vol.volume_name
        outputs.append(
            Output(f"snapshot-{v}", f"repository snapshot ID of volume {v}", CopyResultField(v, "$.id"))
        )
    return finish(
        policy,
        name="backup",
        title=f"Back up {policy.app} ({policy.namespace})",
        description=(
            f"Snapflow backup of app {policy.app} in namespace {policy.namespace}: quiesce, snapshot "
            f"{len(spec.volumes)} volume(s) at one consistent point, thaw, copy into {spec.repository.url}, verify. "
            "The backup is committed only when every step passed."
        ),
        steps=tuple(steps),
        exit_step=finalize,
        parameters=(
            percent_param(
                "read-data-percent",
                "Percent of this backup's data read back by verify (0: structure only).",
                spec.verify.read_data_percent,
            ),
        ),
        outputs=tuple(outputs),
        mutex=app_mutex(policy),
        parallelism=spec.parallelism + len(roots),
    )


def check_pipeline(policy: Policy) -> Pipeline:
    """The repository check; with ``verify.restoreTest`` also a restore test, switched per run by the
    ``restore-test`` parameter: one of two steps runs, and only the restore test's pod gets (and pays
    for) a scratch volume."""
    verify = policy.spec.verify
    base: tuple[Arg, ...] = (*repository_args(policy), "--read-data", Param("read-data-percent"), "--json")
    title = "Check the repository"
    check = Step(
        name="check",
        command="check",
        args=base,
        title=title,
        needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
    )
    parameters = [
        percent_param(
            "read-data-percent",
            "Percent of the repository's data read back (0: structure only).",
            verify.check_read_data_percent,
        )
    ]
    description = f"Structural check of {policy.spec.repository.url}, reading back a share of its data."
    steps: tuple[Step, ...] = (check,)
    test = verify.restore_test
    if test is not None:
        # The newest committed backup of this app (a repository may hold several apps' backups).
        restore_args: tuple[Arg, ...] = (
            "--restore-test", "--scratch", ScratchPath(),
            "--app", policy.app, "--namespace", policy.namespace, "--cluster", policy.spec.cluster,
        )  # fmt: skip
        if test.check_command:
            restore_args += (
                "--restore-check", test.check_command,
                "--restore-check-timeout", str(test.check_timeout_seconds),
            )  # fmt: skip
        with_test = Step(
            name="check-with-restore-test",
            command="check",
            args=(*base, *restore_args),
            title=f"{title} and restore its newest backup into scratch space",
            needs=check.needs,
            when=Condition(RESTORE_TEST_PARAM, "true"),
            scratch=ScratchSpace(test.scratch_size, test.storage_class_name),
        )
        steps = (replace(check, when=Condition(RESTORE_TEST_PARAM, "false")), with_test)
        parameters.append(
            Parameter(
                RESTORE_TEST_PARAM,
                f"Restore the newest committed backup into a scratch volume of {test.scratch_size} "
                f"(deleted afterwards){' and run the policy check command on it' if test.check_command else ''}.",
                "true" if test.enabled else "false",
                BOOLEAN,
            )
        )
        checked = " and checked by the policy's check command." if test.check_command else "."
        description += (
            f" With restore-test=true, the newest committed backup is restored into scratch space{checked}"
        )
    return finish(
        policy,
        name="check",
        title=f"Check the repository of {policy.app} ({policy.namespace})",
        description=description,
        steps=steps,
        parameters=tuple(parameters),
    )


def prune_pipeline(policy: Policy) -> Pipeline:
    keep: tuple[str, ...] = ()
    for unit, count in policy.spec.retention.rules():
        keep += (f"--keep-{unit}", str(count))
    schedule = policy.spec.schedule
    base = (
        *repository_args(policy),
        *keep,
        *identity_args(policy),
        "--timezone",
        schedule.timezone if schedule else "UTC",
        "--grace",
        f"{prune_grace_seconds(policy)}s",
        *object_lock_args(policy, "--lock-mode", "--lock-days"),
    )
    title = "Apply the retention rules"
    steps = (
        Step(
            name="prune",
            command="prune",
            args=base,
            title=title,
            needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
            when=Condition("dry-run", "false"),
        ),
        Step(
            name="prune-dry-run",
            command="prune",
            args=(*base, "--dry-run"),
            title=title + " (dry run: list only)",
            needs=frozenset({Needs.REPOSITORY, Needs.DATA_MOVER}),
            when=Condition("dry-run", "true"),
        ),
    )
    rules = ", ".join(f"keep {unit} {count}" for unit, count in policy.spec.retention.rules())
    return finish(
        policy,
        name="prune",
        title=f"Prune backups of {policy.app} ({policy.namespace})",
        description=f"Forget backups of {policy.app} outside the retention rules ({rules}) and free their data.",
        steps=steps,
        parameters=(Parameter("dry-run", "Only list what would be deleted.", "false", ("false", "true")),),
        mutex=repository_mutex(policy),
    )


def init_pipeline(policy: Policy) -> Pipeline:
    step = Step(
        name="init",
        command="init",
        args=(
            *repository_args(policy),
            *object_lock_args(policy, "--object-lock-mode", "--object-lock-days"),
        ),
        title="Create the repository",
        needs=frozenset({Needs.REPOSITORY}),
    )
    return finish(
        policy,
        name="init",
        title=f"Create the repository of {policy.app} ({policy.namespace})",
        description=f"Initialise {policy.spec.repository.url} with the password from the policy's Secret.",
        steps=(step,),
    )


def pipelines_for(policy: Policy) -> list[Pipeline]:
    """Every pipeline of a policy, in a stable order (restore-app only for an app in a cluster)."""
    if policy.spec.source is not None:
        from workflows.pipeline_sources import source_pipelines

        return source_pipelines(policy)
    return [
        backup_pipeline(policy),
        restore_pipeline(policy),
        *([] if policy.is_local else [restore_app_pipeline(policy)]),
        check_pipeline(policy),
        prune_pipeline(policy),
        init_pipeline(policy),
    ]


# --------------------------------------------------------------------------------------------------
# The plan handed to the steps.


def plan_for(policy: Policy) -> Plan:
    """The plan JSON of a policy (what ``--plan FILE`` holds); contains no credential."""
    spec = policy.spec
    if spec.source is not None:
        from workflows.pipeline_sources import source_plan_for

        return source_plan_for(policy)
    local = policy.is_local
    targets = tuple(t.plan_target for t in spec.quiesce)
    volumes = tuple(
        Volume(name=v.volume_name, pvc=v.pvc, path=v.path, role=v.role, block=v.block, target=v.target)
        for v in spec.volumes
    )
    plan = Plan(
        app=AppRef(namespace=policy.namespace, name=policy.app, cluster=spec.cluster, policy=policy.name),
        repository=RepositoryRef(url=spec.repository.url, endpoint=spec.repository.endpoint),
        targets=targets,
        volumes=volumes,
        consistency=spec.snapshot.consistency,
        snapshot=SnapshotSpec(
            driver="local" if local else "csi",
            snapshot_class=spec.snapshot.class_name,
            group_class=spec.snapshot.group_class_name,
            timeout_s=float(spec.snapshot.timeout_seconds),
            delete_after_copy=spec.snapshot.delete_after_copy,
        ),
        freeze=FreezeSpec(
            deadline_s=float(spec.freeze.deadline_seconds), keepalive_s=float(spec.freeze.keepalive_seconds)
        ),
        capture=CaptureSpec(secrets=spec.capture.secrets),
    )
    # The steps read the plan with plan_from_dict: a plan it would refuse is a bug here.
    plan_from_dict(plan.to_dict(), f"plan of policy {policy.name}")
    return plan
