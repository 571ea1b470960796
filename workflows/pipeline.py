"""The pipelines of a policy as plain data: which steps run, with which arguments, in which order.

This module is the single definition of what a backup (and a restore, check, prune, init) does. The
Hera builder (:mod:`workflows.hera_builder`) turns a :class:`Pipeline` into an Argo WorkflowTemplate;
a local runner executes the same :class:`Pipeline` step by step with ``python -m steps``. Nothing here
imports hera.

A step's arguments are strings or *references* (:class:`Ref` subclasses) to values only known at run
time — the backup ID, a workflow parameter, the VolumeSnapshot that consistent-point cut for a volume,
the clone claim that prepare-clone created. Each executor resolves them its own way (Argo
expressions, or values read from the previous steps' outputs).

The backup pipeline, as DESIGN draws it::

    capture ───────────────────────────────────────────────┐
    consistent-point ─┬─ prepare-clone-<v1> ── copy-<v1> ──┼─ verify
                      └─ prepare-clone-<v2> ── copy-<v2> ──┘
    finalize (always, after everything: the exit handler)

The whole-app restore (``restore-app``) is one step: ``python -m steps restore-app --mover pod``
creates the app's objects in the target namespace and one mover pod per PVC there. Argo runs a
step's pod in the workflow's namespace, and a pod mounts only PVCs of its own namespace, so movers as
Argo steps could not fill the PVCs of another target namespace. It runs as its own ServiceAccount
(:class:`Identity`), since creating an app's objects is far more than a backup needs.

Invariants checked by :meth:`Pipeline.check`: exactly one step holds the freeze, it is never retried
and never copies; every dependency names a step; each copy depends only on its own volume's clone
(which depends only on the snapshot step); the finalizer is not part of the graph.

:func:`plan_for` turns a policy into the plan JSON that steps read (``--plan FILE``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from steps.errors import RETRYABLE_EXIT_CODES
from steps.plan import (
    AppRef,
    CaptureSpec,
    FreezeSpec,
    Plan,
    RepositoryRef,
    SnapshotSpec,
    Target,
    Volume,
    plan_from_dict,
)
from steps.repository.tree import OVERWRITE_MODES
from workflows.policy import Policy

# --------------------------------------------------------------------------------------------------
# References to values known only at run time.


@dataclass(frozen=True)
class Ref:
    """A value resolved when the pipeline runs."""


@dataclass(frozen=True)
class BackupId(Ref):
    """The backup ID: the Argo workflow name (``{{workflow.name}}``), or the local run's ID."""


@dataclass(frozen=True)
class WorkflowStatus(Ref):
    """Succeeded, Failed or Error: the outcome of the pipeline, known to the finalizer."""


@dataclass(frozen=True)
class PlanFile(Ref):
    """Path of the plan JSON (a mounted ConfigMap in a cluster, a temporary file locally)."""


@dataclass(frozen=True)
class Param(Ref):
    """A pipeline parameter (an Argo workflow parameter, editable in the UI form)."""

    name: str


@dataclass(frozen=True)
class CloneOf(Ref):
    """The clone PVC of ``volume``: the claim name prepare-clone writes to its ``claim`` output file."""

    volume: str


@dataclass(frozen=True)
class VolumeSourcePath(Ref):
    """Where the copy of ``volume`` reads it: the clone's mount (or device) path in the copy pod, or
    locally the path of the volume's entry in consistent-point's ``snapshots`` list."""

    volume: str


@dataclass(frozen=True)
class RestoreTarget(Ref):
    """Where restore writes: the target PVC's mount path in the restore pod, or a local directory."""


@dataclass(frozen=True)
class ScratchPath(Ref):
    """The step's own scratch space (:attr:`Step.scratch`): the scratch volume's mount path in the pod,
    or locally a temporary directory removed after the run."""


@dataclass(frozen=True)
class OutputFile(Ref):
    """Path of the file the step writes its output ``name`` to (see :attr:`Step.output_files`)."""

    name: str


@dataclass(frozen=True)
class ParamFile(Ref):
    """A file holding the value of parameter ``name`` (multi-line text such as YAML), for a step option
    that takes a file. Argo writes it as a raw input artifact; ``filename`` names it in the pod."""

    name: str
    filename: str


