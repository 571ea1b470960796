"""Protection policies: the YAML a user writes to protect one application, and its loader.

A policy file holds one or more YAML documents, each a ``ProtectionPolicy``::

    apiVersion: snapflow.io/v1alpha1
    kind: ProtectionPolicy
    metadata: {name: orders-db, namespace: shop}
    spec:
      volumes: [{pvc: data-orders-db-0}]
      quiesce: [{hook: postgresql, pod: orders-db-0, container: postgres}]
      repository:
        url: s3://backups/shop
        endpoint: https://minio.example:9000
        credentialsSecret: {name: snapflow-s3}
        passwordSecret: {name: snapflow-repository}
      schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}

:func:`load_policies` reads files and raises :class:`PolicyError` listing every problem, one line each,
``FILE: field.path: what was expected`` (``FILE#N`` names the N-th document of a multi-document file).
Credentials never live in a policy: it names Kubernetes Secrets, and the steps read them at run time.
Callers: the ``snapflow`` commands (render, lint, apply, schema), :mod:`workflows.pipelines` and the local
runner.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from steps.api import HOOK_KINDS, Target, runtime, target_problems
from steps.errors import UsageError
from workflows import __version__
from workflows.access import AccessEntry, ArgoServer, access_problems
from workflows.policy_anomaly import Anomaly
from workflows.policy_fields import (
    DNS_LABEL_RE,
    DNS_SUBDOMAIN_RE,
    ENDPOINT_RE,
    QUANTITY_RE,
    REPOSITORY_URL_RE,
    SECRET_KEY_RE,
    STORAGE_RE,
    PolicyError,
    describe_errors,
    yaml_type,
)
from workflows.policy_notifications import Notifications
from workflows.policy_rules import repository_sharing as repository_sharing
from workflows.policy_rules import semantic_problems
from workflows.policy_sources import APP_FIELDS, Source

API_VERSION = "snapflow.io/v1alpha1"
KIND = "ProtectionPolicy"
DEFAULT_IMAGE = f"snapflow/steps:{__version__}"

# Names derived from a policy name must fit Kubernetes limits: a CronWorkflow name has at most 52
# characters and ours are "backup-NAME", "prune-NAME", "check-NAME".
MAX_POLICY_NAME = 45


DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_RE, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_RE, max_length=253)]
SecretKey = Annotated[str, Field(pattern=SECRET_KEY_RE, max_length=253)]
Quantity = Annotated[str, Field(pattern=QUANTITY_RE)]
ParamValue = str | int | float | bool | list[str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class CredentialsSecret(_Model):
    """A Secret in the policy's namespace holding the S3 access key pair (read by the steps as env)."""

    name: ObjectName = Field(description="Name of the Secret.")
    access_key_id_key: SecretKey = Field(
        runtime.AWS_ACCESS_KEY_ID, description="Key holding the access key ID."
    )
    secret_access_key_key: SecretKey = Field(
        runtime.AWS_SECRET_ACCESS_KEY, description="Key holding the secret access key."
    )


class PasswordSecret(_Model):
    """A Secret in the policy's namespace holding the repository password (mounted as a file)."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: SecretKey = Field("password", description="Key holding the repository password.")


class CABundle(_Model):
    """A ConfigMap holding the CA certificates that sign the object store's TLS certificate."""

    config_map: ObjectName = Field(description="Name of the ConfigMap.")
    key: SecretKey = Field("ca.crt", description="Key holding the PEM bundle.")


class ObjectLock(_Model):
    """S3 Object Lock of the repository's bucket: what a backup writes cannot be deleted for a while."""

    mode: Literal["governance", "compliance"] = Field(
        description="compliance: nobody can delete a locked version early; governance: only with a bypass permission."
    )
    days: int = Field(
        ge=1, le=36500, description="How long objects stay locked; prune extends it for kept backups."
    )


