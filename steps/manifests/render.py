"""The old name of :mod:`steps.drivers.kube_objects` (the Kubernetes objects the steps create), kept only
while ``steps.commands.prepare_clone``, ``steps.commands.finalize``, ``steps.drivers.snapshot_csi`` and
``tests/unit/test_layers_runtime.py`` still import it; new code imports ``steps.drivers.kube_objects``."""

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
