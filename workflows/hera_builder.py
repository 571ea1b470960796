"""Argo WorkflowTemplates from pipelines (:mod:`workflows.pipeline`), built with Hera.

One generic builder: every :class:`~workflows.pipeline.Step` becomes a container template running
``python -m steps <command> ...`` in the policy's step image, and the graph becomes a DAG template
(the entrypoint, ``main``). The exit step becomes the ``onExit`` handler. Run-time
references become Argo variables and expressions:

=====================  ============================================================================
BackupId               ``{{workflow.name}}``
WorkflowStatus         ``{{workflow.status}}``
Param(name)            ``{{workflow.parameters.<name>}}``
PlanFile               the plan ConfigMap's key, mounted read-only
OutputFile(name)       a file in the step's scratch directory, read back as output parameter ``name``
CloneOf(volume)        template input ``claim`` (the mounted PVC), prepare-clone's output ``claim``
VolumeSourcePath(volume)       the clone's mount path (a device path for block volumes)
ParamFile(name, file)  a raw input artifact holding ``{{workflow.parameters.<name>}}``, under INPUT_DIR
ScratchPath            the mount path of the step's scratch volume: a generic ephemeral volume
                       (``ephemeral.volumeClaimTemplate``, ReadWriteOnce), created with the pod and
                       deleted with it
=====================  ============================================================================

What the manifests rely on at run time follows Argo's documented semantics of the supported versions
(3.7.x, 4.0.x-4.1.x): every computed DAG output has a default, metric values cannot fail, a backup's
outcome is reported by its exit handler, and each retried step's budget holds all of its attempts;
:mod:`workflows.argo_rules` checks each of these on the rendered objects.

Called by :mod:`workflows.render`; names of every object come from :class:`Names`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hera.workflows import DAG, Container, Parameter, RawArtifact, Task, WorkflowTemplate
from hera.workflows import models as m

from workflows.pipeline import (
    RETRY_EXIT_CODES,
    RETRY_LIMIT,
    BackupId,
    CloneOf,
    CopyResultField,
    Needs,
    OutputFile,
    Param,
    ParamFile,
    Pipeline,
    PlanFile,
    Ref,
    RestoreTarget,
    Retry,
    ScratchPath,
    Step,
    VerdictField,
    VolumeSourcePath,
    WorkflowStatus,
)
from workflows.policy import Policy

PLAN_DIR = "/etc/snapflow/plan"
PLAN_KEY = "plan.json"
PASSWORD_DIR = "/etc/snapflow/repository"
PASSWORD_FILE = "password"
CA_DIR = "/etc/snapflow/ca"
CA_FILE = "ca.crt"
SCRATCH_DIR = "/tmp"
OUTPUT_DIR = SCRATCH_DIR
SOURCE_ROOT = "/snapflow/volumes"
DEVICE_ROOT = "/dev/snapflow"
TARGET_DIR = "/snapflow/target"
INPUT_DIR = "/snapflow/inputs"
SCRATCH_VOLUME_DIR = "/snapflow/scratch"
SCRATCH_VOLUME = "scratch-volume"
STEP_USER = 65532
ENTRYPOINT = "main"  # the DAG template; step templates are named after their steps

TITLE_ANNOTATION = "workflows.argoproj.io/title"
DESCRIPTION_ANNOTATION = "workflows.argoproj.io/description"

# Steps that move no data; their memory limit is spec.workflow.stepMemoryLimit.
SMALL_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}}


# The ServiceAccount name of a step command, when not the command itself (see Names.step_account).
STEP_ACCOUNT_SUFFIX = {"restore-app": "restore", "restore": "restore-volume"}


@dataclass(frozen=True)
class Names:
    """Names of the objects rendered for one policy (one place, so references always match)."""

    policy: Policy

    @property
    def plan_config_map(self) -> str:
        return f"snapflow-plan-{self.policy.name}"

    @property
    def shared_service_account(self) -> str | None:
        """The user's own ServiceAccount (``spec.workflow.serviceAccountName``): every step runs as it."""
        return self.policy.spec.workflow.service_account_name

    @property
    def renders_rbac(self) -> bool:
        return self.policy.spec.workflow.service_account_name is None

    def step_account(self, command: str) -> str:
        """The ServiceAccount a step command runs as: ``snapflow-NAME-STEP`` (its Role and RoleBinding
        have the same name), or the user's own for every step. restore-app keeps ``snapflow-NAME-restore``
        (bound by name in restore target namespaces); the single-volume restore is ``restore-volume``."""
        return (
            self.shared_service_account
            or f"snapflow-{self.policy.name}-{STEP_ACCOUNT_SUFFIX.get(command, command)}"
        )

    def step_cluster_role(self, command: str) -> str:
        """The ClusterRole (and binding) of a step's cluster-scoped reads."""
        return (
            f"snapflow-{self.policy.namespace}-{self.policy.name}-{STEP_ACCOUNT_SUFFIX.get(command, command)}"
        )

    @property
    def restore_service_account(self) -> str:
        """The identity of restore-app: a ServiceAccount of its own, or the user's existing one."""
        return self.step_account("restore-app")

    @property
    def restore_role(self) -> str:
        """The ClusterRole of restore-app's namespaced rules, bound per target namespace by RoleBindings
        (named like the ServiceAccount); it grants nothing by itself."""
        return f"snapflow-{self.policy.namespace}-{self.policy.name}-restore"

    @property
    def restore_binding(self) -> str:
        return f"snapflow-{self.policy.name}-restore"

    @property
    def restore_namespaces_role(self) -> str:
        """The ClusterRole (and binding) letting restore-app read Namespaces."""
        return f"snapflow-{self.policy.namespace}-{self.policy.name}-restore-namespaces"

    def template(self, pipeline: str) -> str:
        return f"{pipeline}-{self.policy.name}"

    def labels(self, component: str | None = None) -> dict[str, str]:
        labels = dict(self.policy.metadata.labels)
        labels.update(
            {
                "app.kubernetes.io/managed-by": "snapflow",
                "app.kubernetes.io/part-of": "snapflow",
                "snapflow.io/policy": self.policy.name,
                "snapflow.io/app": self.policy.app,
            }
        )
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels


def _tag(variable: str) -> str:
    """An Argo template tag: ``{{variable}}``."""
    return "{{" + variable + "}}"


def literal_arg(text: str) -> str:
    """A container argument that reaches the step exactly as written: the kubelet expands ``$(NAME)``
    to the container's variable NAME and ``$$`` to ``$`` in args, so every ``$`` is doubled (a shell
    command such as the restore test's check command keeps its ``$VAR``, ``$(cmd)`` and ``$$``)."""
    return text.replace("$", "$$")


def retry_expression(codes: tuple[int, ...] = RETRY_EXIT_CODES) -> str:
    if len(codes) == 1:
        return f"asInt(lastRetry.exitCode) == {codes[0]}"
    return f"asInt(lastRetry.exitCode) in [{', '.join(str(c) for c in codes)}]"


BACKOFF_S = 15
BACKOFF_FACTOR = 2
# Time an attempt may spend before its pod's deadline starts counting (scheduling, volume attachment).
POD_START_MARGIN_S = 120


def backoff_total_s(limit: int = RETRY_LIMIT) -> int:
    """The sum of the waits between attempts (15s, 30s, 60s, ...)."""
    return sum(BACKOFF_S * BACKOFF_FACTOR**i for i in range(limit))


def retry_budget_s(deadline_s: int, limit: int = RETRY_LIMIT) -> int:
    """``backoff.maxDuration`` for a step whose attempts may each run ``deadline_s``.

    Argo counts maxDuration from the start of the FIRST attempt: once it is exceeded no further retry
    is made (Argo Workflows docs/retries.md). A budget shorter than the attempts themselves silently
    turns "retried 3 times" into "never retried" for a step that fails late, so the budget holds every
    attempt at its deadline, every backoff, and a margin per attempt for the pod to start:
    ``(limit + 1) * (deadline + margin) + sum of backoffs``."""
    return (limit + 1) * (deadline_s + POD_START_MARGIN_S) + backoff_total_s(limit)