class Repository(_Model):
    """Where backups go: one encrypted, deduplicated repository in S3-compatible object storage."""

    url: str = Field(
        description="s3://BUCKET/PREFIX",
        json_schema_extra={"pattern": REPOSITORY_URL_RE},  # for editors; the validator decides
    )
    endpoint: str | None = Field(
        None, pattern=ENDPOINT_RE, description="S3 endpoint URL (MinIO, SeaweedFS, ...); omit for AWS S3."
    )
    region: str | None = Field(None, max_length=64, description="S3 region.")
    path_style: bool = Field(False, description="Use path-style bucket addressing (most self-hosted stores).")
    ca_bundle: CABundle | None = Field(None, description="CA bundle for the endpoint's TLS certificate.")
    credentials_secret: CredentialsSecret | None = Field(
        None, description="Secret with the S3 access keys; omit to use the pod's own identity (web identity)."
    )
    password_secret: PasswordSecret = Field(description="Secret with the repository password.")
    prune_credentials_secret: CredentialsSecret | None = Field(
        None,
        description="Secret with the S3 access keys prune uses (it deletes object versions and extends "
        "locks); lets the backups run with append-only keys. Default: credentialsSecret.",
    )
    object_lock: ObjectLock | None = Field(
        None,
        description="Create the bucket with Object Lock and this default retention (init), and keep what "
        "kept backups need locked (prune). Omit for a bucket without Object Lock.",
    )
    shared: bool = Field(
        False,
        description=(
            "Allow this repository to be used by policies of other namespaces. Whoever holds a "
            "repository's key can read every backup in it, so by default each namespace has its own."
        ),
    )

    @field_validator("url")
    @classmethod
    def _canonical_url(cls, value: str) -> str:
        """Checked and spelled canonically (:mod:`steps.drivers.repourl`): two spellings of one
        repository become one string, which the rendered workflows and the sharing check use."""
        from steps.api import canonical_repo_url

        try:
            return canonical_repo_url(value, field="")
        except UsageError as err:
            raise ValueError(str(err)) from None

    @field_validator("endpoint")
    @classmethod
    def _canonical_endpoint(cls, value: str | None) -> str | None:
        from steps.api import check_endpoint

        if value is None:
            return None
        try:
            return check_endpoint(value, field="")
        except UsageError as err:
            raise ValueError(str(err)) from None


class BlockTracking(_Model):
    """Changed-block tracking of a raw block volume: the copy asks the CSI driver's SnapshotMetadata
    service (Kubernetes' external-snapshot-metadata sidecar) which ranges hold data or changed since the
    parent's snapshot, and reads only those (docs/user/block-volumes.md). Without the service it reads
    in full and says so."""

    driver: ObjectName | None = Field(
        None,
        description="CSI driver whose SnapshotMetadataService serves the volume; default: the driver of "
        "the snapshot's VolumeSnapshotContent.",
    )
    full_read_every: int = Field(
        7,
        ge=0,
        le=10000,
        description="Every Nth copy also reads the volume in full and compares with what the service "
        "said; a service caught missing changes is not used again for the volume (0: never compare).",
    )


class VolumeSpec(_Model):
    """One volume to protect: a PersistentVolumeClaim (cluster) or a path (local runs)."""

    pvc: ObjectName | None = Field(None, description="PersistentVolumeClaim name.")
    path: str | None = Field(None, description="Local directory (local runs only).")
    name: DnsLabel | None = Field(None, description="Volume name in records and step names; default: pvc.")
    role: Literal["data", "wal"] = Field(
        "data", description="'wal' marks a PostgreSQL WAL volume (cut after the backup stops)."
    )
    block: bool = Field(False, description="The PVC is a raw block volume.")
    block_tracking: BlockTracking | None = Field(
        None,
        description="Read only the blocks that hold data or changed (a raw block PVC whose CSI driver "
        "offers changed-block tracking); {} for the defaults.",
    )
    target: DnsLabel | None = Field(
        None, description="Name of the quiesce target whose hook covers this volume; default: every target."
    )

    @model_validator(mode="after")
    def _block_tracking_needs_a_block_pvc(self) -> VolumeSpec:
        if self.block_tracking is not None and not (self.block and self.pvc):
            raise ValueError(
                "@blockTracking|expected only on a raw block PVC (pvc and block: true): changed-block "
                "tracking reads block devices"
            )
        return self

    @property
    def volume_name(self) -> str:
        if self.name:
            return self.name
        if self.pvc:
            return self.pvc
        return Path(self.path or "volume").name.lower()


