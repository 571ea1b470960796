"""Handing a volume filled in the mover namespace over to the claim it restores.

restore-app with a mover namespace fills each volume in a *staging* claim there (same storage class,
size, access and volume mode as the target claim), so the root mover pod never runs in the target
namespace. Then the volume changes hands, the static binding Kubernetes documents
(https://kubernetes.io/docs/concepts/storage/persistent-volumes/#reserving-a-persistentvolume,
#retain and https://kubernetes.io/docs/tasks/administer-cluster/change-pv-reclaim-policy/):

1. :func:`mark_volume`: the staging claim's PersistentVolume gets ``persistentVolumeReclaimPolicy:
   Retain`` (its policy before is kept in an annotation) and the restore's labels, in one patch
   conditional on its resourceVersion, and only if it was provisioned for that claim (its ``claimRef``
   carries the claim's uid and it is no older than the claim);
2. :func:`release_staging`: the staging claim is deleted; the volume is Released, its data kept;
3. :func:`reserve_for_target`: its ``claimRef`` is set to the target claim's namespace and name (no uid),
   so no other claim can bind it; the target claim is created with ``spec.volumeName`` naming it;
4. :func:`finish`: once the two are bound, the volume gets its reclaim policy back and loses the marks.

Every step is idempotent and found again from the cluster (the marks on the volume), so a restore run
again after an interruption resumes where the last one stopped. A volume without this restore's marks
is never patched.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from steps.drivers import kube_objects
from steps.drivers.kube import KubeClient, KubeError
from steps.drivers.kube_objects import dig
from steps.errors import PermanentError

RETAIN = "Retain"
ROLE_STAGING = "restore-staging"
ROLE_VOLUME = "restore-volume"
ANNOTATION_TARGET = "snapflow.io/restore-target"  # NAMESPACE/CLAIM the volume is handed to
ANNOTATION_POLICY = "snapflow.io/reclaim-policy"  # the volume's reclaim policy before the hand-over
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
CLAIM_SPEC_KEYS = ("accessModes", "resources", "storageClassName", "volumeMode")


def staging_name(restore_id: str, namespace: str, claim: str) -> str:
    """The staging claim in the mover namespace for target claim ``namespace/claim``."""
    return kube_objects.k8s_name("snapflow-restore", restore_id, namespace, claim)


def target_of(namespace: str, claim: str) -> str:
    return f"{namespace}/{claim}"


def restore_labels(restore_id: str, role: str) -> dict[str, str]:
    return {
        **kube_objects.MANAGED_BY,
        kube_objects.LABEL_RESTORE: kube_objects.label_value(restore_id),
        kube_objects.LABEL_ROLE: role,
    }


def staging_claim(
    client: KubeClient, target: dict, mover_namespace: str, restore_id: str, log: Callable[[str], None]
) -> dict:
    """Create (or reuse) the staging claim for the target claim object ``target``: its storage class,
    size, access and volume mode, nothing else (no data source, no volume name)."""
    ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
    staging = staging_name(restore_id, ns, name)
    spec = {k: v for k, v in (target.get("spec") or {}).items() if k in CLAIM_SPEC_KEYS}
    want = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": staging,
            "namespace": mover_namespace,
            "labels": restore_labels(restore_id, ROLE_STAGING),
            "annotations": {ANNOTATION_TARGET: target_of(ns, name)},
        },
        "spec": spec,
    }
    existing = client.get_or_none("v1", "PersistentVolumeClaim", staging, mover_namespace)
    if existing is None:
        log(f"staging claim {mover_namespace}/{staging} for {target_of(ns, name)} created")
        return client.create(want)
    if dig(existing, "metadata", "annotations", ANNOTATION_TARGET) != target_of(ns, name):
        raise PermanentError(
            f"PersistentVolumeClaim {mover_namespace}/{staging} exists but is not this restore's staging "
            f"claim for {target_of(ns, name)}; delete it or use another --restore-id"
        )
    log(f"staging claim {mover_namespace}/{staging} already exists; reused")
    return existing


def marked_volumes(client: KubeClient, restore_id: str) -> dict[str, dict]:
    """The volumes this restore marked, by their target (``NAMESPACE/CLAIM``)."""
    items, _ = client.list(
        "v1",
        "PersistentVolume",
        None,
        label_selector=f"{kube_objects.LABEL_RESTORE}={kube_objects.label_value(restore_id)},"
        f"{kube_objects.LABEL_ROLE}={ROLE_VOLUME}",
    )
    return {dig(pv, "metadata", "annotations", ANNOTATION_TARGET): pv for pv in items}


def mark_volume(client: KubeClient, staging: dict, target: str, restore_id: str, timeout: float, log) -> dict:
    """Step 1: the staging claim's volume set to Retain and marked for ``target``."""
    ns, name = staging["metadata"]["namespace"], staging["metadata"]["name"]
    claim = client.wait_for(
        "v1",
        "PersistentVolumeClaim",
        name,
        ns,
        lambda o: o is not None and dig(o, "status", "phase") == "Bound",
        timeout,
        on_timeout=lambda o: PermanentError(
            f"staging claim {ns}/{name} not bound after {timeout:g}s "
            f"(phase {dig(o or {}, 'status', 'phase') or 'missing'})"
        ),
    )
    pv_name = dig(claim, "spec", "volumeName")
    pv = client.get("v1", "PersistentVolume", pv_name)
    ref = dig(pv, "spec", "claimRef") or {}
    made_for_claim = (
        ref.get("uid") == claim["metadata"]["uid"]
        and ref.get("namespace") == ns
        and ref.get("name") == name
        and dig(pv, "metadata", "annotations", PROVISIONED_BY)
        and (pv["metadata"].get("creationTimestamp") or "")
        >= (claim["metadata"].get("creationTimestamp") or "")
    )
    if not made_for_claim:
        raise PermanentError(
            f"PersistentVolume {pv_name} of staging claim {ns}/{name} was not provisioned for it; it is left "
            "alone (the hand-over needs a dynamically provisioned volume)"
        )
    policy = dig(pv, "spec", "persistentVolumeReclaimPolicy") or "Delete"
    patch = {
        "metadata": {
            "resourceVersion": pv["metadata"]["resourceVersion"],
            "labels": restore_labels(restore_id, ROLE_VOLUME),
            "annotations": {ANNOTATION_TARGET: target, ANNOTATION_POLICY: policy},
        },
        "spec": {"persistentVolumeReclaimPolicy": RETAIN},
    }
    marked = client.patch("v1", "PersistentVolume", pv_name, None, patch)
    log(f"PersistentVolume {pv_name}: reclaim policy {policy} -> {RETAIN} for the hand-over to {target}")
    return marked


