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
NodeAddress(port)      ``https://$(HOST_IP):port``, ``HOST_IP`` from the pod's ``status.hostIP``
EnvValue(name)         ``$(name)``: the kubelet expands the container's variable (from a Secret)
=====================  ============================================================================

A source step's :class:`~workflows.pipeline.SourcePod` adds its Secrets (files) and hostPath volumes,
an emptyDir of a size limit for its work, control-plane placement (node selector and the tolerations
of the control-plane and legacy master taints), and, for a step that calls no Kubernetes API,
``automountServiceAccountToken: false`` with the step's account as Argo's executor's.

What the manifests rely on at run time follows Argo's documented semantics of the supported versions
(3.7.x, 4.0.x-4.1.x): every computed DAG output has a default, metric values cannot fail, a backup's
outcome is reported by its exit handler, and each retried step's budget holds all of its attempts;
:mod:`workflows.argo_rules` checks each of these on the rendered objects.

Called by :mod:`workflows.render`; names of every object come from :class:`Names`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hera.workflows import (
    DAG,
    ConfigMapVolume,
    Container,
    EmptyDirVolume,
    Env,
    EphemeralVolume,
    ExistingVolume,
    Parameter,
    RawArtifact,
    SecretEnv,
    SecretVolume,
    Task,
    WorkflowTemplate,
)
from hera.workflows import models as m

from steps.runtime import (
    AUDIT_LABELS,
    CA_DIR,
    DEVICE_ROOT,
    INPUT_DIR,
    OUTPUT_DIR,
    PASSWORD_DIR,
    PLAN_DIR,
    PLAN_KEY,
    SCRATCH_DIR,
    SCRATCH_VOLUME_DIR,
    SOURCE_CAPABILITIES,
    SOURCE_ROOT,
    STEP_USER,
    TARGET_CAPABILITIES,
    TARGET_DIR,
    Credentials,
    SecretKey,
    step_env,
)
from steps.runtime import CA_KEY as CA_FILE
from steps.runtime import PASSWORD_KEY as PASSWORD_FILE
from workflows.argo_rules import workflow_label
from workflows.names import Names
from workflows.pipeline import (
    RETRY_EXIT_CODES,
    RETRY_LIMIT,
    BackupId,
    CloneOf,
    CopyResultField,
    EnvValue,
    Metrics,
    Needs,
    NodeAddress,
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
    TemplateSettings,
    VerdictField,
    VolumeSourcePath,
    WorkflowStatus,
)

SCRATCH_VOLUME = "scratch-volume"
HOST_IP_ENV = "HOST_IP"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
ENTRYPOINT = "main"  # the DAG template; step templates are named after their steps

TITLE_ANNOTATION = "workflows.argoproj.io/title"
DESCRIPTION_ANNOTATION = "workflows.argoproj.io/description"