class QuiesceTarget(_Model):
    """How to quiesce one part of the application while its volumes are cut."""

    hook: Literal[HOOK_KINDS] = Field(description="Hook kind.")  # type: ignore[valid-type]
    pod: ObjectName | None = Field(None, description="Pod the hook runs in (through pods/exec).")
    container: DnsLabel | None = Field(None, description="Container of the pod; default: the first.")
    name: DnsLabel | None = Field(None, description="Target name in records; default: the pod name.")
    local: bool = Field(False, description="Run the hook as local processes (local runs only).")
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="Hook parameters (host, port, user, mode, commands, ...)."
    )

    @property
    def target_name(self) -> str:
        return self.name or self.pod or self.hook

    @property
    def plan_target(self) -> Target:
        """This target as the steps read it from the plan."""
        return Target(
            name=self.target_name,
            hook=self.hook,
            pod=self.pod,
            container=self.container,
            local=self.local,
            params=dict(sorted(self.params.items())),
        )

    @model_validator(mode="after")
    def _run_time_rules(self) -> QuiesceTarget:
        # The freeze holder's own rules (hook parameters, credentials, the pod) with its own message, so
        # what lints clean is not refused at run time; checked here, with the target's shape, so that
        # a credential is reported with every other problem of the file.
        problems = target_problems(self.plan_target)
        if problems:
            field, message = problems[0]
            raise ValueError(f"@{field}|{message}")
        return self


class Schedule(_Model):
    """When the backup (and optionally prune and check) run, as CronWorkflows."""

    cron: str = Field(description="Backup schedule, a cron expression like '0 2 * * *' or @daily.")
    timezone: str = Field("UTC", description="IANA time zone of the schedules, e.g. Europe/Berlin.")
    starting_deadline_seconds: int = Field(
        600, ge=0, description="A run that could not start within this many seconds is skipped."
    )
    suspend: bool = Field(False, description="Render the CronWorkflows suspended.")
    prune: str | None = Field(None, description="Schedule of the retention (prune) run.")
    check: str | None = Field(None, description="Schedule of the repository check run.")

    @field_validator("cron", "prune", "check")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from workflows.schedule import CronError, CronSchedule

        try:
            return CronSchedule.parse(value).expression
        except CronError as err:
            raise ValueError(str(err)) from None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone like UTC or Europe/Berlin, got {value!r}") from None
        return value


class Retention(_Model):
    """Which committed backups prune keeps (the union of all rules)."""

    keep_last: int | None = Field(None, ge=0, description="Keep the N most recent backups.")
    keep_hourly: int | None = Field(None, ge=0, description="Keep the last backup of each of N hours.")
    keep_daily: int | None = Field(None, ge=0, description="Keep the last backup of each of N days.")
    keep_weekly: int | None = Field(None, ge=0, description="Keep the last backup of each of N weeks.")
    keep_monthly: int | None = Field(None, ge=0, description="Keep the last backup of each of N months.")
    keep_yearly: int | None = Field(None, ge=0, description="Keep the last backup of each of N years.")

    def rules(self) -> list[tuple[str, int]]:
        """(flag suffix, count) of every rule that is set, e.g. [("last", 7), ("daily", 14)]."""
        out = []
        for unit in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            value = getattr(self, f"keep_{unit}")
            if value:
                out.append((unit, value))
        return out


DEFAULT_SCRATCH_SIZE = "10Gi"
_STORAGE_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
MIN_SCRATCH_BYTES = 2**20


