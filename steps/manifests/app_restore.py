"""restore-app's engine: a committed backup's objects, transformed and checked against the restore's
scope, created in order around the filling of their volumes, then checked; a report with the time of
each phase. ``python -m steps restore-app`` (:mod:`steps.commands.restore_app`) is its argument
plumbing; the order and the rules are documented there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steps.manifests.backup_record import (
    app_of,
    backup_labels_needed,
    find_backup,
    load_bundle,
    mover_options,
    record_volumes,
    volumes_to_fill,
)
from steps.manifests.movers import MoverOptions, fill_local, fill_pods

# The overwrite mode of every mover, as restore options (render.mover_args passes it itself).
MOVER_OVERWRITE_ARGS = ("--overwrite", "always")


@dataclass(frozen=True)
class RestoreAppOptions(MoverOptions):
    """restore-app's options the engine reads (the command line's names)."""

    existing: str = "refuse"
    mover_namespace: str = ""
    cluster_resources: bool = False
    skip_refused: bool = False
    mover: str = "pod"
    phase: str = "all"
    volumes: str | None = None
    out: str | None = None
    wait_ready: bool = False
    check_pod: str | None = None
    check_container: str | None = None
    check_command: str | None = None
    dry_run: bool = False
    report: str | None = None
    json: bool = False


def redact(obj: dict) -> dict:
    """A Secret with its values replaced (a dry run prints objects; it must not print credentials)."""
    if obj.get("kind") != "Secret" or obj.get("apiVersion") != "v1":
        return obj
    out = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            out[key] = dict.fromkeys(obj[key], "<redacted>")
    return out


def restore_scope(client, opts, spec, bundle, record: dict):
    """The restore's namespaces: the one the backup's namespace maps to, and every target of the
    namespace map (each named by the user); which of them exist."""
    from steps.manifests.scope import Scope

    source = bundle.namespace or app_of(record).get("namespace") or ""
    return Scope.of(
        spec.map_namespace(source) if source else "",
        spec.namespace_map.values(),
        cluster_resources=opts.cluster_resources,
        exists=lambda ns: client.get_or_none("v1", "Namespace", ns) is not None,
    )


def in_scope(client, objects: list[dict], opts, spec, bundle, record: dict, report) -> list[dict]:
    """The objects the restore may create; the refused ones go to ``report.refused`` (see
    :mod:`steps.manifests.scope`). Whether a kind is namespaced is the API server's answer."""
    from steps.manifests.scope import check_scope

    def namespaced(api_version: str, kind: str) -> bool:
        return client.resource(api_version, kind).namespaced

    result = check_scope(objects, restore_scope(client, opts, spec, bundle, record), namespaced)
    report.refused = [r.to_dict() for r in result.refused]
    return result.allowed


def refuse_collisions(client, result) -> None:
    """Fail, before anything is created, when two objects of the backup would be created as one (same
    group, kind, namespace and name once transformed; see :mod:`steps.manifests.collisions`)."""
    from steps.errors import PermanentError
    from steps.manifests.collisions import collision_message, find_collisions

    def namespaced(api_version: str, kind: str) -> bool:
        return client.resource(api_version, kind).namespaced

    collisions = find_collisions(result.objects, result.origins, namespaced)
    if collisions:
        raise PermanentError(collision_message(collisions))


def refuse_or_skip(report, opts) -> None:
    """List the refused objects on stderr, one line each; fail unless --skip-refused."""
    import sys

    from steps.errors import PermanentError

    if not report.refused:
        return
    verb = "skipped" if opts.skip_refused else "refused"
    for r in report.refused:
        where = f" in namespace {r['namespace']}" if r["namespace"] else ""
        print(f"{verb}: {r['object']}{where}: {r['reason']}", file=sys.stderr)
    if not opts.skip_refused:
        n = len(report.refused)
        raise PermanentError(
            f"restore refused: {n} object{'s' if n != 1 else ''} of the backup {'are' if n != 1 else 'is'} "
            "outside the restore's scope (listed above); this run created nothing. Pass --skip-refused to "
            "restore the rest, or --cluster-resources to create cluster-scoped objects and bindings"
        )


def write_summary(out: dict, opts) -> None:
    """The report of a restore refused before it created anything (--report, --json)."""
    import json

    from steps.drivers import files

    if opts.report:
        files.write_json(opts.report, out)
    if opts.json:
        print(json.dumps(out, sort_keys=True))


def run_check(opts, namespace: str, timeout: float) -> dict:
    from steps.drivers.runner_kube import KubeRunner
    from steps.errors import PermanentError

    runner = KubeRunner(namespace=namespace, pod=opts.check_pod, container=opts.check_container)
    result = runner.run(["sh", "-c", opts.check_command], timeout=timeout)
    out = {
        "pod": opts.check_pod,
        "command": opts.check_command,
        "exit": result.returncode,
        "stdout": result.stdout[-2000:],
        "ok": result.ok,
    }
    if not result.ok:
        raise PermanentError(
            f"check command in pod {namespace}/{opts.check_pod} failed (exit "
            f"{result.returncode}): {' '.join(result.stderr.split())[-300:]}"
        )
    return out