@dataclass(kw_only=True)
class _ConfigMapFile(ConfigMapVolume):
    """Hera's ConfigMapVolume names the ConfigMap after the volume; this one names it apart."""

    config_map: str = ""

    def _build_volume(self) -> m.Volume:
        volume = super()._build_volume()
        assert volume.config_map is not None
        volume.config_map.name = self.config_map
        return volume


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

    def __init__(self, pipeline: Pipeline, step: Step):
        if pipeline.settings is None:
            raise ValueError(f"pipeline {pipeline.name}: no template settings (built without a policy)")
        self.settings: TemplateSettings = pipeline.settings
        self.pipeline = pipeline
        self.step = step
        self.names: Names = pipeline.settings.names
        self.inputs: dict[str, str] = {}  # template input name -> value passed by the DAG task
        self.files: dict[str, RawArtifact] = {}  # raw input artifacts (parameters written to files)
        self.host_mounts: list[m.VolumeMount] = []  # hostPath volumes (Hera mounts only its own helpers)

    # -- values ---------------------------------------------------------------------------------
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
            if ref.volume != self.step.volume:
                raise TypeError(f"step {self.step.name} reads volume {ref.volume} it does not mount")
            root = DEVICE_ROOT if self.step.block else SOURCE_ROOT
            return f"{root}/{ref.volume}"
        if isinstance(ref, RestoreTarget):
            return TARGET_DIR
        if isinstance(ref, ScratchPath):
            return SCRATCH_VOLUME_DIR
        if isinstance(ref, CloneOf):
            self.inputs["claim"] = _tag(f"tasks.prepare-clone-{ref.volume}.outputs.parameters.claim")
            return "{{inputs.parameters.claim}}"
        if isinstance(ref, NodeAddress):
            return f"https://$({HOST_IP_ENV}):{ref.port}"  # expanded by the kubelet from the pod's env
        if isinstance(ref, EnvValue):
            return f"$({ref.name})"
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
    def env(self) -> list[Any]:
        """The step-runtime contract's environment (:func:`steps.runtime.step_env`) of a step that
        opens the repository; the object store's keys come from their Secret, and who started the
        Workflow (its Argo labels, :data:`steps.runtime.AUDIT_LABELS`) reaches the audit trail."""
        repo = self.step.repository
        extra: list[Any] = []
        pod = self.step.source_pod
        if pod is not None:
            if any(isinstance(a, NodeAddress) for a in self.step.args):
                extra.append(
                    m.EnvVar(
                        name=HOST_IP_ENV,
                        value_from=m.EnvVarSource(
                            field_ref=m.ObjectFieldSelector(field_path="status.hostIP")
                        ),
                    )
                )
            extra += [SecretEnv(name=n, secret_name=sec, secret_key=key) for n, sec, key in pod.secret_env]
        if repo is None:
            return extra
        keys = repo.credentials
        env = step_env(
            password_file=f"{PASSWORD_DIR}/{PASSWORD_FILE}",
            credentials=Credentials(keys.name, keys.access_key_id_key, keys.secret_access_key_key)
            if keys
            else None,
            region=repo.region,
            path_style=repo.path_style,
            ca_bundle=f"{CA_DIR}/{CA_FILE}" if repo.ca_config_map else None,
        )
        return (
            [
                SecretEnv(name=name, secret_name=value.secret, secret_key=value.key)
                if isinstance(value, SecretKey)
                else Env(name=name, value=value)
                for name, value in env.items()
            ]
            + [Env(name=var, value=workflow_label(label)) for var, label in AUDIT_LABELS]
            + extra
        )

    def volumes(self) -> tuple[list[Any], list[m.VolumeDevice]]:
        """The pod's volumes (Hera's volume helpers mount themselves) and its block devices."""
        needs = self.step.needs
        volumes: list[Any] = [EmptyDirVolume(name="scratch", size_limit="1Gi", mount_path=SCRATCH_DIR)]
        devices: list[m.VolumeDevice] = []
        if Needs.PLAN in needs:
            volumes.append(
                _ConfigMapFile(
                    name="plan",
                    config_map=self.names.plan_config_map,
                    items=[m.KeyToPath(key=PLAN_KEY, path=PLAN_KEY)],
                    mount_path=PLAN_DIR,
                    read_only=True,
                )
            )
        repo = self.step.repository
        if repo is not None:
            volumes.append(
                SecretVolume(
                    name="repository-password",
                    secret_name=repo.password_secret,
                    items=[m.KeyToPath(key=repo.password_key, path=PASSWORD_FILE)],
                    default_mode=0o440,
                    mount_path=PASSWORD_DIR,
                    read_only=True,
                )
            )
            if repo.ca_config_map:
                volumes.append(
                    _ConfigMapFile(
                        name="ca-bundle",
                        config_map=repo.ca_config_map,
                        items=[m.KeyToPath(key=repo.ca_key, path=CA_FILE)],
                        mount_path=CA_DIR,
                        read_only=True,
                    )
                )
        if self.step.claim is not None:
            claim = self.value(self.step.claim)
            writable = Needs.TARGET in needs
            if self.step.volume and self.step.block:
                volumes.append(
                    m.Volume(
                        name="data",
                        persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                            claim_name=claim, read_only=None if writable else True
                        ),
                    )
                )
                devices.append(m.VolumeDevice(name="data", device_path=f"{DEVICE_ROOT}/{self.step.volume}"))
            else:
                volumes.append(
                    ExistingVolume(
                        name="data",
                        claim_name=claim,
                        read_only=None if writable else True,
                        mount_path=TARGET_DIR if writable else f"{SOURCE_ROOT}/{self.step.volume}",
                    )
                )
        if self.step.scratch is not None:
            volumes.append(self.scratch_volume())
        pod = self.step.source_pod
        if pod is not None:
            if pod.work_size:
                volumes.append(
                    EmptyDirVolume(name="work", size_limit=pod.work_size, mount_path=SCRATCH_VOLUME_DIR)
                )
            for mount in pod.mounts:
                if mount.host_path:
                    writable = mount.name == "etcd-data"  # the restored data directory
                    volumes.append(
                        m.Volume(
                            name=mount.name,
                            host_path=m.HostPathVolumeSource(
                                path=mount.host_path, type="DirectoryOrCreate" if writable else "Directory"
                            ),
                        )
                    )
                    self.host_mounts.append(
                        m.VolumeMount(
                            name=mount.name, mount_path=mount.path, read_only=None if writable else True
                        )
                    )
                else:
                    volumes.append(
                        SecretVolume(
                            name=mount.name,
                            secret_name=mount.secret,
                            items=[m.KeyToPath(key=k, path=f) for k, f in mount.items] or None,
                            default_mode=0o440,
                            mount_path=mount.path,
                            read_only=True,
                        )
                    )
        return volumes, devices

    def scratch_volume(self) -> EphemeralVolume:
        """A generic ephemeral volume: the kube controller creates its PVC (owned by the pod, so deleted
        with it) from this template; the step's ServiceAccount needs no right for it, and Pod Security
        admits it at every level. The pod's fsGroup makes it writable for the non-root step."""
        scratch = self.step.scratch
        assert scratch is not None
        return EphemeralVolume(
            name=SCRATCH_VOLUME,
            mount_path=SCRATCH_VOLUME_DIR,
            volume_claim_template=m.PersistentVolumeClaimTemplate(
                metadata=m.ObjectMeta(labels=self.names.labels(self.pipeline.name)),
                spec=m.PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    storage_class_name=scratch.storage_class,
                    resources=m.VolumeResourceRequirements(requests={"storage": m.Quantity(scratch.size)}),
                ),
            ),
        )

    def security(self) -> tuple[m.SecurityContext, m.PodSecurityContext | None]:
        needs = self.step.needs
        seccomp = m.SeccompProfile(type="RuntimeDefault")
        if self.step.source_pod is not None and self.step.source_pod.as_root:
            # kubeadm's etcd client key is root's, mode 0600: root reads it as its owner, without any
            # capability
            container = m.SecurityContext(
                run_as_user=0,
                run_as_non_root=False,
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                capabilities=m.Capabilities(drop=["ALL"]),
                seccomp_profile=seccomp,
            )
            return container, m.PodSecurityContext(seccomp_profile=seccomp)
        if Needs.SOURCE in needs or Needs.TARGET in needs:
            # Reading every file of a volume (owned by the app's users) needs DAC_OVERRIDE; a restore
            # that keeps owners and modes needs CHOWN/FOWNER (steps.runtime). No fsGroup here: the
            # kubelet would re-own the volume's files to that group.
            add = SOURCE_CAPABILITIES if Needs.SOURCE in needs else TARGET_CAPABILITIES
            container = m.SecurityContext(
                run_as_user=0,
                run_as_non_root=False,
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                capabilities=m.Capabilities(drop=["ALL"], add=list(add)),
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

    def resources(self) -> m.ResourceRequirements | None:
        res = self.step.resources
        if res is None:
            return None
        return m.ResourceRequirements(
            requests={k: m.Quantity(v) for k, v in sorted(res.requests)} or None,
            limits={k: m.Quantity(v) for k, v in sorted(res.limits)} or None,
        )

    def metrics(self) -> list[m.Prometheus]:
        """Template-level metrics: emitted when this step's node completes, from its own status
        (Argo Workflows docs/metrics.md). Every value is an expression that cannot fail or come out
        empty whatever the step's outcome (a gauge rendering empty or null is a MetricsError), and a
        ``when`` says whether there is anything to emit."""
        base = [
            m.MetricLabel(key="namespace", value=self.names.namespace),
            m.MetricLabel(key="app", value=self.names.app),
        ]
        kind = self.step.metrics
        if kind is Metrics.FREEZE_WINDOW:
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
        if kind is Metrics.COPY:
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
        if kind is Metrics.OUTCOME:
            return commit_metrics(self.names, self.pipeline)
        return []

    def deadline(self) -> int | None:
        """activeDeadlineSeconds of one attempt (:attr:`Step.timeout_s`); a retried step needs one."""
        if self.step.retry is not Retry.NEVER and self.step.timeout_s is None:
            raise ValueError(f"step {self.step.name}: no timeout for retried command {self.step.command}")
        return self.step.timeout_s

    # -- template and task ----------------------------------------------------------------------
    def template(self) -> Container:
        step = self.step
        args = self.args()
        volumes, devices = self.volumes()
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
        pod = step.source_pod
        placement: dict[str, Any] = {}
        if pod is not None:
            if pod.control_plane:
                selector = {CONTROL_PLANE_LABEL: ""}
                if pod.node_param:
                    selector["kubernetes.io/hostname"] = _tag(f"workflow.parameters.{pod.node_param}")
                placement["node_selector"] = selector
                placement["tolerations"] = [
                    m.Toleration(key=key, operator="Exists", effect="NoSchedule")
                    for key in CONTROL_PLANE_TAINTS
                ]
            if not pod.api_token and not self.names.shared_service_account:
                # no token in the step's container; Argo's executor reports outputs with its own
                placement["automount_service_account_token"] = False
                placement["executor"] = m.ExecutorConfig(
                    service_account_name=self.names.step_account(step.command)
                )
        return Container(
            **placement,
            name=step.name,
            image=self.settings.image,
            image_pull_policy=self.settings.image_pull_policy,
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
            volume_mounts=self.host_mounts or None,
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


def commit_metrics(names: Names, pipeline: Pipeline) -> list[m.Prometheus]:
    """The backup's outcome, emitted by its exit handler (finalize) when it completes, conditioned on
    the commit itself. Workflow-level metrics cannot say it: Argo evaluates them on the entrypoint's
    status, before the exit handler ran (Argo Workflows docs/metrics.md), so a backup that finalize
    refused to commit would count as a success."""
    labels = [
        m.MetricLabel(key="namespace", value=names.namespace),
        m.MetricLabel(key="app", value=names.app),
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


def workflow_metrics(names: Names, pipeline: Pipeline) -> m.Metrics:
    """Workflow-level metrics. Argo evaluates them on the entrypoint's status, not on the final phase
    after the exit handler; ``{{workflow.status}}`` there has the same flaw (Argo Workflows
    docs/metrics.md). A pipeline without an exit handler ends with its entrypoint, so its outcome is
    reported here; one with an exit handler (the backup) reports its outcome from that handler
    (:func:`commit_metrics`), and only its duration here."""
    labels = [
        m.MetricLabel(key="namespace", value=names.namespace),
        m.MetricLabel(key="app", value=names.app),
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


def build_workflow_template(pipeline: Pipeline) -> WorkflowTemplate:
    """The WorkflowTemplate running ``pipeline`` (built by :mod:`workflows.pipelines`, which gives it
    its :class:`~workflows.pipeline.TemplateSettings`)."""
    settings = pipeline.settings
    if settings is None:
        raise ValueError(f"pipeline {pipeline.name}: no template settings (built without a policy)")
    names = settings.names
    templates: list[Any] = []
    tasks: list[Task] = []
    for step in pipeline.order():
        builder = _StepBuilder(pipeline, step)
        template = builder.template()
        templates.append(template)
        tasks.append(builder.task(template))
    on_exit = None
    if pipeline.exit_step:
        templates.append(_StepBuilder(pipeline, pipeline.exit_step).template())
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
        namespace=names.workflow_namespace,
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
        metrics=workflow_metrics(names, pipeline),
    )