def storage_bytes(text: str) -> int | None:
    """Bytes of a storage quantity like ``10Gi`` or ``500M``; None when it is not one."""
    if not re.match(STORAGE_RE, text):
        return None
    number = text.rstrip("kKMGTPEi")
    return int(float(number) * _STORAGE_UNITS[text[len(number) :]])


class RestoreTest(_Model):
    """The restore test of the check run: the newest committed backup is restored into a scratch volume
    of the check's own (deleted with its pod), then an optional command checks the restored files."""

    enabled: bool = Field(
        False,
        description="Run the restore test in every check run, scheduled ones included (the default of the "
        "check workflow's restore-test parameter); false: only in runs that set restore-test=true.",
    )
    scratch_size: str = Field(
        DEFAULT_SCRATCH_SIZE,
        pattern=STORAGE_RE,
        description="Size of the scratch volume (a Kubernetes quantity like 50Gi); it must hold every "
        "volume of the backup.",
    )
    storage_class_name: ObjectName | None = Field(
        None, description="StorageClass of the scratch volume; default: the cluster's default class."
    )
    check_command: str | None = Field(
        None,
        description="Shell command run in the step container after the restore, with SNAPFLOW_RESTORE_DIR "
        "naming the restored tree (one folder per volume); a non-zero exit fails the check.",
    )
    check_timeout_seconds: int = Field(600, gt=0, description="The check command is stopped after this long.")

    @field_validator("scratch_size")
    @classmethod
    def _scratch_size(cls, value: str) -> str:
        size = storage_bytes(value)
        if size is not None and size < MIN_SCRATCH_BYTES:
            raise ValueError(f"expected at least 1Mi (a bare number counts bytes), got {value!r}")
        return value

    @field_validator("check_command")
    @classmethod
    def _check_command(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("expected a shell command, got an empty string")
        if "{{" in value:
            raise ValueError("expected no '{{' (Argo would read it as a template tag)")
        return value


class Verify(_Model):
    """How much of what was written is read back, and how the check run tests a restore."""

    read_data_percent: float = Field(
        10, ge=0, le=100, description="Percent of this backup's data read back after each backup."
    )
    check_read_data_percent: float = Field(
        0, ge=0, le=100, description="Percent of the whole repository's data read by the check run."
    )
    restore_test: RestoreTest | None = Field(
        None,
        description="Restore test of the check run; omit for a check workflow without one.",
    )


class Freeze(_Model):
    """How long the application may stay quiesced."""

    deadline_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description='The longest the app stays quiesced: it is thawed at most this + 2 s after its freeze began, whatever happens to the holder (docs/consistency.md, "The bound").',
    )
    keepalive_seconds: float = Field(5, gt=0, description="Interval of the hold's liveness checks.")


class Snapshot(_Model):
    """How volumes are cut."""

    consistency: Literal["volume", "group"] = Field(
        "volume",
        description="'group' cuts all volumes at once with a VolumeGroupSnapshot (needs CSI support; "
        "never falls back to per-volume snapshots).",
    )
    class_name: ObjectName | None = Field(
        None, description="VolumeSnapshotClass; default: the cluster default."
    )
    group_class_name: ObjectName | None = Field(
        None, description="VolumeGroupSnapshotClass for consistency: group; default: the cluster default."
    )
    timeout_seconds: int = Field(600, gt=0, description="How long to wait for a snapshot to be ready to use.")
    delete_after_copy: bool = Field(True, description="Delete the VolumeSnapshots once copied.")


class Capture(_Model):
    """What the backup exports of the app's Kubernetes objects, next to its volumes."""

    secrets: bool = Field(
        True,
        description=(
            "Export the app's Secrets with its other objects (stored encrypted in the repository), so a "
            "restore is complete. Needs the right to list every Secret of the namespace; false leaves "
            "them out: recreate them before restoring."
        ),
    )


class Resources(_Model):
    """CPU and memory of the data mover (copy, verify, restore, prune, check)."""

    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "512Mi"}
    )
    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], Quantity] = Field(
        default_factory=lambda: {"memory": "2Gi"}
    )


