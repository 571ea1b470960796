"""The step-runtime contract: what a step finds in its environment and where.

Every environment variable a step (or the control plane running steps on this machine) reads is named
here and only here; the paths at which a step pod finds its plan, its password, its CA bundle and its
volumes, and the Linux capabilities a data step is given, too. The Argo builder, the restore mover pod
and the local runner build a step's environment with :func:`step_env`, so the three agree on it.

A leaf module: it imports only the standard library and :mod:`steps.errors`, so every layer may read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Environment variables

# The repository password (never an argument): the value, or a file holding it (a mounted Secret).
PASSWORD = "SNAPFLOW_PASSWORD"
PASSWORD_FILE = "SNAPFLOW_PASSWORD_FILE"
# ``key add`` / ``key passwd``: the new password, or a file holding it.
NEW_PASSWORD = "SNAPFLOW_NEW_PASSWORD"
NEW_PASSWORD_FILE = "SNAPFLOW_NEW_PASSWORD_FILE"
# Suffix that turns a password variable into the name of its file variable.
FILE_SUFFIX = "_FILE"

# Object store credentials (static keys; web identity; instance role when neither is set).
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
AWS_WEB_IDENTITY_TOKEN_FILE = "AWS_WEB_IDENTITY_TOKEN_FILE"
AWS_ROLE_ARN = "AWS_ROLE_ARN"
AWS_REGION = "AWS_REGION"
AWS_CA_BUNDLE = "AWS_CA_BUNDLE"

# Object store connection.
S3_ENDPOINT = "SNAPFLOW_S3_ENDPOINT"
S3_REGION = "SNAPFLOW_S3_REGION"
S3_PATH_STYLE = "SNAPFLOW_S3_PATH_STYLE"
S3_CA_BUNDLE = "SNAPFLOW_S3_CA_BUNDLE"
S3_CONNECT_TIMEOUT = "SNAPFLOW_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT = "SNAPFLOW_S3_READ_TIMEOUT"
S3_RETRIES = "SNAPFLOW_S3_RETRIES"
S3_RETRY_SECONDS = "SNAPFLOW_S3_RETRY_SECONDS"
OBJECT_LOCK_MODE = "SNAPFLOW_OBJECT_LOCK_MODE"
OBJECT_LOCK_DAYS = "SNAPFLOW_OBJECT_LOCK_DAYS"

# Kubernetes API connection (the steps that talk to the cluster).
KUBE_CONTEXT = "SNAPFLOW_KUBE_CONTEXT"
KUBE_CONNECT_TIMEOUT = "SNAPFLOW_KUBE_CONNECT_TIMEOUT"
KUBE_READ_TIMEOUT = "SNAPFLOW_KUBE_READ_TIMEOUT"
KUBE_RETRIES = "SNAPFLOW_KUBE_RETRIES"
KUBECONFIG = "KUBECONFIG"
KUBERNETES_SERVICE_HOST = "KUBERNETES_SERVICE_HOST"

# Set by Argo in every step pod.
ARGO_WORKFLOW_NAME = "ARGO_WORKFLOW_NAME"
ARGO_PROGRESS_FILE = "ARGO_PROGRESS_FILE"

# Who started the workflow, for the audit trail: Argo's labels on the Workflow, passed by the pipeline.
# Anyone who can create Workflows can set them, so the trail records them as claimed.
AUDIT_CREATOR = "SNAPFLOW_AUDIT_CREATOR"
AUDIT_CREATOR_EMAIL = "SNAPFLOW_AUDIT_CREATOR_EMAIL"
AUDIT_CREATOR_USERNAME = "SNAPFLOW_AUDIT_CREATOR_USERNAME"
AUDIT_CRON_WORKFLOW = "SNAPFLOW_AUDIT_CRON_WORKFLOW"
# variable -> the Workflow label it carries
AUDIT_LABELS = (
    (AUDIT_CREATOR, "workflows.argoproj.io/creator"),
    (AUDIT_CREATOR_EMAIL, "workflows.argoproj.io/creator-email"),
    (AUDIT_CREATOR_USERNAME, "workflows.argoproj.io/creator-preferred-username"),
    (AUDIT_CRON_WORKFLOW, "workflows.argoproj.io/cron-workflow"),
)

# Step behaviour.
DEBUG = "SNAPFLOW_DEBUG"  # "1": show the traceback of an unexpected error
TEMPLATES = "SNAPFLOW_TEMPLATES"  # the Jinja2 templates folder (the step image sets it)
PROGRESS_INTERVAL = "SNAPFLOW_PROGRESS_INTERVAL"  # seconds between plain progress lines
PRUNE_GRACE = "SNAPFLOW_PRUNE_GRACE"  # prune's default grace period
STEP_IMAGE = "SNAPFLOW_STEP_IMAGE"  # restore-app's mover pods
RESTORE_DIR = "SNAPFLOW_RESTORE_DIR"  # given to check's --restore-check command

# Tuning of the data path (defaults in the modules that read them).
SCAN_AHEAD = "SNAPFLOW_SCAN_AHEAD"
SCAN_THREADS = "SNAPFLOW_SCAN_THREADS"
FILE_QUEUE = "SNAPFLOW_FILE_QUEUE"
FILE_WORKERS = "SNAPFLOW_FILE_WORKERS"
UPLOADERS = "SNAPFLOW_UPLOADERS"
INDEX_EVERY_PACKS = "SNAPFLOW_INDEX_EVERY_PACKS"
CHUNKER_TRANSLATE = "SNAPFLOW_CHUNKER_TRANSLATE"
RESTORE_CONNECTIONS = "SNAPFLOW_RESTORE_CONNECTIONS"
RESTORE_RANGE_MIB = "SNAPFLOW_RESTORE_RANGE_MIB"
RESTORE_CREATORS = "SNAPFLOW_RESTORE_CREATORS"
KDF_TEST_N = "SNAPFLOW_KDF_TEST_N"
# "0" / "1"; unset: with 2 CPUs or more (helper_process: a restore's file creator, a copy's cache warmer)
HELPER_PROCESSES = "SNAPFLOW_HELPER_PROCESSES"
KDF_THREADS = "SNAPFLOW_KDF_THREADS"

# The control plane on this machine (``snapflow run`` and its sandbox).
STATE_DIR = "SNAPFLOW_STATE_DIR"
PG_BIN = "SNAPFLOW_PG_BIN"

# Snapflow's own credentials: never passed on to a hook, a database client or a check command.
CREDENTIAL_ENV = (PASSWORD, PASSWORD_FILE, AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID, AWS_SESSION_TOKEN)
# The connection settings a restore mover pod inherits from the process that starts it, and who runs
# it (the restore's audit records name the workflow and its claimed creator, as restore-app's do).
MOVER_INHERITED_ENV = (S3_REGION, S3_PATH_STYLE, ARGO_WORKFLOW_NAME, *(var for var, _ in AUDIT_LABELS))

# --------------------------------------------------------------------------------------------------
# Paths in a step pod (the Argo builder mounts them; the steps find them there)

PLAN_DIR = "/etc/snapflow/plan"  # the plan ConfigMap, read-only
PLAN_KEY = "plan.json"
PASSWORD_DIR = "/etc/snapflow/repository"  # the repository password Secret, read-only, mode 0440
PASSWORD_KEY = "password"
CA_DIR = "/etc/snapflow/ca"  # the object store's CA bundle ConfigMap, read-only
CA_KEY = "ca.crt"
SCRATCH_DIR = "/tmp"  # a small emptyDir; output parameters are written here
OUTPUT_DIR = SCRATCH_DIR
SOURCE_ROOT = "/snapflow/volumes"  # <SOURCE_ROOT>/<volume>: a clone to back up, read-only
DEVICE_ROOT = "/dev/snapflow"  # <DEVICE_ROOT>/<volume>: a block clone
TARGET_DIR = "/snapflow/target"  # the volume a restore step writes
INPUT_DIR = "/snapflow/inputs"  # raw input artifacts
SCRATCH_VOLUME_DIR = "/snapflow/scratch"  # a generic ephemeral volume, when a step asks for one

# Paths in a restore mover pod (restore-app --mover pod).
MOVER_PASSWORD_DIR = "/var/run/snapflow/password"
MOVER_CA_DIR = "/var/run/snapflow/ca"
MOVER_TARGET_DIR = "/data"
MOVER_TARGET_DEVICE = "/dev/snapflow-target"

# --------------------------------------------------------------------------------------------------
# Users and capabilities

STEP_USER = 65532  # the non-root user (and group) of every step that touches no volume's files
# Reading every file of a volume, whoever owns it (the clone is mounted read-only; DAC_READ_SEARCH would
# be narrower, but Pod Security baseline does not allow it).
SOURCE_CAPABILITIES = ("DAC_OVERRIDE",)
# Writing a volume and keeping owners, modes and set-id bits (the restore step of a restore workflow).
# No SETFCAP: it is needed only to write a file's capabilities (the security.capability attribute), and
# the repository format stores no extended attributes, so no restore writes them; the copy only reads.
TARGET_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID")
# A restore-app mover pod run as root runs the same restore as TARGET_CAPABILITIES, and has had SETFCAP
# since its first version, for file capabilities; as above, nothing a restore writes uses it today.
# Pod Security baseline allows it; it stays so that a mover pod keeps the rights users granted it.
MOVER_CAPABILITIES = ("CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID", "SETFCAP")


# --------------------------------------------------------------------------------------------------
# A step's environment


@dataclass(frozen=True)
class SecretKey:
    """A value taken from a key of a Kubernetes Secret (never written into a manifest as text)."""

    secret: str
    key: str


@dataclass(frozen=True)
class Credentials:
    """The Secret holding the object store's keys, and the keys in it."""

    secret: str
    access_key_id_key: str = AWS_ACCESS_KEY_ID
    secret_access_key_key: str = AWS_SECRET_ACCESS_KEY