def release_staging(client: KubeClient, pv: dict, mover_namespace: str, timeout: float, log) -> None:
    """Step 2: delete the staging claim of a marked (Retain) volume and wait until it is gone."""
    if dig(pv, "spec", "persistentVolumeReclaimPolicy") != RETAIN:
        raise PermanentError(
            f"PersistentVolume {pv['metadata']['name']} is not {RETAIN}; its staging claim is not deleted"
        )
    ref = dig(pv, "spec", "claimRef") or {}
    if ref.get("namespace") != mover_namespace or not ref.get("name"):
        return
    claim = client.get_or_none("v1", "PersistentVolumeClaim", ref["name"], mover_namespace)
    if claim is None or claim["metadata"]["uid"] != ref.get("uid"):
        return
    client.delete("v1", "PersistentVolumeClaim", ref["name"], mover_namespace)
    client.wait_for(
        "v1",
        "PersistentVolumeClaim",
        ref["name"],
        mover_namespace,
        lambda o: o is None or o["metadata"]["uid"] != ref.get("uid"),
        timeout,
        on_timeout=lambda _o: PermanentError(
            f"staging claim {mover_namespace}/{ref['name']} still present {timeout:g}s after its deletion"
        ),
    )
    log(
        f"staging claim {mover_namespace}/{ref['name']} deleted; PersistentVolume {pv['metadata']['name']} kept"
    )


