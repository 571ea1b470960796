"""The restore pipelines of a policy: one volume snapshot into an existing PVC (``restore``), and a
whole app — its objects and volumes — into a namespace of the cluster (``restore-app``).

The whole-app restore is one step: ``python -m steps restore-app --mover pod`` creates the app's
objects in the target namespace and one mover pod per PVC there. Argo runs a step's pod in the
workflow's namespace, and a pod mounts only PVCs of its own namespace, so movers as Argo steps could
not fill the PVCs of another target namespace. It runs as its own ServiceAccount
(:class:`~workflows.pipeline.Identity`), since creating an app's objects is far more than a backup
needs.
"""

from __future__ import annotations

from steps.api import OVERWRITE_MODES
from workflows.pipeline import (
    Arg,
    BackupId,
    Identity,
    Needs,
    Param,
    Parameter,
    ParamFile,
    Pipeline,
    RestoreTarget,
    Retry,
    Step,
)
from workflows.pipeline_settings import BOOLEAN, app_mutex, finish, repository_args
from workflows.policy import Policy

TRANSFORMS_FILE = "transforms.yaml"
OVERWRITE_PARAM = "overwrite"
OVERWRITE_CHOICES = OVERWRITE_MODES  # the restore step's own list


def restore_pipeline(policy: Policy) -> Pipeline:
    """Restore one volume snapshot into an existing PVC. The optional parameters always reach the step
    as values (``--write-backup-label false``, ``--uid-map ""``): restore treats false and empty as
    "none", so one step serves every combination; ``--overwrite refuse`` (the default) spells restore's
    own default, a non-empty target refused. ``snapshot`` defaults to ``latest``, which the step takes
    as the newest committed backup of this app (``--app``, ``--source-namespace``) holding ``volume``,
    so the Argo UI form needs no snapshot ID (IDs disappear with a workflow's TTL)."""
    volumes = [v.volume_name for v in policy.spec.volumes]
    args: tuple[Arg, ...] = (
        *repository_args(policy),
        "--snapshot", Param("snapshot"),
        "--volume", Param("volume"),
        "--app", policy.app,
        "--source-namespace", policy.namespace,
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
    shown = ", ".join(v.pvc or v.volume_name for v in policy.spec.volumes)
    return finish(
        policy,
        name="restore",
        title=f"Restore {policy.app} ({policy.namespace})",
        description=(
            f"Restore one volume snapshot of app {policy.app} (volumes: {shown}) from "
            f"{policy.spec.repository.url} into an existing PVC. Stop the app (or use a new PVC) first."
        ),
        steps=(step,),
        parameters=(
            Parameter(
                "snapshot",
                f"latest (the default): the snapshot of the chosen volume in the newest committed backup "
                f"of {policy.app} ({policy.namespace}) that holds it. Or a repository snapshot ID: a "
                "backup's output snapshot-VOLUME, or an ID (a unique prefix of 4+ hex digits) from "
                "`python -m steps snapshots`; it must belong to a committed backup.",
                "latest",
            ),
            Parameter(
                "volume",
                "With snapshot=latest: which volume of the app to restore (not used with an ID, which "
                "names its volume itself).",
                volumes[0],
                tuple(volumes),
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
    # The repository's Secrets live where the workflows run (the policy's namespace, or its mover
    # namespace); the restore copies them into another target namespace for the time of the restore
    # (never when they exist there already).
    mover += ("--secrets-namespace", policy.workflow_namespace, "--mover-non-root", Param("mover-non-root"))
    if policy.workflow_namespace != policy.namespace:
        # The mover pods run in the mover namespace, in staging claims whose volumes are then handed
        # over to the claims in the target namespace (docs/user/mover-namespace.md).
        mover += ("--mover-namespace", policy.workflow_namespace)
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
    return finish(
        policy,
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