def retry_strategy(retry: Retry, deadline_s: int | None = None) -> m.RetryStrategy:
    if retry is Retry.NEVER:
        # Explicit limit 0, so that no default retry strategy can ever apply to this step.
        return m.RetryStrategy(limit=m.IntOrString(0))
    if deadline_s is None:
        raise ValueError("a retried step needs a deadline, or its retry budget cannot hold its attempts")
    # Only exit code 75 (a temporary error) is retried: a step killed for memory (OOMKilled, exit code
    # 137), a permanent or an integrity error fails at once instead of being repeated.
    return m.RetryStrategy(
        limit=m.IntOrString(RETRY_LIMIT),
        retry_policy="OnFailure",
        expression=retry_expression(),
        backoff=m.Backoff(
            duration=f"{BACKOFF_S}s",
            factor=m.IntOrString(BACKOFF_FACTOR),
            max_duration=f"{retry_budget_s(deadline_s)}s",
        ),
    )


class _StepBuilder:
    """Builds one step's container template and the DAG task that calls it."""

    def __init__(self, policy: Policy, pipeline: Pipeline, step: Step):
        self.policy = policy
        self.pipeline = pipeline
        self.step = step
        self.names = Names(policy)
        self.inputs: dict[str, str] = {}  # template input name -> value passed by the DAG task
        self.files: dict[str, RawArtifact] = {}  # raw input artifacts (parameters written to files)

    # -- values ---------------------------------------------------------------------------------
    def _volume(self, name: str):
        for vol in self.policy.spec.volumes:
            if vol.volume_name == name:
                return vol
        raise KeyError(name)

    def value(self, ref: Ref) -> str:
        if isinstance(ref, BackupId):
            return "{{workflow.name}}"
        if isinstance(ref, WorkflowStatus):
            return "{{workflow.status}}"
        if isinstance(ref, PlanFile):
            return f"{PLAN_DIR}/{PLAN_KEY}"
        if isinstance(ref, Param):
            return _tag(f"workflow.parameters.{ref.name}")
        if isinstance(ref, OutputFile):
            return f"{OUTPUT_DIR}/{dict(self.step.output_files)[ref.name]}"
        if isinstance(ref, VolumeSourcePath):
            root = DEVICE_ROOT if self._volume(ref.volume).block else SOURCE_ROOT
            return f"{root}/{ref.volume}"
        if isinstance(ref, RestoreTarget):
            return TARGET_DIR
        if isinstance(ref, ScratchPath):
            return SCRATCH_VOLUME_DIR
        if isinstance(ref, CloneOf):
            self.inputs["claim"] = _tag(f"tasks.prepare-clone-{ref.volume}.outputs.parameters.claim")
            return "{{inputs.parameters.claim}}"
        if isinstance(ref, ParamFile):
            path = f"{INPUT_DIR}/{ref.filename}"
            self.files[ref.name] = RawArtifact(
                name=ref.name, path=path, data=_tag(f"workflow.parameters.{ref.name}")
            )
            return path
        raise TypeError(f"cannot resolve {ref!r} in an Argo template")

    def args(self) -> list[str]:
        return [self.step.command] + [
            literal_arg(a) if isinstance(a, str) else self.value(a) for a in self.step.args
        ]

    # -- pod ------------------------------------------------------------------------------------
    def env(self) -> list[m.EnvVar]:
        if Needs.REPOSITORY not in self.step.needs:
            return []
        repo = self.policy.spec.repository
        env: list[m.EnvVar] = []
        secret = repo.credentials_secret
        if self.step.command == "prune" and repo.prune_credentials_secret:
            secret = repo.prune_credentials_secret  # backups may then use append-only keys
        if secret:
            for var, key in (
                ("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
                ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key),
            ):
                env.append(
                    m.EnvVar(
                        name=var,
                        value_from=m.EnvVarSource(
                            secret_key_ref=m.SecretKeySelector(name=secret.name, key=key)
                        ),
                    )
                )
        env.append(m.EnvVar(name="SNAPFLOW_PASSWORD_FILE", value=f"{PASSWORD_DIR}/{PASSWORD_FILE}"))
        if repo.region:
            env.append(m.EnvVar(name="SNAPFLOW_S3_REGION", value=repo.region))
        if repo.path_style:
            env.append(m.EnvVar(name="SNAPFLOW_S3_PATH_STYLE", value="true"))
        if repo.ca_bundle:
            env.append(m.EnvVar(name="SNAPFLOW_S3_CA_BUNDLE", value=f"{CA_DIR}/{CA_FILE}"))
        return env

    def volumes_and_mounts(self) -> tuple[list[m.Volume], list[m.VolumeMount], list[m.VolumeDevice]]:
        needs = self.step.needs
        volumes: list[m.Volume] = [
            m.Volume(name="scratch", empty_dir=m.EmptyDirVolumeSource(size_limit="1Gi"))
        ]
        mounts = [m.VolumeMount(name="scratch", mount_path=SCRATCH_DIR)]
        devices: list[m.VolumeDevice] = []
        if Needs.PLAN in needs:
            volumes.append(
                m.Volume(
                    name="plan",
                    config_map=m.ConfigMapVolumeSource(
                        name=self.names.plan_config_map, items=[m.KeyToPath(key=PLAN_KEY, path=PLAN_KEY)]
                    ),
                )
            )
            mounts.append(m.VolumeMount(name="plan", mount_path=PLAN_DIR, read_only=True))
        if Needs.REPOSITORY in needs:
            repo = self.policy.spec.repository
            volumes.append(
                m.Volume(
                    name="repository-password",
                    secret=m.SecretVolumeSource(
                        secret_name=repo.password_secret.name,
                        items=[m.KeyToPath(key=repo.password_secret.key, path=PASSWORD_FILE)],
                        default_mode=0o440,
                    ),
                )
            )
            mounts.append(m.VolumeMount(name="repository-password", mount_path=PASSWORD_DIR, read_only=True))
            if repo.ca_bundle:
                volumes.append(
                    m.Volume(
                        name="ca-bundle",
                        config_map=m.ConfigMapVolumeSource(
                            name=repo.ca_bundle.config_map,
                            items=[m.KeyToPath(key=repo.ca_bundle.key, path=CA_FILE)],
                        ),
                    )
                )
                mounts.append(m.VolumeMount(name="ca-bundle", mount_path=CA_DIR, read_only=True))
        if self.step.claim is not None:
            claim = self.value(self.step.claim)
            writable = Needs.TARGET in needs
            volumes.append(
                m.Volume(
                    name="data",
                    persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                        claim_name=claim, read_only=None if writable else True
                    ),
                )
            )
            if self.step.volume and self._volume(self.step.volume).block:
                devices.append(m.VolumeDevice(name="data", device_path=f"{DEVICE_ROOT}/{self.step.volume}"))
            elif writable:
                mounts.append(m.VolumeMount(name="data", mount_path=TARGET_DIR))
            else:
                mounts.append(
                    m.VolumeMount(name="data", mount_path=f"{SOURCE_ROOT}/{self.step.volume}", read_only=True)
                )
        if self.step.scratch is not None:
            volumes.append(self.scratch_volume())
            mounts.append(m.VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_VOLUME_DIR))
        return volumes, mounts, devices

    def scratch_volume(self) -> m.Volume:
        """A generic ephemeral volume: the kube controller creates its PVC (owned by the pod, so deleted
        with it) from this template; the step's ServiceAccount needs no right for it, and Pod Security
        admits it at every level. The pod's fsGroup makes it writable for the non-root step."""
        scratch = self.step.scratch
        assert scratch is not None
        return m.Volume(
            name=SCRATCH_VOLUME,
            ephemeral=m.EphemeralVolumeSource(
                volume_claim_template=m.PersistentVolumeClaimTemplate(
                    metadata=m.ObjectMeta(labels=self.names.labels(self.pipeline.name)),
                    spec=m.PersistentVolumeClaimSpec(
                        access_modes=["ReadWriteOnce"],
                        storage_class_name=scratch.storage_class,
                        resources=m.VolumeResourceRequirements(
                            requests={"storage": m.Quantity(scratch.size)}
                        ),
                    ),
                )
            ),
        )

    def security(self) -> tuple[m.SecurityContext, m.PodSecurityContext | None]:
        needs = self.step.needs
        seccomp = m.SeccompProfile(type="RuntimeDefault")
        if Needs.SOURCE in needs or Needs.TARGET in needs:
            # Reading every file of a volume (owned by the app's users) needs DAC_OVERRIDE (the clone
            # is mounted read-only; DAC_READ_SEARCH would be narrower, but Pod Security baseline does
            # not allow it); a restore that keeps owners and modes needs CHOWN/FOWNER. No fsGroup
            # here: the kubelet would re-own the volume's files to that group.
            add = ["DAC_OVERRIDE"] if Needs.SOURCE in needs else ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
            container = m.SecurityContext(
                run_as_user=0,
                run_as_non_root=False,
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                capabilities=m.Capabilities(drop=["ALL"], add=add),
                seccomp_profile=seccomp,
            )
            return container, None
        container = m.SecurityContext(
            run_as_user=STEP_USER,
            run_as_group=STEP_USER,
            run_as_non_root=True,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=m.Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        )
        # fsGroup lets the non-root step read the mounted password (mode 0440).
        return container, m.PodSecurityContext(fs_group=STEP_USER, seccomp_profile=seccomp)

    def resources(self) -> m.ResourceRequirements:
        if Needs.DATA_MOVER in self.step.needs:
            res = self.policy.spec.resources
            requests, limits = dict(res.requests), dict(res.limits)
        else:
            requests = SMALL_RESOURCES["requests"]
            limits = {"memory": self.policy.spec.workflow.step_memory_limit}
        return m.ResourceRequirements(
            requests={k: m.Quantity(v) for k, v in sorted(requests.items())} or None,
            limits={k: m.Quantity(v) for k, v in sorted(limits.items())} or None,
        )

    def metrics(self) -> list[m.Prometheus]:
        """Template-level metrics: emitted when this step's node completes, from its own status
        (Argo Workflows docs/metrics.md). Every value is an expression that cannot fail or come out
        empty whatever the step's outcome (a gauge rendering empty or null is a MetricsError), and a
        ``when`` says whether there is anything to emit."""
        base = [
            m.MetricLabel(key="namespace", value=self.policy.namespace),
            m.MetricLabel(key="app", value=self.policy.app),
        ]
        if self.step.holds_freeze:
            if not holds_app(self.policy):
                return []  # no hook quiesces the app: there is no freeze window to report
            window = f"jsonpath(outputs.parameters.verdict, '{FREEZE_WINDOW_PATH}')"
            return [
                m.Prometheus(
                    name="snapflow_freeze_window_seconds",
                    help="How long the app was quiesced by the last backup (seconds).",
                    labels=base,
                    # The verdict output has a default holding the key with null, so jsonpath always
                    # reads valid JSON; null (no hook held the app) emits nothing.
                    when=f"{{{{={window} != nil}}}}",
                    gauge=m.Gauge(realtime=False, value=f"{{{{={window} != nil ? {window} / 1000 : 0}}}}"),
                )
            ]
        if self.step.command == "copy":
            labels = [*base, m.MetricLabel(key="volume", value=self.step.volume or "")]
            added = "jsonpath(outputs.result, '$.bytes_added')"
            return [
                m.Prometheus(
                    name="snapflow_backup_bytes_added",
                    help="Bytes the last copy of a volume added to the repository (after deduplication).",
                    labels=labels,
                    when="{{status}} == Succeeded",
                    # A failed copy prints no summary: its stdout is only read when it succeeded.
                    gauge=m.Gauge(realtime=False, value=f"{{{{=status == 'Succeeded' ? {added} : 0}}}}"),
                ),
                m.Prometheus(
                    name="snapflow_copy_duration_seconds",
                    help="Duration of the last copy of a volume (seconds).",
                    labels=labels,
                    gauge=m.Gauge(realtime=False, value="{{duration}}"),
                ),
            ]
        if self.pipeline.exit_step is not None and self.step is self.pipeline.exit_step:
            return commit_metrics(self.policy, self.pipeline)
        return []

    def deadline(self) -> int | None:
        """activeDeadlineSeconds of one attempt: the freeze step's bounds a stuck pod (it thaws by
        itself at the freeze deadline); a retried step's comes from spec.workflow.stepTimeouts."""
        if self.step.holds_freeze:
            return int(self.policy.spec.freeze.deadline_seconds) + 300
        if self.step.retry is Retry.NEVER:
            return None
        timeouts = self.policy.spec.workflow.step_timeouts
        deadline = timeouts.for_command(self.step.command, self.policy.spec.snapshot.timeout_seconds)
        if deadline is None:
            raise ValueError(f"step {self.step.name}: no timeout for retried command {self.step.command}")
        return deadline

    # -- template and task ----------------------------------------------------------------------
    def template(self) -> Container:
        step = self.step
        args = self.args()
        volumes, mounts, devices = self.volumes_and_mounts()
        container_security, pod_security = self.security()
        outputs = [
            Parameter(
                name=name,
                value_from=m.ValueFrom(
                    path=f"{OUTPUT_DIR}/{path}",
                    default=EMPTY_VERDICT if step.holds_freeze and name == "verdict" else None,
                ),
            )
            for name, path in step.output_files
        ]
        deadline = self.deadline()
        metrics = self.metrics()
        env = self.env()
        return Container(
            name=step.name,
            image=self.policy.spec.image,
            image_pull_policy=self.policy.spec.image_pull_policy,
            command=["python", "-m", "steps"],
            args=args,
            env=env or None,
            inputs=[
                *(Parameter(name=n) for n in sorted(self.inputs)),
                *(self.files[n] for n in sorted(self.files)),
            ]
            or None,
            outputs=outputs or None,
            volumes=volumes,
            volume_mounts=mounts,
            volume_devices=devices or None,
            security_context=container_security,
            pod_security_context=pod_security,
            resources=self.resources(),
            retry_strategy=retry_strategy(step.retry, deadline),
            active_deadline_seconds=deadline,
            metrics=m.Metrics(prometheus=metrics) if metrics else None,
            labels={"snapflow.io/step": step.command},
            service_account_name=None
            if self.names.shared_service_account
            else self.names.step_account(step.command),
        )

    def task(self, template: Container) -> Task:
        step = self.step
        when = None
        if step.when:
            when = f"{_tag('workflow.parameters.' + step.when.param)} == {step.when.value}"
        return Task(
            name=step.name,
            template=template,
            arguments={k: self.inputs[k] for k in sorted(self.inputs)} or None,
            dependencies=list(step.depends) or None,
            when=when,
        )