def check_mover_namespace(opts, spec, bundle) -> None:
    """--mover-namespace: only with the pod mover and the whole restore in one run, and never one of the
    namespaces restored into."""
    from steps.errors import UsageError

    if not opts.mover_namespace or opts.dry_run:
        return
    if opts.mover != "pod" or opts.phase != "all":
        raise UsageError(
            f"--mover-namespace: needs --mover pod and --phase all (got --mover {opts.mover}, --phase {opts.phase})"
        )
    targets = {spec.map_namespace(bundle.namespace), *spec.namespace_map.values()} - {""}
    if opts.mover_namespace in targets:
        raise UsageError(
            f"--mover-namespace: must differ from the namespaces restored into ({', '.join(sorted(targets))})"
        )


def restore_app(
    repo,
    opts: RestoreAppOptions,
    backup: str,
    app: str,
    source_namespace: str,
    make_spec: Callable[[str], object],
    connect: Callable[[], object],
    restore_id: str,
    log: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Restore ``backup`` (an ID, or ``latest`` of ``app`` / ``source_namespace``) of ``repo``:
    ``make_spec(namespace)`` gives the transforms once the bundle's namespace is known, ``connect()``
    the Kubernetes client (a context manager)."""
    import json
    import sys

    from steps.drivers import files
    from steps.manifests.apply import RestoreOptions, Restorer, RestoreReport
    from steps.manifests.transforms import describe, transform_objects

    record = find_backup(repo, backup, app, source_namespace)
    record_volumes(record)
    bundle = load_bundle(repo, record)
    spec = make_spec(bundle.namespace)
    result = transform_objects(bundle.objects, spec)
    report = RestoreReport(notes=list(result.notes))
    pg_labels = backup_labels_needed(record)

    def summary() -> dict:
        return {
            "backup_id": record.get("backup_id"),
            "restore_id": restore_id,
            "phase": opts.phase,
            "transforms": describe(spec),
            **report.to_dict(),
        }

    if opts.dry_run:
        import yaml

        with connect() as client:
            refuse_collisions(client, result)
            objects = in_scope(client, result.objects, opts, spec, bundle, record, report)
            restorer = Restorer(client, objects, RestoreOptions(opts.existing, opts.timeout))
            existing = restorer.existing()
        sys.stdout.write(yaml.safe_dump_all([redact(o) for o in objects], sort_keys=True))
        for n in result.notes:
            print(f"note: {n}", file=sys.stderr)
        if existing:
            print(
                f"already present ({opts.existing}): " + ", ".join(str(r) for r in existing), file=sys.stderr
            )
        refuse_or_skip(report, opts)
        return 0

    check_mover_namespace(opts, spec, bundle)
    with connect() as client:
        refuse_collisions(client, result)
        objects = in_scope(client, result.objects, opts, spec, bundle, record, report)
        if report.refused and not opts.skip_refused:
            write_summary(summary(), opts)
            refuse_or_skip(report, opts)
        restorer = Restorer(client, objects, RestoreOptions(opts.existing, opts.timeout), report, log=log)
        items: list[dict] = []
        if opts.mover_namespace:
            from steps.manifests.mover_restore import bind_handed_over, fill_for_handover

            with report.phase("fill"):
                handed = fill_for_handover(
                    client, restorer, record, opts, restore_id, report, log, spec, pg_labels
                )
            restorer.prepare()
            with report.phase("hand-over"):
                bind_handed_over(client, handed, opts, report, log)
        elif opts.phase in ("all", "prepare"):
            created_pvcs = restorer.prepare()
            items, notes = volumes_to_fill(record, created_pvcs)
            for item in items:
                # what a mover run by the workflow itself (--mover none) adds to its restore command:
                # the overwrite mode every mover passes (see render.mover_args), then this volume's own
                item["restore_options"] = [*MOVER_OVERWRITE_ARGS, *mover_options(item, spec, pg_labels)]
            report.notes.extend(notes)
            if opts.out:
                files.write_json(opts.out, items)
        if opts.phase == "fill":
            items = files.read_json(opts.volumes)
        if opts.phase in ("all", "fill") and items and not opts.mover_namespace:
            with report.phase("fill"):
                if opts.mover == "local":
                    fill_local(client, items, opts, report, log, spec, pg_labels)
                elif opts.mover == "pod":
                    fill_pods(client, items, opts, record, restore_id, report, log, spec, pg_labels)
        if opts.phase in ("all", "finish"):
            restorer.finish(wait_ready=opts.wait_ready or bool(opts.check_command))
            if opts.check_command:
                with report.phase("check"):
                    target_ns = spec.map_namespace(bundle.namespace)
                    report.check = run_check(opts, target_ns, opts.timeout)
    out = summary()
    if opts.report:
        files.write_json(opts.report, out)
    refuse_or_skip(report, opts)
    try:
        repo.save_record("runs", {"name": "restore", **out}, key=record.get("backup_id") or restore_id)
    except Exception as err:  # a read-only repository credential may restore but not record
        warn(f"the restore report was not stored in the repository: {err}")
    for n in report.notes:
        log(f"note: {n}")
    if opts.json:
        print(json.dumps(out, sort_keys=True))
    else:
        phases = ", ".join(f"{p['name']} {p['duration_s']}s" for p in out["phases"])
        print(
            f"restored backup {record.get('backup_id')} into {', '.join(report.namespaces)}: "
            f"{len(report.created)} created, {len(report.skipped)} kept, {len(report.replaced)} replaced, "
            f"{len(report.refused)} refused, {len(report.volumes)} volumes filled; {phases}; "
            f"RTO {out['rto_s']}s",
            file=sys.stderr,
        )
    return 0