class StepTimeouts(_Model):
    """How long one attempt of a step may run (its pod's activeDeadlineSeconds). A step failing with a
    temporary error (exit code 75) is retried up to 3 times; the retry budget of each step is derived
    from its timeout, so that a retry is never lost to an attempt that used up the budget."""

    capture: int = Field(900, gt=0, description="Export of the app's Kubernetes objects.")
    prepare_clone: int | None = Field(
        None, gt=0, description="Wait for a snapshot and clone it; default: snapshot.timeoutSeconds + 600."
    )
    copy_: int = Field(10800, gt=0, alias="copy", description="Copy of one volume into the repository.")
    verify: int = Field(3600, gt=0, description="Verify of the backup.")
    finalize: int = Field(900, gt=0, description="The exit handler (thaw, cleanup, commit).")
    restore: int = Field(10800, gt=0, description="Restore of one snapshot into a PVC.")
    check: int = Field(10800, gt=0, description="Repository check (and its restore test).")
    prune: int = Field(3600, gt=0, description="Retention and prune.")
    init: int = Field(300, gt=0, description="Creation of the repository.")

    def for_command(self, command: str, snapshot_timeout_s: int) -> int | None:
        """The timeout of a step command (None: the command has none of its own here)."""
        if command == "prepare-clone":
            return self.prepare_clone or snapshot_timeout_s + 600
        if command == "copy" or command.endswith(("-backup", "-snapshot")):
            return self.copy_  # a source's backup moves data like the copy of a volume
        if command.endswith("-restore"):
            return self.restore
        value = getattr(self, command, None) if command in type(self).model_fields else None
        return value if isinstance(value, int) else None


