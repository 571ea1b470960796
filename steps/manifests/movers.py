"""Filling the PVCs restore-app created: a mover pod per volume (``restore --target /data`` in the step
image, in the target namespace), or the same restore in this process into each volume's local
directory (``--mover local``: hostPath and local PVs, or the CSI hostpath layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from steps import runtime
from steps.manifests.backup_record import app_of, label_report, mover_options


@dataclass(frozen=True)
class MoverOptions:
    """The settings of the movers (restore-app's options of the same names)."""

    repo: str
    endpoint: str | None = None
    exclude: list[str] | None = None
    timeout: float = 1800.0
    volume_root: str | None = None
    image: str = ""
    password_secret: str = ""
    credentials_secret: str = ""
    ca_bundle: str = ""
    secrets_namespace: str = ""
    mover_non_root: bool = False


def volume_directory(client, namespace: str, pvc: str, volume_root: str | None, timeout: float):
    """The local directory (or file, for Block) behind a bound PVC: hostPath/local PVs, or the CSI hostpath
    layout ``volume_root/<volumeHandle>``."""
    from pathlib import Path

    from steps.drivers import files
    from steps.drivers.kube_objects import dig
    from steps.errors import PermanentError, UsageError

    claim = client.wait_for(
        "v1",
        "PersistentVolumeClaim",
        pvc,
        namespace,
        lambda o: o is not None and dig(o, "status", "phase") == "Bound",
        timeout,
        on_timeout=lambda o: PermanentError(
            f"PersistentVolumeClaim {namespace}/{pvc} not bound after {timeout:g}s "
            f"(phase {dig(o or {}, 'status', 'phase') or '-'}; a WaitForFirstConsumer class needs --mover pod)"
        ),
    )
    pv = client.get("v1", "PersistentVolume", dig(claim, "spec", "volumeName"))
    path = dig(pv, "spec", "hostPath", "path") or dig(pv, "spec", "local", "path")
    if not path:
        handle = dig(pv, "spec", "csi", "volumeHandle")
        if not handle or not volume_root:
            raise UsageError(
                f"--mover local: PersistentVolume {pv['metadata']['name']} of PVC {pvc} is neither "
                "hostPath nor local; pass --volume-root (the CSI hostpath data directory)"
            )
        path = str(Path(volume_root) / handle)
    if not files.exists(path):
        raise PermanentError(
            f"--mover local: {path} (volume of PVC {namespace}/{pvc}) does not exist on this machine"
        )
    return path


def fill_local(client, items: list[dict], opts, report, log, spec, labels: dict) -> None:
    """Restore each volume into its directory as a mover pod does (the same restore, in this process:
    overwrite mode ``always``, the owner ID maps of ``spec`` and the ``backup_label`` of a PostgreSQL
    copied in backup mode included)."""
    import time

    from steps.drivers import kube_objects
    from steps.errors import PermanentError, SnapflowError
    from steps.manifests.volume_restore import restore_volume
    from steps.repository.opener import open_repository

    for item in items:
        started = time.time()
        path = volume_directory(client, item["namespace"], item["pvc"], opts.volume_root, opts.timeout)
        log(f"filling PVC {item['namespace']}/{item['pvc']} from snapshot {item['snapshot'][:8]}")
        try:
            done = restore_volume(
                open_repository(opts.repo, opts.endpoint),
                item["snapshot"],
                path,
                excludes=opts.exclude,
                uid_map=spec.uid_map,
                gid_map=spec.gid_map,
                overwrite=kube_objects.MOVER_OVERWRITE,
                write_backup_label=item["volume"] in labels,
            )
        except (SnapflowError, OSError) as err:
            raise PermanentError(
                f"restore of snapshot {item['snapshot'][:8]} into PVC {item['namespace']}/"
                f"{item['pvc']} failed: {err}"
            ) from err
        stats = done.stats
        log(
            f"restored snapshot {done.snap.short_id} into {path}: {stats.files} files, {stats.dirs} dirs,"
            f" {stats.bytes_total} bytes in {stats.duration_s:.1f} s"
        )
        report.volumes.append(
            {
                **item,
                "duration_s": round(time.time() - started, 3),
                "mover": "local",
                **label_report(item, labels),
            }
        )


def split_secret(value: str) -> tuple[str, str]:
    name, _, key = value.partition(":")
    return name, key or runtime.PASSWORD_KEY


def split_credentials(value: str) -> tuple[str, str, str]:
    """``NAME[:ID_KEY:SECRET_KEY]`` of --credentials-secret."""
    from steps.errors import UsageError

    parts = value.split(":")
    if len(parts) == 1:
        return parts[0], runtime.AWS_ACCESS_KEY_ID, runtime.AWS_SECRET_ACCESS_KEY
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise UsageError(f"--credentials-secret: expected NAME or NAME:ID_KEY:SECRET_KEY, got {value!r}")


def copy_for_restore(client, kind: str, name: str, source_ns: str, ns: str, restore_id: str) -> bool:
    """Copy Secret or ConfigMap ``name`` from ``source_ns`` into ``ns`` unless it is there; True if copied."""
    from steps.drivers import kube_objects

    if client.get_or_none("v1", kind, name, ns) is not None:
        return False
    src = client.get("v1", kind, name, source_ns)
    copy = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                **kube_objects.MANAGED_BY,
                kube_objects.LABEL_RESTORE: kube_objects.label_value(restore_id),
                kube_objects.LABEL_ROLE: "mover-secret" if kind == "Secret" else "mover-config",
            },
        },
    }
    if kind == "Secret":
        copy["type"] = src.get("type", "Opaque")
    for key in ("data", "binaryData") if kind == "ConfigMap" else ("data",):
        if src.get(key):
            copy[key] = src[key]
    client.create(copy)
    return True


