"""Pipelines as plain data: which steps run, with which arguments, in which order, and what each step's
pod needs.

A :class:`Pipeline` is the single definition of what a backup (and a restore, check, prune, init) does;
:mod:`workflows.pipelines` builds those of a policy. The Hera builder (:mod:`workflows.hera_builder`)
turns a :class:`Pipeline` into an Argo WorkflowTemplate from what its steps and its
:class:`TemplateSettings` carry (it never reads the policy); a local runner executes the same
:class:`Pipeline` step by step with ``python -m steps``. Nothing here imports hera.

A step's arguments are strings or *references* (:class:`Ref` subclasses) to values only known at run
time — the backup ID, a workflow parameter, the VolumeSnapshot that consistent-point cut for a volume,
the clone claim that prepare-clone created. Each executor resolves them its own way (Argo
expressions, or values read from the previous steps' outputs).

Invariants checked by :meth:`Pipeline.check`: exactly one step holds the freeze, it is never retried
and never copies; every dependency names a step; each copy depends only on its own volume's clone
(which depends only on the snapshot step); the finalizer is not part of the graph.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

from steps.errors import RETRYABLE_EXIT_CODES
from workflows.names import Names

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


@dataclass(frozen=True)
class NodeAddress(Ref):
    """``https://NODE_IP:port``: the address of the node the step's pod runs on (an etcd member on a
    control-plane node), from the pod's ``status.hostIP``."""

    port: int


@dataclass(frozen=True)
class EnvValue(Ref):
    """The value of the step container's environment variable ``name`` (one of
    :attr:`SourcePod.secret_env`), expanded where the step starts, never written into the manifests."""

    name: str


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
class SecretKeys:
    """A Secret holding the object store's access key pair: its name and the keys of the two values."""

    name: str
    access_key_id_key: str
    secret_access_key_key: str


@dataclass(frozen=True)
class RepositoryAccess:
    """How a step reaches the repository: the Secret holding its password (mounted as a file), the
    Secret with the object store's keys (None: the pod's own identity), and the store's settings."""

    password_secret: str
    password_key: str
    credentials: SecretKeys | None = None
    region: str | None = None
    path_style: bool = False
    ca_config_map: str | None = None  # a ConfigMap holding the CA bundle of the endpoint
    ca_key: str = "ca.crt"


@dataclass(frozen=True)
class Resources:
    """CPU and memory of a step's container: (resource, quantity) pairs, sorted."""

    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()


class Metrics(Enum):
    """Which metrics a step reports when it completes."""

    NONE = "none"
    FREEZE_WINDOW = "freeze-window"  # how long the app was quiesced (the freeze holder, with a hook)
    COPY = "copy"  # bytes added and duration of a volume's copy
    OUTCOME = "outcome"  # the run's outcome, from the exit step (whether the backup was committed)


@dataclass(frozen=True)
class TemplateSettings:
    """What a pipeline's workflow template takes from the policy besides its steps: object names and
    labels, the step image, and how Argo runs and keeps the workflows."""

    names: Names
    image: str
    image_pull_policy: str
    active_deadline_seconds: int
    ttl_after_success_seconds: int
    ttl_after_failure_seconds: int
    pod_gc: str
    node_selector: tuple[tuple[str, str], ...] = ()
    priority_class_name: str | None = None


@dataclass(frozen=True)
class FileMount:
    """Files a source step reads: a Secret's keys (``items``: (key, file name) pairs; empty: every key)
    or a directory of the node (``host_path``), mounted read-only at ``path``."""

    name: str
    path: str
    secret: str | None = None
    items: tuple[tuple[str, str], ...] = ()
    host_path: str | None = None


@dataclass(frozen=True)
class SourcePod:
    """What the pod of a step that backs up or restores a source (etcd, registry, bucket) gets beyond
    the repository: its files, where it runs, whether it may call the Kubernetes API at all."""

    mounts: tuple[FileMount, ...] = ()
    work_size: str | None = None  # an emptyDir of this size limit at WORK_DIR (streamed snapshots, blobs)
    control_plane: bool = False  # pinned to control-plane nodes, tolerating their taints
    api_token: bool = False  # False: no ServiceAccount token in the step's container
    as_root: bool = False  # reads root-owned files of the node (kubeadm's etcd client key)
    node_param: str | None = None  # runs on the node named by this parameter (kubernetes.io/hostname)
    secret_env: tuple[tuple[str, str, str], ...] = ()  # (variable, Secret, key): non-secret values only


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
    # What the step's pod gets, from the policy (filled in by workflows.pipeline_settings.settle):
    block: bool = False  # its volume is a raw block volume (the clone is a device, not a mount)
    repository: RepositoryAccess | None = None  # with Needs.REPOSITORY: Secrets and store settings
    resources: Resources | None = None
    timeout_s: int | None = None  # one attempt's deadline (a retried step needs one)
    metrics: Metrics = Metrics.NONE
    source_pod: SourcePod | None = None  # a source step's files and placement

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
    settings: TemplateSettings | None = None  # None: not meant for a workflow template

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


# The pipelines of a policy are built in workflows.pipelines (and workflows.pipeline_restore); these
# names are still found here for importers of the former single module.
_MOVED = {
    "pipelines_for": "workflows.pipelines",
    "plan_for": "workflows.pipelines",
    "backup_pipeline": "workflows.pipelines",
    "check_pipeline": "workflows.pipelines",
    "prune_pipeline": "workflows.pipelines",
    "init_pipeline": "workflows.pipelines",
    "restore_pipeline": "workflows.pipeline_restore",
    "restore_app_pipeline": "workflows.pipeline_restore",
    "OVERWRITE_CHOICES": "workflows.pipeline_restore",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