class WorkflowSettings(_Model):
    """How Argo runs and keeps the workflows of this policy."""

    active_deadline_seconds: int = Field(21600, gt=0, description="A backup running longer is stopped.")
    ttl_after_success_seconds: int = Field(604800, ge=0, description="Keep a succeeded workflow this long.")
    ttl_after_failure_seconds: int = Field(1209600, ge=0, description="Keep a failed workflow this long.")
    pod_gc: Literal["OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"] = Field(
        "OnPodSuccess",
        alias="podGC",
        description="When step pods are deleted (failed pods stay for debugging by default).",
    )
    service_account_name: ObjectName | None = Field(
        None,
        description=(
            "Run every step as this existing ServiceAccount instead of rendering one per step kind with "
            "its Role (each step's least privilege is then lost)."
        ),
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector of step pods.")
    priority_class_name: ObjectName | None = Field(None, description="PriorityClass of step pods.")
    step_timeouts: StepTimeouts = Field(
        default_factory=StepTimeouts, description="How long one attempt of each retried step may run."
    )
    step_memory_limit: Quantity = Field(
        "256Mi",
        description=(
            "Memory limit of the steps that move no data (capture, consistent-point, prepare-clone, "
            "finalize); raise it for apps with very many objects. A step killed for memory is not retried."
        ),
    )

    @field_validator("step_memory_limit")
    @classmethod
    def _step_memory(cls, value: str) -> str:
        size = storage_bytes(value)
        if size is None or size < 64 * 2**20:
            raise ValueError(f"expected a memory size of at least 64Mi (the steps' request), got {value!r}")
        return value


class Movers(_Model):
    """Where the data movers run (docs/user/mover-namespace.md)."""

    namespace: DnsLabel | None = Field(
        None,
        description=(
            "Run the workflows (and so the copy, which reads every owner's files as root) in this "
            "namespace instead of the app's, with clones made there from the app's snapshot contents, so "
            "the app's namespace can enforce Pod Security restricted. Not the policy's own namespace."
        ),
    )


class PolicySpec(_Model):
    cluster: DnsLabel = Field("default", description="Cluster name recorded with every backup.")
    app: DnsLabel | None = Field(None, description="Application name; default: the policy name.")
    selector: str | None = Field(
        None,
        pattern=r"^[^\n]+$",
        description="Label selector of the app's Kubernetes objects to capture; default: the whole namespace.",
    )
    volumes: list[VolumeSpec] = Field(
        default_factory=list, description="Volumes to protect (required unless spec.source is given)."
    )
    quiesce: list[QuiesceTarget] = Field(default_factory=list, description="How the app is quiesced.")
    snapshot: Snapshot = Field(default_factory=Snapshot, description="How volumes are cut.")
    capture: Capture = Field(default_factory=Capture, description="What is exported of the app's objects.")
    freeze: Freeze = Field(default_factory=Freeze, description="How long the app may stay quiesced.")
    repository: Repository = Field(description="Where backups go.")
    schedule: Schedule | None = Field(None, description="Omit for on-demand backups only.")
    retention: Retention = Field(
        default_factory=lambda: Retention(keep_last=7),
        description="Which backups prune keeps; default keepLast 7.",
    )
    verify: Verify = Field(default_factory=Verify, description="How much is read back.")
    parallelism: int = Field(2, ge=1, le=64, description="Volumes copied at once.")
    resources: Resources = Field(default_factory=Resources, description="Resources of the data mover.")
    image: str = Field(DEFAULT_IMAGE, min_length=1, pattern=r"^\S+$", description="Snapflow step image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the step image."
    )
    exclude: list[str] = Field(default_factory=list, description="Path patterns not copied.")
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings, description="Argo settings.")
    movers: Movers = Field(default_factory=Movers, description="A dedicated namespace for the data movers.")
    anomaly: Anomaly = Field(
        default_factory=Anomaly,
        description="What a backup flagged as unusual (ransomware, mass deletion) does.",
    )
    notifications: Notifications = Field(
        default_factory=list,
        description="Webhooks told when a backup is committed or fails (docs/user/notifications.md).",
    )
    source: Source | None = Field(
        None,
        description="Protect a cluster's etcd, an OCI registry or an S3 bucket instead of an app "
        "(excludes app, selector, volumes and quiesce).",
    )
    access: list[AccessEntry] = Field(
        default_factory=list,
        description="Who may see and run this policy's workflows through Argo Server's SSO, by role "
        "(docs/user/access.md).",
    )
    argo_server: ArgoServer = Field(
        default_factory=ArgoServer, description="Where Argo Server looks for spec.access's ServiceAccounts."
    )

    @model_validator(mode="after")
    def _app_or_source(self) -> PolicySpec:
        if self.source is None:
            if not self.volumes:  # an app's volumes are required (without spec.source)
                given = "volumes" in self.model_fields_set
                raise ValueError(f"@volumes|{'expected at least 1 item(s)' if given else 'required'}")
            return self
        for name in APP_FIELDS:
            if name in self.model_fields_set:
                raise ValueError(f"@{name}|expected no {name} with spec.source (it protects no app)")
        if self.schedule and self.schedule.prune:
            raise ValueError(
                "@schedule|expected no prune schedule with spec.source: the source's workflows do not "
                "prune; schedule prune with an app policy on the same repository or run it by hand"
            )
        if self.verify.restore_test is not None:
            raise ValueError("@verify|expected no restoreTest with spec.source (it restores app volumes)")
        return self