def holds_app(policy: Policy) -> bool:
    """Whether a hook quiesces the app (else consistent-point records no freeze window)."""
    return any(t.hook != "none" for t in policy.spec.quiesce)


FREEZE_WINDOW_PATH = "$.freeze_window_ms"
# The verdict consistent-point writes, when it wrote none: every key the template reads, null.
EMPTY_VERDICT = '{"verdict": null, "freeze_window_ms": null}'


def _output_parameter(pipeline: Pipeline, output) -> Parameter:
    source = output.source
    if isinstance(source, VerdictField):
        freeze = pipeline.freeze_step
        assert freeze is not None
        expression = f"jsonpath(tasks['{freeze.name}'].outputs.parameters.verdict, '{source.path}')"
    elif isinstance(source, CopyResultField):
        expression = f"jsonpath(tasks['copy-{source.volume}'].outputs.result, '{source.path}')"
    else:
        raise TypeError(f"cannot show {source!r} as a workflow output")
    # Since Argo v3.7.16 and v4.0.7 an output whose expression is nil (no hook: no freeze window) or
    # reads a node that failed or was skipped FAILS the DAG — and then the backup is never committed —
    # unless it has a default (Argo Workflows docs/upgrading.md, v3.7.16 / v4.0.7). The default is the
    # empty string, which no value is mistaken for (0 would record a freeze of 0 ms).
    return Parameter(
        name=output.name,
        description=output.description,
        value_from=m.ValueFrom(expression=expression, default=OUTPUT_DEFAULT),
    )


