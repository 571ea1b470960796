"""The Kubernetes objects the steps create, rendered from ``templates/manifests`` (Jinja2, StrictUndefined).

Every object carries the labels of :func:`backup_labels` so that finalize (and a human with
``kubectl get volumesnapshots,pvc,pods -l snapflow.io/backup-id=ID``) finds everything one backup or
restore made. Names are derived with :func:`k8s_name`: valid DNS-1123 names of at most 63 characters,
shortened with a hash suffix when needed so that two long names never collide.

Templates: ``volumesnapshot.yaml.j2``, ``volumegroupsnapshot.yaml.j2``, ``clone-pvc.yaml.j2``,
``restore-mover-pod.yaml.j2``. Called by the ``csi`` snapshot driver, ``prepare-clone`` and
``restore-app``; the restore WorkflowTemplate renders the mover pod with the same function. A driver-level
module (it reads the templates folder), so that the drivers may build objects with it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from steps import runtime
from steps.errors import UsageError

LABEL_BACKUP = "snapflow.io/backup-id"
LABEL_APP = "snapflow.io/app"
LABEL_VOLUME = "snapflow.io/volume"
LABEL_ROLE = "snapflow.io/role"
LABEL_RESTORE = "snapflow.io/restore-id"
LABEL_GROUP = "snapflow.io/group"
MANAGED_BY = {"app.kubernetes.io/managed-by": "snapflow"}

# The overwrite mode of every mover (see mover_args).
MOVER_OVERWRITE = "always"

SNAPSHOT_API_GROUP = "snapshot.storage.k8s.io"
GROUP_SNAPSHOT_API_VERSIONS = (
    "groupsnapshot.storage.k8s.io/v1",
    "groupsnapshot.storage.k8s.io/v1beta2",
    "groupsnapshot.storage.k8s.io/v1beta1",
)


def k8s_name(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label from ``parts`` joined by ``-``; a hash of the full text replaces what is cut."""
    raw = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name) or "x"
    if len(name) <= max_len and name == raw:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    head = name[: max_len - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def clone_claim_name(backup_id: str, volume: str) -> str:
    """The clone claim prepare-clone makes of ``volume``'s snapshot for ``backup_id`` (the copy finds
    its snapshot through it)."""
    return k8s_name("snapflow-clone", backup_id, volume)


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-_.")
    if len(v) <= 63 and v == value:
        return v
    digest = hashlib.sha256(str(value).encode()).hexdigest()[:8]
    head = v[: 63 - len(digest) - 1].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


def backup_labels(backup_id: str, app: str = "", volume: str = "", role: str = "") -> dict[str, str]:
    labels = {**MANAGED_BY, LABEL_BACKUP: label_value(backup_id)}
    if app:
        labels[LABEL_APP] = label_value(app)
    if volume:
        labels[LABEL_VOLUME] = label_value(volume)
    if role:
        labels[LABEL_ROLE] = role
    return labels


def render(template: str, **context: Any) -> dict:
    """Render ``templates/manifests/<template>`` and parse it; a missing variable is an error."""
    import jinja2
    import yaml

    from steps.resources import jinja_env

    try:
        text = jinja_env("manifests").get_template(template).render(**context)
    except jinja2.UndefinedError as err:
        raise UsageError(f"templates/manifests/{template}: {err}") from None
    return yaml.safe_load(text)


def volume_snapshot(
    *, name: str, namespace: str, pvc: str, labels: dict[str, str], snapshot_class: str | None = None
) -> dict:
    return render(
        "volumesnapshot.yaml.j2",
        name=name,
        namespace=namespace,
        pvc=pvc,
        labels=labels,
        snapshot_class=snapshot_class,
    )


def volume_group_snapshot(
    *,
    name: str,
    namespace: str,
    selector: dict[str, str],
    labels: dict[str, str],
    group_snapshot_class: str | None = None,
    api_version: str = GROUP_SNAPSHOT_API_VERSIONS[0],
) -> dict:
    return render(
        "volumegroupsnapshot.yaml.j2",
        name=name,
        namespace=namespace,
        selector=selector,
        labels=labels,
        group_snapshot_class=group_snapshot_class,
        api_version=api_version,
    )


def clone_pvc(
    *,
    name: str,
    namespace: str,
    snapshot: str,
    size: str,
    labels: dict[str, str],
    storage_class: str | None = None,
    volume_mode: str = "Filesystem",
    access_modes: list[str] | None = None,
) -> dict:
    if volume_mode not in ("Filesystem", "Block"):
        raise UsageError(f"volumeMode: expected Filesystem or Block, got {volume_mode!r}")
    return render(
        "clone-pvc.yaml.j2",
        name=name,
        namespace=namespace,
        snapshot=snapshot,
        size=size,
        labels=labels,
        storage_class=storage_class,
        volume_mode=volume_mode,
        access_modes=access_modes or ["ReadWriteOnce"],
    )


def mover_args(
    repository: str,
    snapshot_id: str,
    target: str,
    endpoint: str | None = None,
    excludes: list[str] | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The mover's command line after ``python -m steps`` (the same restore step as anywhere else);
    ``extra_args`` (e.g. ``--uid-map 999:1000650000``, ``--write-backup-label``) go last, as given.

    A mover always passes its overwrite mode, ``always``: it writes into a PVC that restore-app itself
    created (or recreated with ``--existing replace``), and a mover retried after a failure must finish
    the half-written restore of its previous attempt instead of refusing a non-empty target."""
    args = ["restore", "--repo", repository, "--snapshot", snapshot_id, "--target", target]
    args += ["--overwrite", MOVER_OVERWRITE]  # restore-app's --out lists it in restore_options too
    if endpoint:
        args += ["--endpoint", endpoint]
    for pattern in excludes or []:
        args += ["--exclude", pattern]
    args += extra_args or []
    return args


def mover_pod(
    *,
    name: str,
    namespace: str,
    pvc: str,
    image: str,
    repository: str,
    snapshot_id: str,
    labels: dict[str, str],
    password_secret: str,
    password_secret_key: str = runtime.PASSWORD_KEY,
    credentials_secret: str | None = None,
    access_key_key: str = runtime.AWS_ACCESS_KEY_ID,
    secret_key_key: str = runtime.AWS_SECRET_ACCESS_KEY,
    endpoint: str | None = None,
    excludes: list[str] | None = None,
    ca_config_map: str | None = None,
    ca_key: str = runtime.CA_KEY,
    volume_mode: str = "Filesystem",
    run_as_root: bool = True,
    service_account: str | None = None,
    image_pull_policy: str = "IfNotPresent",
    resources: dict | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> dict:
    """A pod that restores one repository snapshot into one PVC and exits. ``ca_config_map`` (a ConfigMap
    in ``namespace``) holds the object store's CA certificates under ``ca_key``; ``extra_args`` are
    appended to the restore step's arguments (see :func:`mover_args`)."""
    if volume_mode not in ("Filesystem", "Block"):
        raise UsageError(f"volumeMode: expected Filesystem or Block, got {volume_mode!r}")
    target = runtime.MOVER_TARGET_DEVICE if volume_mode == "Block" else runtime.MOVER_TARGET_DIR
    # the step-runtime contract's environment of a step; a mover pod lists its password file first
    env = runtime.step_env(
        password_file=f"{runtime.MOVER_PASSWORD_DIR}/{password_secret_key}",
        credentials=(
            runtime.Credentials(credentials_secret, access_key_key, secret_key_key)
            if credentials_secret
            else None
        ),
        ca_bundle=f"{runtime.MOVER_CA_DIR}/{ca_key}" if ca_config_map else None,
        extra=extra_env,
    )
    env = {runtime.PASSWORD_FILE: env.pop(runtime.PASSWORD_FILE), **env}
    return render(
        "restore-mover-pod.yaml.j2",
        name=name,
        namespace=namespace,
        pvc=pvc,
        image=image,
        image_pull_policy=image_pull_policy,
        args=mover_args(repository, snapshot_id, target, endpoint, excludes, extra_args),
        target=target,
        labels=labels,
        password_secret=password_secret,
        ca_config_map=ca_config_map,
        ca_key=ca_key,
        volume_mode=volume_mode,
        run_as_root=run_as_root,
        user=runtime.STEP_USER,
        service_account=service_account,
        resources=resources or {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        env=runtime.pod_env(env),
        password_dir=runtime.MOVER_PASSWORD_DIR,
        ca_dir=runtime.MOVER_CA_DIR,
        capabilities=list(runtime.MOVER_CAPABILITIES),
    )


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    """``obj[path[0]][path[1]]...`` or ``default`` when any step is missing."""
    cur = obj
    for p in path:
        if isinstance(cur, dict) and isinstance(p, str):
            if p not in cur:
                return default
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int):
            if not -len(cur) <= p < len(cur):
                return default
            cur = cur[p]
        else:
            return default
    return cur
