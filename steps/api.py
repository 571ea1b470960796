"""The public face of :mod:`steps`: everything the control plane (:mod:`workflows`) uses of it.

``workflows`` imports from ``steps.api`` (and the two leaf contracts :mod:`steps.errors` and
:mod:`steps.runtime`) and nothing else of ``steps``; the rest of the package is private to the steps,
free to move. ``tests/unit/test_layers.py`` checks it. A name is added here when the control plane
needs it, never a wrapper where a re-export does.
"""

from __future__ import annotations

from steps import runtime
from steps.cli import build_command_parser, discover_commands, run_command
from steps.commands import backups as backups_command
from steps.drivers import kube_objects as manifest_render
from steps.drivers.cbt import API_VERSION as SNAPSHOT_METADATA_API
from steps.drivers.cbt import KIND as SNAPSHOT_METADATA_KIND
from steps.drivers.files import write_text_atomic
from steps.drivers.kube import KubeClient, KubeError, KubeSettings
from steps.drivers.kube_objects import dig
from steps.drivers.objectstore import open_store
from steps.drivers.repourl import canonical_repo_url, check_endpoint
from steps.drivers.snapshot import CutResult
from steps.drivers.snapshot_local import LocalSnapshotDriver, is_btrfs_subvolume
from steps.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    RETRYABLE_EXIT_CODES,
    PermanentError,
    SnapflowError,
    TemporaryError,
    UsageError,
)
from steps.manifests.cluster_checks import allowed, preflight
from steps.manifests.notifications import spec_problems as notification_problems
from steps.manifests.pod_images import parse_images_of
from steps.manifests.podsecurity import ENFORCE_LABEL, LEVELS
from steps.manifests.podsecurity import check as pod_security_check
from steps.plan import (
    HOOK_KINDS,
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
from steps.quiesce.cut import fsfreeze_mounts
from steps.quiesce.hook_specs import target_problems
from steps.quiesce.postgresql import labels_for_volume, write_backup_label
from steps.repository import audit as audit_trail
from steps.repository.catalog import read_catalog
from steps.repository.opener import open_repository, open_repository_on, repository_id
from steps.repository.records import parse_time, save_run_record
from steps.repository.repo import Repository
from steps.repository.tree import OVERWRITE_MODES
from steps.resources import jinja_env
from steps.secrets import repository_password

__all__ = [
    "ENFORCE_LABEL",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "HOOK_KINDS",
    "LEVELS",
    "OVERWRITE_MODES",
    "RETRYABLE_EXIT_CODES",
    "SNAPSHOT_METADATA_API",
    "SNAPSHOT_METADATA_KIND",
    "AppRef",
    "CaptureSpec",
    "CutResult",
    "FreezeSpec",
    "KubeClient",
    "KubeError",
    "KubeSettings",
    "LocalSnapshotDriver",
    "PermanentError",
    "Plan",
    "Repository",
    "RepositoryRef",
    "SnapflowError",
    "SnapshotSpec",
    "Target",
    "TemporaryError",
    "UsageError",
    "Volume",
    "allowed",
    "audit_trail",
    "backups_command",
    "build_command_parser",
    "canonical_repo_url",
    "check_endpoint",
    "dig",
    "discover_commands",
    "fsfreeze_mounts",
    "is_btrfs_subvolume",
    "jinja_env",
    "labels_for_volume",
    "manifest_render",
    "notification_problems",
    "open_repository",
    "open_repository_on",
    "open_store",
    "parse_images_of",
    "parse_time",
    "plan_from_dict",
    "pod_security_check",
    "preflight",
    "read_catalog",
    "repository_id",
    "repository_password",
    "run_command",
    "runtime",
    "save_run_record",
    "target_problems",
    "write_backup_label",
    "write_text_atomic",
]
