"""The Kubernetes objects the steps create: :mod:`steps.drivers.kube_objects` (labels, names, the
VolumeSnapshots, clones and restore mover pods rendered from ``templates/manifests``), by the name the
manifests and the control plane know it under."""

from __future__ import annotations

from steps.drivers.kube_objects import (  # noqa: F401 (this module's names)
    GROUP_SNAPSHOT_API_VERSIONS,
    LABEL_APP,
    LABEL_BACKUP,
    LABEL_GROUP,
    LABEL_RESTORE,
    LABEL_ROLE,
    LABEL_VOLUME,
    MANAGED_BY,
    MOVER_OVERWRITE,
    SNAPSHOT_API_GROUP,
    backup_labels,
    clone_pvc,
    k8s_name,
    label_value,
    mover_args,
    mover_pod,
    render,
    volume_group_snapshot,
    volume_snapshot,
)