def reserve_for_target(client: KubeClient, pv_name: str, mover_namespace: str, log) -> dict:
    """Step 3: the volume's claimRef set to its target claim (namespace and name, no uid). Also clears a
    stale uid (a target claim deleted and created again)."""
    pv = client.get("v1", "PersistentVolume", pv_name)
    target = dig(pv, "metadata", "annotations", ANNOTATION_TARGET) or ""
    ns, _, name = target.partition("/")
    ref = dig(pv, "spec", "claimRef") or {}
    if ref.get("namespace") == ns and ref.get("name") == name:
        live = client.get_or_none("v1", "PersistentVolumeClaim", name, ns)
        if not ref.get("uid") or (live is not None and live["metadata"]["uid"] == ref["uid"]):
            return pv
    elif ref and ref.get("namespace") != mover_namespace:
        raise PermanentError(
            f"PersistentVolume {pv_name} is claimed by {ref.get('namespace')}/{ref.get('name')}, not by "
            f"the staging claim or {target}; left alone"
        )
    elif ref and client.get_or_none("v1", "PersistentVolumeClaim", ref["name"], mover_namespace) is not None:
        staging = client.get("v1", "PersistentVolumeClaim", ref["name"], mover_namespace)
        if staging["metadata"]["uid"] == ref.get("uid"):
            raise PermanentError(f"PersistentVolume {pv_name}: its staging claim still exists")
    patch = {
        "metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
        "spec": {
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": ns,
                "name": name,
                "uid": None,
                "resourceVersion": None,
            }
        },
    }
    out = client.patch("v1", "PersistentVolume", pv_name, None, patch)
    log(f"PersistentVolume {pv_name} reserved for claim {target}")
    return out


def finish(client: KubeClient, pv_name: str, mover_namespace: str, timeout: float, log) -> dict:
    """Step 4: wait until the volume and its target claim are bound, then give the volume its reclaim
    policy back and remove the marks."""
    pv = client.get("v1", "PersistentVolume", pv_name)
    target = dig(pv, "metadata", "annotations", ANNOTATION_TARGET) or ""
    ns, _, name = target.partition("/")
    deadline = time.monotonic() + timeout
    while True:
        claim = client.get_or_none("v1", "PersistentVolumeClaim", name, ns)
        pv = client.get("v1", "PersistentVolume", pv_name)
        if (
            claim is not None
            and dig(claim, "status", "phase") == "Bound"
            and dig(claim, "spec", "volumeName") == pv_name
            and dig(pv, "spec", "claimRef", "uid") == claim["metadata"]["uid"]
        ):
            break
        if claim is not None and dig(claim, "spec", "volumeName") not in (None, pv_name):
            raise PermanentError(
                f"claim {target} is bound to another volume ({dig(claim, 'spec', 'volumeName')}); "
                f"PersistentVolume {pv_name} holds the restored data (reclaim policy {RETAIN})"
            )
        if time.monotonic() > deadline:
            raise PermanentError(
                f"claim {target} not bound to PersistentVolume {pv_name} after {timeout:g}s "
                f"(claim {dig(claim or {}, 'status', 'phase') or 'missing'}, volume "
                f"{dig(pv, 'status', 'phase') or '-'})"
            )
        reserve_for_target(client, pv_name, mover_namespace, log)
        time.sleep(0.2)
    policy = dig(pv, "metadata", "annotations", ANNOTATION_POLICY) or RETAIN
    patch = {
        "metadata": {
            "resourceVersion": pv["metadata"]["resourceVersion"],
            "labels": {kube_objects.LABEL_RESTORE: None, kube_objects.LABEL_ROLE: None},
            "annotations": {ANNOTATION_TARGET: None, ANNOTATION_POLICY: None},
        },
        "spec": {"persistentVolumeReclaimPolicy": policy},
    }
    out = client.patch("v1", "PersistentVolume", pv_name, None, patch)
    log(f"PersistentVolume {pv_name} bound to claim {target}; reclaim policy {policy} again")
    return out


def delete_leftover_staging(client: KubeClient, mover_namespace: str, restore_id: str, log) -> list[str]:
    """Staging claims of this restore whose volume was never marked (a fill that failed): deleted."""
    errors = []
    items, _ = client.list(
        "v1",
        "PersistentVolumeClaim",
        mover_namespace,
        label_selector=f"{kube_objects.LABEL_RESTORE}={kube_objects.label_value(restore_id)},"
        f"{kube_objects.LABEL_ROLE}={ROLE_STAGING}",
    )
    for claim in items:
        try:
            client.delete("v1", "PersistentVolumeClaim", claim["metadata"]["name"], mover_namespace)
            log(f"staging claim {mover_namespace}/{claim['metadata']['name']} deleted")
        except KubeError as err:
            errors.append(f"delete staging claim {claim['metadata']['name']}: {err}")
    return errors