OUTPUT_DEFAULT = ""

# The finalize step's outcome: it exits 0 after a successful run only when the backup record is
# committed (or was already), and non-zero when it refuses; after a failed run there is nothing to
# commit. {{workflow.status}} is the status finalize decided by (the graph's).
COMMITTED = "{{status}} == Succeeded && {{workflow.status}} == Succeeded"
REFUSED = "{{workflow.status}} == Succeeded && {{status}} != Succeeded"
NOT_RUN = "{{workflow.status}} != Succeeded"


def commit_metrics(policy: Policy, pipeline: Pipeline) -> list[m.Prometheus]:
    """The backup's outcome, emitted by its exit handler (finalize) when it completes, conditioned on
    the commit itself. Workflow-level metrics cannot say it: Argo evaluates them on the entrypoint's
    status, before the exit handler ran (Argo Workflows docs/metrics.md), so a backup that finalize
    refused to commit would count as a success."""
    labels = [
        m.MetricLabel(key="namespace", value=policy.namespace),
        m.MetricLabel(key="app", value=policy.app),
        m.MetricLabel(key="pipeline", value=pipeline.name),
    ]
    runs_help = "Snapflow runs by outcome (a backup succeeds when its record is committed)."

    def runs(status: str, when: str) -> m.Prometheus:
        return m.Prometheus(
            name="snapflow_workflow_runs_total",
            help=runs_help,
            labels=[*labels, m.MetricLabel(key="status", value=status)],
            when=when,
            counter=m.Counter(value="1"),
        )

    return [
        runs("Succeeded", COMMITTED),
        runs("Failed", REFUSED),
        runs("{{workflow.status}}", NOT_RUN),
        m.Prometheus(
            name="snapflow_last_committed_backup_timestamp_seconds",
            help="Start time (Unix seconds) of the last backup of an app whose record was committed.",
            labels=labels,
            when=COMMITTED,
            gauge=m.Gauge(realtime=False, value="{{workflow.creationTimestamp.s}}"),
        ),
        m.Prometheus(
            name="snapflow_last_success_timestamp_seconds",
            help="Start time (Unix seconds) of the last successful Snapflow run of an app.",
            labels=labels,
            when=COMMITTED,
            gauge=m.Gauge(realtime=False, value="{{workflow.creationTimestamp.s}}"),
        ),
    ]


