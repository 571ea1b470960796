"""restore-app's volumes through a mover namespace: each volume filled by a mover pod there, in a staging
claim of the target claim's storage class, size and modes, then handed over to the target claim
(:mod:`steps.drivers.volume_handover`), so no mover pod runs in the namespace restored into and it can
enforce Pod Security ``restricted``.

:func:`fill_for_handover` runs before the Restorer creates the target claims (it sets their
``spec.volumeName``); :func:`bind_handed_over` after. Both resume what an interrupted run left: the
volumes this restore marked are found again by their labels, so a volume filled once is not filled again.
"""

from __future__ import annotations

from steps.drivers import volume_handover as handover
from steps.drivers.kube_objects import dig
from steps.manifests.backup_record import volumes_to_fill
from steps.manifests.movers import fill_pods
from steps.manifests.objects import ref


def fill_for_handover(
    client, restorer, record: dict, opts, restore_id: str, report, log, spec, pg_labels: dict
) -> dict[str, str]:
    """Fill the volumes of the claims the Restorer will create, in the mover namespace, and reserve each
    for its target claim; returns ``NAMESPACE/CLAIM`` → PersistentVolume name. The claim objects of the
    Restorer get ``spec.volumeName``. Nothing is filled when the restore will refuse existing objects."""
    movers = opts.mover_namespace
    marked = handover.marked_volumes(client, restore_id)
    for target, pv in list(marked.items()):
        ns, _, name = (target or "").partition("/")
        live = client.get_or_none("v1", "PersistentVolumeClaim", name, ns) if name else None
        if live is not None and dig(live, "spec", "volumeName") == pv["metadata"]["name"]:
            # an earlier run created the target claim: finish its hand-over first
            handover.finish(client, pv["metadata"]["name"], movers, opts.timeout, log)
            del marked[target]
    existing = set(restorer.existing())
    if existing and opts.existing == "refuse":
        return {}
    claims = [o for o in restorer.phases["storage"] if not (opts.existing == "skip" and ref(o) in existing)]
    by_target = {handover.target_of(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in claims}
    items, notes = volumes_to_fill(record, claims)
    report.notes.extend(notes)
    fresh = [i for i in items if handover.target_of(i["namespace"], i["pvc"]) not in marked]
    try:
        staging = {}
        for item in fresh:
            target = handover.target_of(item["namespace"], item["pvc"])
            staging[target] = handover.staging_claim(client, by_target[target], movers, restore_id, log)
        if fresh:
            fill_pods(
                client,
                fresh,
                opts,
                record,
                restore_id,
                report,
                log,
                spec,
                pg_labels,
                placement=lambda i: (movers, handover.staging_name(restore_id, i["namespace"], i["pvc"])),
            )
        for target, claim in staging.items():
            marked[target] = handover.mark_volume(client, claim, target, restore_id, opts.timeout, log)
    finally:
        for err in handover.delete_leftover_staging(client, movers, restore_id, log):
            log(f"note: {err}")
    handed: dict[str, str] = {}
    for item in items:
        target = handover.target_of(item["namespace"], item["pvc"])
        pv = marked[target]
        if item not in fresh:
            report.volumes.append({**item, "mover": "pod", "resumed": True})
            log(
                f"PersistentVolume {pv['metadata']['name']} was filled for {target} by an earlier run; reused"
            )
        handover.release_staging(client, pv, movers, opts.timeout, log)
        handover.reserve_for_target(client, pv["metadata"]["name"], movers, log)
        by_target[target].setdefault("spec", {})["volumeName"] = pv["metadata"]["name"]
        handed[target] = pv["metadata"]["name"]
    for target, pv in marked.items():
        if target not in handed:
            report.notes.append(
                f"PersistentVolume {pv['metadata']['name']} holds data restored for {target} by an earlier run "
                f"and is kept (reclaim policy {handover.RETAIN}); delete it when it is not needed"
            )
    return handed


def bind_handed_over(client, handed: dict[str, str], opts, report, log) -> None:
    """After the target claims exist: wait until each is bound to its volume, then give the volume its
    reclaim policy back."""
    for pv_name in handed.values():
        handover.finish(client, pv_name, opts.mover_namespace, opts.timeout, log)
    for v in report.volumes:
        target = handover.target_of(v.get("namespace", ""), v.get("pvc", ""))
        if target in handed:
            v["persistent_volume"] = handed[target]