@dataclass(frozen=True)
class VerdictField(Ref):
    """A field of consistent-point's record (a JSONPath like ``$.verdict``)."""

    path: str


@dataclass(frozen=True)
class CopyResultField(Ref):
    """A field of the ``--json`` summary the copy of ``volume`` prints (``$.id``, ``$.bytes_added``)."""

    volume: str
    path: str


Arg = str | Ref


# --------------------------------------------------------------------------------------------------
# Steps and pipelines.


class Retry(Enum):
    """Retry class of a step: NEVER (a retry could do harm) or TEMPORARY (retry exit code 75 only)."""

    NEVER = "never"
    TEMPORARY = "temporary"


RETRY_EXIT_CODES = tuple(RETRYABLE_EXIT_CODES)
RETRY_LIMIT = 3


class Needs(Enum):
    """What a step's environment must provide."""

    PLAN = "plan"  # the plan file (--plan)
    REPOSITORY = "repository"  # object store credentials and the repository password
    KUBERNETES = "kubernetes"  # API access with the policy's ServiceAccount
    SOURCE = "source"  # the clone of its volume, read-only (copy)
    TARGET = "target"  # a writable target volume (restore)
    DATA_MOVER = "data-mover"  # the policy's mover resources (CPU, memory)


class Identity(Enum):
    """Which ServiceAccount a pipeline's step pods run as (see :mod:`workflows.rbac`)."""

    STEPS = "steps"  # backup, single-volume restore, check, prune, init: the policy's least-privilege role
    RESTORE = "restore"  # restore-app: creates the app's objects and mover pods in the target namespace


@dataclass(frozen=True)
class Condition:
    """Run the step only when parameter ``param`` equals ``value``."""

    param: str
    value: str


@dataclass(frozen=True)
class ScratchSpace:
    """Empty, writable space of a step's own, gone when the step ends (the restore test restores into
    it): in a cluster a generic ephemeral volume (a ReadWriteOnce PVC created and deleted with the pod)
    of ``size`` in ``storage_class`` (None: the cluster default), locally a temporary directory."""

    size: str  # a Kubernetes quantity
    storage_class: str | None = None


@dataclass(frozen=True)
class Step:
    name: str  # unique node name, e.g. "copy-data"
    command: str  # the step command run as ``python -m steps <command>``
    args: tuple[Arg, ...]
    title: str
    depends: tuple[str, ...] = ()
    retry: Retry = Retry.TEMPORARY
    needs: frozenset[Needs] = frozenset()
    volume: str | None = None  # the volume this step works on
    holds_freeze: bool = False
    # Output files the step writes: {output name: path inside the step's scratch directory}.
    output_files: tuple[tuple[str, str], ...] = ()
    # The step prints its result (a claim name, a JSON summary) as the last stdout line.
    prints_result: bool = False
    when: Condition | None = None
    # The PVC the step's pod mounts (copy: the clone of its volume; restore: the target), if any.
    claim: Ref | None = None
    # Scratch space of its own, at ScratchPath (the restore test of check).
    scratch: ScratchSpace | None = None

    def refs(self) -> list[Ref]:
        refs = [a for a in self.args if isinstance(a, Ref)]
        return [*refs, self.claim] if self.claim else refs


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    default: str | None = None  # None: the user must supply it
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    """A value of the finished pipeline shown to the user (Argo UI outputs)."""

    name: str
    description: str
    source: Ref