def workflow_metrics(policy: Policy, pipeline: Pipeline) -> m.Metrics:
    """Workflow-level metrics. Argo evaluates them on the entrypoint's status, not on the final phase
    after the exit handler; ``{{workflow.status}}`` there has the same flaw (Argo Workflows
    docs/metrics.md). A pipeline without an exit handler ends with its entrypoint, so its outcome is
    reported here; one with an exit handler (the backup) reports its outcome from that handler
    (:func:`commit_metrics`), and only its duration here."""
    labels = [
        m.MetricLabel(key="namespace", value=policy.namespace),
        m.MetricLabel(key="app", value=policy.app),
        m.MetricLabel(key="pipeline", value=pipeline.name),
    ]
    if pipeline.exit_step is not None:
        return m.Metrics(
            prometheus=[
                m.Prometheus(
                    name="snapflow_workflow_duration_seconds",
                    help="Duration of the last Snapflow run of an app (seconds).",
                    labels=labels,
                    gauge=m.Gauge(realtime=False, value="{{workflow.duration}}"),
                )
            ]
        )
    with_status = [*labels, m.MetricLabel(key="status", value="{{workflow.status}}")]
    return m.Metrics(
        prometheus=[
            m.Prometheus(
                name="snapflow_workflow_duration_seconds",
                help="Duration of the last Snapflow run of an app (seconds), by outcome.",
                labels=with_status,
                gauge=m.Gauge(realtime=False, value="{{workflow.duration}}"),
            ),
            m.Prometheus(
                name="snapflow_workflow_runs_total",
                help="Snapflow runs by outcome.",
                labels=with_status,
                counter=m.Counter(value="1"),
            ),
            m.Prometheus(
                name="snapflow_last_success_timestamp_seconds",
                help="Start time (Unix seconds) of the last successful Snapflow run of an app.",
                labels=labels,
                when="{{workflow.status}} == Succeeded",
                gauge=m.Gauge(realtime=False, value="{{workflow.creationTimestamp.s}}"),
            ),
        ]
    )