class Metadata(_Model):
    name: str = Field(pattern=DNS_LABEL_RE, max_length=MAX_POLICY_NAME, description="Policy name.")
    namespace: DnsLabel = Field(
        description="Namespace of the app, and of its workflows and Secrets unless spec.movers names another."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to rendered objects.")


class Policy(_Model):
    """A protection policy (one application)."""

    model_config = ConfigDict(title="ProtectionPolicy")

    api_version: Literal["snapflow.io/v1alpha1"] = Field(
        alias="apiVersion", description="Policy format version."
    )
    kind: Literal["ProtectionPolicy"] = Field(description="Always ProtectionPolicy.")
    metadata: Metadata = Field(description="Name and namespace of the policy.")
    spec: PolicySpec = Field(description="What to protect, how and where.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def workflow_namespace(self) -> str:
        """Where the workflows, their pods, the plan and the repository's Secrets live: the mover
        namespace when the policy names one, else the app's."""
        return self.spec.movers.namespace or self.metadata.namespace

    @property
    def app(self) -> str:
        return self.spec.app or self.metadata.name

    @property
    def is_local(self) -> bool:
        return any(v.path for v in self.spec.volumes)

    @property
    def source_kind(self) -> str | None:
        """etcd, registry or bucket for a policy with spec.source; None for an app."""
        return self.spec.source.kind if self.spec.source else None


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy and where it came from (``source`` is ``FILE`` or ``FILE#N``)."""

    policy: Policy
    source: str


# --------------------------------------------------------------------------------------------------
# Checks that span several fields (pydantic checks shapes and types first).


# --------------------------------------------------------------------------------------------------
# Loading.


def parse_policy(data: Any, source: str = "policy") -> Policy:
    """Validate one policy document; raises :class:`PolicyError` with one line per problem."""
    if not isinstance(data, dict):
        raise PolicyError([f"{source}: expected a mapping (a ProtectionPolicy), got {yaml_type(data)}"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        lines = [
            f"{source}: {path}: {message}" if path else f"{source}: {message}"
            for path, message in describe_errors(list(err.errors()), Policy)
        ]
        raise PolicyError(lines) from None
    problems = semantic_problems(policy) + access_problems(policy)
    if problems:
        raise PolicyError([f"{source}: {path}: {message}" for path, message in problems])
    return policy


def yaml_documents(path: Path, expected: str) -> list[Any]:
    """The non-empty YAML documents of ``path``; one-line problems name the file (``expected``: what
    the file should be, for the message about a directory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([f"{path}: cannot read: no such file"]) from None
    except IsADirectoryError:
        raise PolicyError([f"{path}: cannot read: is a directory (expected {expected})"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise PolicyError([f"{path}: cannot read: {err.__class__.__name__}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise PolicyError([f"{path}: {where}expected valid YAML ({problem})"]) from None
    return docs


def policy_documents(path: Path) -> list[Any]:
    """The policies of a policy file (a list document counts as its items)."""
    docs = yaml_documents(path, "a policy file")
    flat: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            flat.extend(doc)
        else:
            flat.append(doc)
    if not flat:
        raise PolicyError([f"{path}: expected at least one ProtectionPolicy, the file is empty"])
    return flat


def load_policies(paths: Sequence[str | Path]) -> list[LoadedPolicy]:
    """Read and validate every policy of every file; raises :class:`PolicyError` listing all problems."""
    problems: list[str] = []
    loaded: list[LoadedPolicy] = []
    for raw in paths:
        path = Path(raw)
        try:
            docs = policy_documents(path)
        except PolicyError as err:
            problems.extend(err.problems)
            continue
        for i, doc in enumerate(docs, start=1):
            source = f"{path}#{i}" if len(docs) > 1 else str(path)
            try:
                loaded.append(LoadedPolicy(parse_policy(doc, source), source))
            except PolicyError as err:
                problems.extend(err.problems)
    seen: dict[tuple[str, str], str] = {}
    for item in loaded:
        key = (item.policy.namespace, item.policy.name)
        if key in seen:
            problems.append(
                f"{item.source}: metadata.name: expected a unique name per namespace, "
                f"{key[1]!r} in {key[0]!r} is also defined in {seen[key]}"
            )
        seen.setdefault(key, item.source)
    if problems:
        raise PolicyError(problems)
    return loaded


def json_schema() -> dict[str, Any]:
    """The JSON schema of one policy document, for editors (``snapflow schema``)."""
    schema = Policy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Snapflow ProtectionPolicy"
    schema["description"] = "One application protected by Snapflow (apiVersion snapflow.io/v1alpha1)."
    return schema