@dataclass(frozen=True)
class Pipeline:
    name: str  # "backup", "restore", ...
    title: str
    description: str
    steps: tuple[Step, ...]
    exit_step: Step | None = None  # runs always, after the graph, whatever its outcome
    parameters: tuple[Parameter, ...] = ()
    outputs: tuple[Output, ...] = ()
    mutex: str | None = None  # at most one run holding this name at a time (per namespace)
    parallelism: int | None = None  # steps of the graph running at once
    identity: Identity = Identity.STEPS

    def step(self, name: str) -> Step:
        for s in self.all_steps():
            if s.name == name:
                return s
        raise KeyError(name)

    def all_steps(self) -> tuple[Step, ...]:
        return self.steps + ((self.exit_step,) if self.exit_step else ())

    @property
    def freeze_step(self) -> Step | None:
        holders = [s for s in self.all_steps() if s.holds_freeze]
        return holders[0] if holders else None

    def order(self) -> list[Step]:
        """The graph's steps in a dependency-respecting, stable order (the exit step not included)."""
        done: list[str] = []
        pending = list(self.steps)
        while pending:
            ready = [s for s in pending if all(d in done for d in s.depends)]
            if not ready:
                raise ValueError(f"pipeline {self.name}: dependency cycle among {[s.name for s in pending]}")
            for s in ready:
                done.append(s.name)
                pending.remove(s)
        return [self.step(n) for n in done]

    def upstream(self, name: str) -> set[str]:
        """Every step that ``name`` waits for, directly or not."""
        seen: set[str] = set()
        stack = list(self.step(name).depends)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.step(n).depends)
        return seen

    def check(self) -> None:
        """Raise ValueError when an invariant of the pipeline is broken (a bug, never user input)."""
        names = [s.name for s in self.all_steps()]
        if "main" in names:
            raise ValueError(f"pipeline {self.name}: 'main' is the graph itself, not a step name")
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name}: duplicate step names {names}")
        graph = {s.name for s in self.steps}
        for s in self.steps:
            for d in s.depends:
                if d not in graph:
                    raise ValueError(f"pipeline {self.name}: step {s.name} depends on unknown step {d}")
        self.order()
        holders = [s for s in self.all_steps() if s.holds_freeze]
        if len(holders) > 1:
            raise ValueError(f"pipeline {self.name}: more than one step holds the freeze")
        for h in holders:
            if h.retry is not Retry.NEVER:
                raise ValueError(f"pipeline {self.name}: {h.name} holds the freeze and must never be retried")
            if Needs.SOURCE in h.needs or h.command == "copy":
                raise ValueError(f"pipeline {self.name}: {h.name} holds the freeze and must not copy")
        params = {p.name for p in self.parameters}
        for s in self.all_steps():
            for ref in s.refs():
                if isinstance(ref, Param | ParamFile) and ref.name not in params:
                    raise ValueError(f"pipeline {self.name}: {s.name} uses undeclared parameter {ref.name}")
            if s.when and s.when.param not in params:
                raise ValueError(
                    f"pipeline {self.name}: {s.name} runs when undeclared parameter {s.when.param}"
                )
        for s in self.all_steps():
            if any(isinstance(ref, ScratchPath) for ref in s.refs()) and s.scratch is None:
                raise ValueError(f"pipeline {self.name}: {s.name} uses scratch space it does not have")
        for s in self.steps:
            for ref in s.refs():
                if isinstance(ref, CloneOf) and f"prepare-clone-{ref.volume}" not in s.depends:
                    raise ValueError(
                        f"pipeline {self.name}: {s.name} reads the clone of {ref.volume} too early"
                    )


# --------------------------------------------------------------------------------------------------
# The pipelines of a policy.

PERCENT_CHOICES = ("0", "1", "5", "10", "25", "50", "100")