def build_workflow_template(policy: Policy, pipeline: Pipeline) -> WorkflowTemplate:
    """The WorkflowTemplate running ``pipeline`` for ``policy``."""
    names = Names(policy)
    settings = policy.spec.workflow
    templates: list[Any] = []
    tasks: list[Task] = []
    for step in pipeline.order():
        builder = _StepBuilder(policy, pipeline, step)
        template = builder.template()
        templates.append(template)
        tasks.append(builder.task(template))
    on_exit = None
    if pipeline.exit_step:
        templates.append(_StepBuilder(policy, pipeline, pipeline.exit_step).template())
        on_exit = pipeline.exit_step.name
    dag = DAG(
        name=ENTRYPOINT,
        tasks=tasks,
        parallelism=pipeline.parallelism,
        outputs=[_output_parameter(pipeline, o) for o in pipeline.outputs] or None,
    )
    annotations = {TITLE_ANNOTATION: pipeline.title, DESCRIPTION_ANNOTATION: pipeline.description}
    labels = names.labels(pipeline.name)
    arguments = [
        Parameter(
            name=p.name,
            description=p.description,
            enum=list(p.enum) or None,
            **({"value": p.default} if p.default is not None else {}),
        )
        for p in pipeline.parameters
    ]
    return WorkflowTemplate(
        name=names.template(pipeline.name),
        namespace=policy.namespace,
        labels=labels,
        annotations=annotations,
        entrypoint=ENTRYPOINT,
        arguments=arguments or None,
        templates=[dag, *sorted(templates, key=lambda t: t.name)],
        on_exit=on_exit,
        # Every pod template names its step's own account; the user's shared one applies workflow-wide.
        service_account_name=names.shared_service_account,
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=pipeline.mutex)]) if pipeline.mutex else None,
        active_deadline_seconds=settings.active_deadline_seconds,
        pod_gc=m.PodGC(strategy=settings.pod_gc),
        ttl_strategy=m.TTLStrategy(
            seconds_after_success=settings.ttl_after_success_seconds,
            seconds_after_failure=settings.ttl_after_failure_seconds,
        ),
        workflow_metadata=m.WorkflowMetadata(labels=labels, annotations=annotations),
        pod_metadata=m.Metadata(labels=labels),
        node_selector=dict(settings.node_selector) or None,
        pod_priority_class_name=settings.priority_class_name,
        metrics=workflow_metrics(policy, pipeline),
    )