def fill_pods(
    client,
    items: list[dict],
    opts,
    record: dict,
    restore_id: str,
    report,
    log,
    spec,
    pg_labels: dict,
    placement=None,
) -> None:
    """A mover pod per volume, all at once; waits for every one; deletes them afterwards. Each runs
    ``restore`` with the owner ID maps of ``spec`` and, for a volume in ``pg_labels``, writes the
    ``backup_label`` it reads from the repository. ``placement(item)`` is the (namespace, claim) the
    mover mounts: by default the item's own; a staging claim of the mover namespace with one."""
    import os
    import time

    from steps.drivers import kube_objects
    from steps.drivers.kube import AlreadyExists, KubeError
    from steps.drivers.kube_objects import dig
    from steps.errors import PermanentError, UsageError

    image = opts.image or os.environ.get(runtime.STEP_IMAGE, "")
    if not image:
        raise UsageError(f"--image: the step image is required for --mover pod (or set {runtime.STEP_IMAGE})")
    if not opts.password_secret:
        raise UsageError(
            "--password-secret: required for --mover pod (the Secret with the repository password)"
        )
    pw_name, pw_key = split_secret(opts.password_secret)
    cred_name, cred_id_key, cred_secret_key = (
        split_credentials(opts.credentials_secret) if opts.credentials_secret else ("", "", "")
    )
    ca_name, _, ca_key = opts.ca_bundle.partition(":")
    ca_key = ca_key or runtime.CA_KEY
    extra_env = {k: os.environ[k] for k in runtime.MOVER_INHERITED_ENV if os.environ.get(k)}
    where = placement or (lambda item: (item["namespace"], item["pvc"]))
    copied: list[tuple[str, str, str]] = []  # (kind, namespace, name)
    if opts.secrets_namespace:
        wanted = [("Secret", n) for n in (pw_name, cred_name) if n] + (
            [("ConfigMap", ca_name)] if ca_name else []
        )
        for kind, name in wanted:
            for ns in sorted({where(i)[0] for i in items}):
                if copy_for_restore(client, kind, name, opts.secrets_namespace, ns, restore_id):
                    copied.append((kind, ns, name))
    backup_id = record.get("backup_id", "")
    app = str(app_of(record).get("name") or "")
    pods = {}
    started = time.time()
    try:
        for item in items:
            pod_ns, claim = where(item)
            name = (
                kube_objects.k8s_name("snapflow-restore", restore_id, item["pvc"])
                if placement is None
                else kube_objects.k8s_name("snapflow-restore", restore_id, item["namespace"], item["pvc"])
            )
            labels = {
                **kube_objects.backup_labels(backup_id, app, item["volume"], role="mover"),
                kube_objects.LABEL_RESTORE: kube_objects.label_value(restore_id),
            }
            manifest = kube_objects.mover_pod(
                name=name,
                namespace=pod_ns,
                pvc=claim,
                image=image,
                repository=opts.repo,
                snapshot_id=item["snapshot"],
                labels=labels,
                password_secret=pw_name,
                password_secret_key=pw_key,
                credentials_secret=cred_name or None,
                access_key_key=cred_id_key or runtime.AWS_ACCESS_KEY_ID,
                secret_key_key=cred_secret_key or runtime.AWS_SECRET_ACCESS_KEY,
                ca_config_map=ca_name or None,
                ca_key=ca_key,
                extra_env=extra_env,
                endpoint=opts.endpoint,
                excludes=opts.exclude,
                volume_mode=item["volume_mode"],
                run_as_root=not opts.mover_non_root,
                extra_args=mover_options(item, spec, pg_labels),
            )
            try:
                client.create(manifest)
            except AlreadyExists:
                client.delete("v1", "Pod", name, pod_ns)
                client.wait_for("v1", "Pod", name, pod_ns, lambda o: o is None, opts.timeout)
                client.create(manifest)
            pods[name] = item
            log(f"mover pod {name} fills PVC {pod_ns}/{claim} from snapshot {item['snapshot'][:8]}")
        for ns in sorted({where(i)[0] for i in items}):
            names = [n for n, i in pods.items() if where(i)[0] == ns]

            def finished(o: dict, ns: str = ns) -> bool:
                phase = dig(o, "status", "phase")
                if phase == "Failed":
                    n = o["metadata"]["name"]
                    raise PermanentError(
                        f"mover pod {ns}/{n} (PVC {pods[n]['pvc']}) failed: {pod_failure(client, o)}"
                    )
                return phase == "Succeeded"

            client.wait_for_all(
                "v1",
                "Pod",
                ns,
                names,
                finished,
                opts.timeout,
                label_selector=f"{kube_objects.LABEL_RESTORE}={kube_objects.label_value(restore_id)}",
                on_timeout=lambda seen, ns=ns, names=names: PermanentError(
                    f"mover pods in {ns} not finished after {opts.timeout:g}s: "
                    + ", ".join(
                        f"{n} ({dig(seen.get(n) or {}, 'status', 'phase') or 'missing'})"
                        for n in sorted(seen) or names
                    )
                ),
            )
        for name, item in pods.items():
            report.volumes.append(
                {
                    **item,
                    "duration_s": round(time.time() - started, 3),
                    "mover": "pod",
                    "pod": name,
                    **(
                        {"mover_namespace": where(item)[0], "staging_pvc": where(item)[1]}
                        if placement
                        else {}
                    ),
                    **label_report(item, pg_labels),
                }
            )
    finally:
        for name, item in pods.items():
            try:
                client.delete("v1", "Pod", name, where(item)[0])
            except KubeError as err:
                log(f"could not delete mover pod {name}: {err}")
        for kind, ns, name in copied:
            try:
                client.delete("v1", kind, name, ns)
            except KubeError as err:
                log(f"could not delete the copied {kind} {ns}/{name}: {err}")


def pod_failure(client, pod: dict) -> str:
    from steps.drivers.kube_objects import dig

    parts = []
    for cs in dig(pod, "status", "containerStatuses", default=[]) or []:
        term = dig(cs, "state", "terminated") or {}
        if term:
            parts.append(
                f"exit {term.get('exitCode')}" + (f": {term.get('message')}" if term.get("message") else "")
            )
    try:
        log = client.pod_log(pod["metadata"]["namespace"], pod["metadata"]["name"], tail_lines=5)
        lines = [ln for ln in log.splitlines() if ln.strip()]
        if lines:
            parts.append("log: " + " | ".join(lines[-5:]))
    except Exception:  # the log is a courtesy; the failure itself is already known
        pass
    return "; ".join(parts) or "no details"