def step_env(
    *,
    password_file: str | None = f"{PASSWORD_DIR}/{PASSWORD_KEY}",
    credentials: Credentials | None = None,
    region: str | None = None,
    path_style: bool = False,
    ca_bundle: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str | SecretKey]:
    """The environment of a step that opens the repository, in a fixed order: the object store's keys
    (from ``credentials``), the password file, the region, path-style addressing, the CA bundle file,
    then ``extra`` (sorted by name). A value is text, or a :class:`SecretKey` a pod resolves itself."""
    env: dict[str, str | SecretKey] = {}
    if credentials is not None:
        env[AWS_ACCESS_KEY_ID] = SecretKey(credentials.secret, credentials.access_key_id_key)
        env[AWS_SECRET_ACCESS_KEY] = SecretKey(credentials.secret, credentials.secret_access_key_key)
    if password_file:
        env[PASSWORD_FILE] = password_file
    if region:
        env[S3_REGION] = region
    if path_style:
        env[S3_PATH_STYLE] = "true"
    if ca_bundle:
        env[S3_CA_BUNDLE] = ca_bundle
    for name in sorted(extra or {}):
        env[name] = (extra or {})[name]
    return env


def pod_env(env: Mapping[str, str | SecretKey]) -> list[dict]:
    """``env`` as a container's ``env`` list (Kubernetes field names), in its order."""
    out: list[dict] = []
    for name, value in env.items():
        if isinstance(value, SecretKey):
            out.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": value.secret, "key": value.key}}}
            )
        else:
            out.append({"name": name, "value": value})
    return out


def process_env(env: Mapping[str, str | SecretKey]) -> dict[str, str]:
    """``env`` for a process on this machine; a :class:`SecretKey` cannot be resolved here."""
    secret = [name for name, value in env.items() if isinstance(value, SecretKey)]
    if secret:
        raise ValueError(f"{', '.join(secret)}: a Secret's key cannot be resolved for a local process")
    return {name: str(value) for name, value in env.items()}