def _percent(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _percent_param(name: str, description: str, default: float) -> Parameter:
    default_text = _percent(default)
    choices = sorted(set(PERCENT_CHOICES) | {default_text}, key=float)
    return Parameter(name, description, default_text, tuple(choices))


def repository_args(policy: Policy) -> tuple[str, ...]:
    repo = policy.spec.repository
    args: tuple[str, ...] = ("--repo", repo.url)
    if repo.endpoint:
        args += ("--endpoint", repo.endpoint)
    return args


def app_mutex(policy: Policy) -> str:
    """One backup or restore of an app at a time (Argo mutexes are per namespace)."""
    return f"snapflow-app-{policy.app}"


def identity_args(policy: Policy) -> tuple[str, ...]:
    return (
        "--cluster", policy.spec.cluster,
        "--namespace", policy.namespace,
        "--app", policy.app,
        "--policy", policy.name,
    )  # fmt: skip


CONSISTENT_POINT_OUT = "consistent-point.json"


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
        copy_args += ("--json",)
        steps.append(
            Step(
                name=f"copy-{v}",
                command="copy",
                args=copy_args,
                title=f"Copy volume {v} into the repository",
                depends=copy_depends,
                needs=frozenset({Needs.REPOSITORY, Needs.SOURCE, Needs.DATA_MOVER}),
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
    finalize = Step(
        name="finalize",
        command="finalize",
        args=("--plan", PlanFile(), "--backup-id", BackupId(), "--workflow-status", WorkflowStatus()),
        title="Thaw (again), clean up, commit the backup record if everything passed",
        needs=frozenset({Needs.PLAN, Needs.REPOSITORY} | (set() if local else {Needs.KUBERNETES})),
    )
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
    pipeline = Pipeline(
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
            _percent_param(
                "read-data-percent",
                "Percent of this backup's data read back by verify (0: structure only).",
                spec.verify.read_data_percent,
            ),
        ),
        outputs=tuple(outputs),
        mutex=app_mutex(policy),
        parallelism=spec.parallelism + len(roots),
    )
    pipeline.check()
    return pipeline


OVERWRITE_PARAM = "overwrite"
OVERWRITE_CHOICES = OVERWRITE_MODES  # the restore step's own list


def restore_pipeline(policy: Policy) -> Pipeline:
    """Restore one volume snapshot into an existing PVC. The optional parameters always reach the step
    as values (``--write-backup-label false``, ``--uid-map ""``): restore treats false and empty as
    "none", so one step serves every combination; ``--overwrite refuse`` (the default) spells restore's
    own default, a non-empty target refused."""
    args: tuple[Arg, ...] = (
        *repository_args(policy),
        "--snapshot", Param("snapshot"),
        "--target", RestoreTarget(),
        "--write-backup-label", Param("write-backup-label"),
        "--uid-map", Param("uid-map"),
        "--gid-map", Param("gid-map"),
        "--overwrite", Param(OVERWRITE_PARAM),
    )  # fmt: skip
    step = Step(
        name="restore",
        command="restore",
        args=args,
        title="Restore a snapshot into the target volume",
        needs=frozenset({Needs.REPOSITORY, Needs.TARGET, Needs.DATA_MOVER}),
        claim=Param("target-pvc"),
    )
    volumes = ", ".join(v.pvc or v.volume_name for v in policy.spec.volumes)
    pipeline = Pipeline(
        name="restore",
        title=f"Restore {policy.app} ({policy.namespace})",
        description=(
            f"Restore one volume snapshot of app {policy.app} (volumes: {volumes}) from "
            f"{policy.spec.repository.url} into an existing PVC. Stop the app (or use a new PVC) first."
        ),
        steps=(step,),
        parameters=(
            # No default: `latest` is the newest committed snapshot of the whole repository (restore
            # filters neither by volume nor by app), which for this template could be another volume's
            # data or the app's captured objects written into the target PVC.
            Parameter(
                "snapshot",
                "Repository snapshot ID to restore: a backup's output snapshot-VOLUME, or an ID (a unique "
                "prefix of 4+ hex digits) from `python -m steps snapshots`. `latest` is accepted too: the "
                "newest committed snapshot of the whole repository, of any volume or app, the captured "
                "objects included; use it only when the repository holds nothing else. To restore an app's "
                "newest backup, use restore-app (backup=latest).",
            ),
            Parameter("target-pvc", "Existing PersistentVolumeClaim to restore into (it is written to)."),
            Parameter(
                OVERWRITE_PARAM,
                "When target-pvc is not empty (an empty lost+found at its root does not count): refuse "
                "(list what is there, write nothing), always (replace every entry in the way), if-changed "
                "(keep files whose size and modification time match the snapshot) or never (keep every "
                "existing entry). A restore retried after a failure finds its own half-written files: "
                "with refuse, resubmit it with always.",
                "refuse",
                OVERWRITE_CHOICES,
            ),
            Parameter(
                "write-backup-label",
                "Then write the backup_label (and tablespace_map) the backup recorded for a PostgreSQL "
                "copied in backup mode into its data directory (refused when the backup recorded none "
                "for this volume).",
                "false",
                BOOLEAN,
            ),
            Parameter(
                "uid-map",
                "Restore file owner UIDs through ranges FROM:TO[:COUNT], separated by commas or blanks, "
                "e.g. 999:1000650000 (empty: owners as recorded).",
                "",
            ),
            Parameter(
                "gid-map",
                "Restore file group GIDs through ranges FROM:TO[:COUNT], separated by commas or blanks "
                "(empty: groups as recorded).",
                "",
            ),
        ),
        mutex=app_mutex(policy),
    )
    pipeline.check()
    return pipeline


TRANSFORMS_FILE = "transforms.yaml"
BOOLEAN = ("false", "true")
RESTORE_TEST_PARAM = "restore-test"


def restore_app_pipeline(policy: Policy) -> Pipeline:
    """The whole-app restore: objects and volumes of one committed backup, into a namespace of the
    cluster the workflow runs in (another cluster: install the rendered manifests there)."""
    spec = policy.spec
    repo = spec.repository
    mover: tuple[Arg, ...] = (
        "--mover", "pod",
        "--image", spec.image,
        "--password-secret", f"{repo.password_secret.name}:{repo.password_secret.key}",
    )  # fmt: skip
    if repo.credentials_secret:
        cs = repo.credentials_secret
        mover += (
            "--credentials-secret",
            f"{cs.name}:{cs.access_key_id_key}:{cs.secret_access_key_key}",
        )
    if repo.ca_bundle:
        mover += ("--ca-bundle", f"{repo.ca_bundle.config_map}:{repo.ca_bundle.key}")
    # The repository's Secrets live in the policy's namespace; the restore copies them into another
    # target namespace for the time of the restore (never when they exist there already).
    mover += ("--secrets-namespace", policy.namespace, "--mover-non-root", Param("mover-non-root"))
    args: tuple[Arg, ...] = (
        *repository_args(policy),
        "--backup", Param("backup"),
        "--app", policy.app,
        "--source-namespace", policy.namespace,
        "--target-namespace", Param("target-namespace"),
        "--storage-class-map", Param("storage-class-map"),
        "--transforms", ParamFile("transforms", TRANSFORMS_FILE),
        "--existing", Param("existing"),
        "--cluster-resources", Param("cluster-resources"),
        "--skip-refused", Param("skip-refused"),
        *mover,
        "--wait-ready", Param("wait-ready"),
        "--check-pod", Param("check-pod"),
        "--check-container", Param("check-container"),
        "--check-command", Param("check-command"),
        "--timeout", Param("timeout-seconds"),
        "--restore-id", BackupId(),
        "--dry-run", Param("dry-run"),
    )  # fmt: skip
    step = Step(
        name="restore-app",
        command="restore-app",
        args=args,
        title="Restore the app's objects and fill its volumes",
        # Never retried: a second attempt would find the objects of the first one (refused, or with
        # existing=skip kept, unfilled PVCs included). Resubmit with existing=replace instead.
        retry=Retry.NEVER,
        # DATA_MOVER: it reads the repository's index and the backup's manifests.
        needs=frozenset({Needs.REPOSITORY, Needs.KUBERNETES, Needs.DATA_MOVER}),
    )
    volumes = ", ".join(v.pvc or v.volume_name for v in spec.volumes)
    pipeline = Pipeline(
        name="restore-app",
        title=f"Restore app {policy.app} ({policy.namespace})",
        description=(
            f"Restore app {policy.app} — its Kubernetes objects and volumes ({volumes}) — from one committed "
            f"backup in {repo.url} into a namespace of this cluster: namespace and configuration, PVCs filled "
            "by mover pods, workloads held at zero until their data is in place, then released. Into another "
            "cluster: apply the rendered manifests there and submit this template there."
        ),
        steps=(step,),
        parameters=(
            Parameter(
                "backup",
                "Backup to restore: a backup ID (the name of a succeeded backup workflow) or latest "
                f"(the newest committed backup of {policy.app} in {policy.namespace}).",
                "latest",
            ),
            Parameter(
                "target-namespace",
                "Namespace to restore into (it must exist; outside this one, bind the restore ClusterRole "
                "there first, see docs/user/restore.md).",
                policy.namespace,
            ),
            Parameter(
                "existing",
                "Objects that already exist: refuse (list them, change nothing), skip (keep them; a kept "
                "PVC is not filled) or replace (delete and recreate them).",
                "refuse",
                ("refuse", "skip", "replace"),
            ),
            Parameter(
                "cluster-resources",
                "Also create the backup's cluster-scoped objects (ClusterRoles, ClusterRoleBindings, CRDs, "
                "other Namespaces) and RoleBindings granting anyone but the restored namespace's own "
                "ServiceAccounts, or a ClusterRole other than admin, edit and view. Off: they are refused "
                "(the restore identity also needs the rights to create them; see docs/user/restore.md).",
                "false",
                BOOLEAN,
            ),
            Parameter(
                "skip-refused",
                "Restore the rest when the backup holds objects outside the restore's scope (listed in the "
                "log and the report, never created); off: such a backup fails the restore before it "
                "creates anything.",
                "false",
                BOOLEAN,
            ),
            Parameter(
                "storage-class-map",
                "Storage classes to change, FROM=TO separated by commas (*=CLASS maps every class); "
                "empty: keep the captured classes.",
                "",
            ),
            Parameter(
                "transforms",
                "More transforms as YAML (namespaceMap, addLabels, imageRegistryMap, uidMap, patches, ...; "
                "see docs/user/restore.md), e.g. {imageRegistryMap: {docker.io: mirror.internal}}.",
                "{}",
            ),
            Parameter(
                "wait-ready",
                "Wait until the restored StatefulSets and Deployments have all their replicas ready.",
                "true",
                BOOLEAN,
            ),
            Parameter("check-pod", "Pod to run check-command in after the restore (empty: no check).", ""),
            Parameter("check-container", "Container of check-pod (empty: its default container).", ""),
            Parameter(
                "check-command",
                "Shell command whose non-zero exit fails the restore, e.g. psql -c 'select 1'.",
                "",
            ),
            Parameter(
                "mover-non-root",
                "Run the mover pods as UID 65532 (namespaces enforcing the restricted Pod Security level; "
                "file owners are then not restored).",
                "false",
                BOOLEAN,
            ),
            Parameter(
                "timeout-seconds",
                "Longest wait of each phase (deletions, binding, movers, readiness).",
                "1800",
            ),
            Parameter(
                "dry-run",
                "Only print the transformed objects (Secret values redacted) and which already exist.",
                "false",
                BOOLEAN,
            ),
        ),
        mutex=app_mutex(policy),
        identity=Identity.RESTORE,
    )
    pipeline.check()
    return pipeline


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
        _percent_param(
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
    pipeline = Pipeline(
        name="check",
        title=f"Check the repository of {policy.app} ({policy.namespace})",
        description=description,
        steps=steps,
        parameters=tuple(parameters),
    )
    pipeline.check()
    return pipeline


def repository_mutex(policy: Policy) -> str:
    """One prune per repository at a time (policies sharing a repository share it). Backups need no
    mutex with prune: prune is lock-free and two-phase."""
    import hashlib

    digest = hashlib.sha256(policy.spec.repository.url.encode()).hexdigest()[:16]
    return f"snapflow-repository-{digest}"


def prune_grace_seconds(policy: Policy) -> int:
    """Prune's grace period: longer than the longest backup, which Argo stops at activeDeadlineSeconds."""
    return max(24 * 3600, policy.spec.workflow.active_deadline_seconds + 3600)


def object_lock_args(policy: Policy, mode_flag: str, days_flag: str) -> tuple[str, ...]:
    lock = policy.spec.repository.object_lock
    return (mode_flag, lock.mode, days_flag, str(lock.days)) if lock else ()


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
    pipeline = Pipeline(
        name="prune",
        title=f"Prune backups of {policy.app} ({policy.namespace})",
        description=f"Forget backups of {policy.app} outside the retention rules ({rules}) and free their data.",
        steps=steps,
        parameters=(Parameter("dry-run", "Only list what would be deleted.", "false", ("false", "true")),),
        mutex=repository_mutex(policy),
    )
    pipeline.check()
    return pipeline


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
    pipeline = Pipeline(
        name="init",
        title=f"Create the repository of {policy.app} ({policy.namespace})",
        description=f"Initialise {policy.spec.repository.url} with the password from the policy's Secret.",
        steps=(step,),
    )
    pipeline.check()
    return pipeline


def pipelines_for(policy: Policy) -> list[Pipeline]:
    """Every pipeline of a policy, in a stable order (restore-app only for an app in a cluster)."""
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
    local = policy.is_local
    targets = tuple(
        Target(
            name=t.target_name,
            hook=t.hook,
            pod=t.pod,
            container=t.container,
            local=t.local,
            params=dict(sorted(t.params.items())),
        )
        for t in spec.quiesce
    )
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
