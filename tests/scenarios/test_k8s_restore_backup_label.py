"""Restore by mover pods of a PostgreSQL copied in backup mode, and of files whose owners are remapped.

Each mover pod runs `python -m steps restore` (run as a process by the fake kubelet, through the real
`kubernetes` client against the fake API server, repository on SeaweedFS): it reads the backup_label from
the backup's record in the repository itself and writes it into the data directory of its volume, and
it gives the restored files the owners the transforms' UID/GID ranges say.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.fixtures.backup_mode import BACKUP_LABEL, TABLESPACE_MAP, backup_mode_target, commit_backup
from tests.fixtures.k8s_app import APP_NS, VOLUMES, run_step
from tests.fixtures.rendered import repository_secrets

LABEL_FILES = ("pgdata/backup_label", "pgdata/tablespace_map")


def backup_in_backup_mode(k8s, backup_id: str, chown: dict[str, tuple[int, int]] | None = None) -> dict:
    """The app, with its data directory in ``pgdata/`` of the data volume (entries of ``chown`` given
    those owners), backed up with a consistent point that copied PostgreSQL db-0 in backup mode (WAL on
    its own volume); returns the committed record."""
    k8s.deploy_app()
    volume = k8s.server.volume_path(APP_NS, VOLUMES["data"])
    pgdata = volume / "pgdata"
    (pgdata / "global").mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    (pgdata / "global" / "pg_control").write_bytes(os.urandom(8192))
    os.chmod(pgdata, 0o700)
    for rel, (uid, gid) in (chown or {}).items():
        os.chown(volume / rel, uid, gid, follow_symlinks=False)
    res = run_step(
        "capture", "--repo", k8s.repo, "--namespace", APP_NS, "--backup-id", backup_id,
        "--app", "db", "--cluster", "test", "--policy", "db",
    )  # fmt: skip
    assert res.rc == 0, res.stderr
    plan = json.loads(k8s.plan().read_text())
    plan["targets"][0]["params"]["pgdata"] = "pgdata"
    plan["volumes"] = [
        {"name": "data", "pvc": VOLUMES["data"]},
        {"name": "wal", "pvc": VOLUMES["wal"], "role": "wal"},
    ]
    sources = {v: k8s.server.volume_path(APP_NS, pvc) for v, pvc in VOLUMES.items()}
    return commit_backup(k8s.repo, backup_id, plan, sources, [backup_mode_target("db-0", backup_id)], k8s.tmp)


def repository_namespace(k8s) -> None:
    """The repository's Secrets in the namespace Snapflow runs in (the restore copies them)."""
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "snapflow"}})
    repository_secrets(k8s.server, "snapflow", password="repo-key", s3="s3")


def restore_by_mover_pods(k8s, backup_id: str, namespace: str, *extra: str):
    return run_step(
        "restore-app", "--repo", k8s.repo, "--backup", backup_id, "--target-namespace", namespace,
        "--mover", "pod", "--image", "snapflow-steps:test", "--password-secret", "repo-key",
        "--credentials-secret", "s3", "--secrets-namespace", "snapflow",
        "--endpoint", os.environ["SNAPFLOW_S3_ENDPOINT"], "--timeout", "60", "--json", *extra,
    )  # fmt: skip


def without_label(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in LABEL_FILES}


def test_postgresql_copied_in_backup_mode_is_restored_by_mover_pods_with_its_label(k8s):
    from tests.fixtures.k8s_app import StepPodKubelet

    # GIVEN a committed backup whose PostgreSQL was copied in backup mode, and the app's namespace lost
    backup_in_backup_mode(k8s, "backup-db-pg1")
    before = k8s.volume_state()
    repository_namespace(k8s)
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    k8s.server.set_pod_runner(kubelet)
    k8s.delete_namespace(APP_NS)

    # WHEN the app is restored into a new namespace by mover pods
    res = restore_by_mover_pods(k8s, "backup-db-pg1", "shop-pg")

    # THEN the data volume's mover wrote the recorded label and tablespace map into the data directory
    # (read from the repository: no label text in any pod), the WAL volume got none, the rest is identical
    assert res.rc == 0, res.stderr + "\n".join(r["stderr"] for r in kubelet.runs)
    assert sorted(r["rc"] for r in kubelet.runs) == [0, 0]
    flagged = [r["pod"] for r in kubelet.runs if "--write-backup-label" in r["argv"]]
    assert len(flagged) == 1 and flagged[0].endswith("-data-db-0"), flagged
    assert not any("START WAL LOCATION" in " ".join(r["argv"]) for r in kubelet.runs)
    data = k8s.server.volume_path("shop-pg", VOLUMES["data"])
    assert (data / "pgdata" / "backup_label").read_text() == BACKUP_LABEL.format(backup_id="backup-db-pg1")
    assert (data / "pgdata" / "tablespace_map").read_text() == TABLESPACE_MAP
    after = k8s.volume_state("shop-pg")
    assert after["wal"] == before["wal"]
    assert without_label(after["data"]) == before["data"]
    report = json.loads(res.last_line)
    written = {v["volume"]: v.get("written") for v in report["volumes"]}
    assert written == {"data": list(LABEL_FILES), "wal": None}


def owners(root) -> dict[str, tuple[int, int]]:
    """(uid, gid) of every entry below ``root`` (and of ``root`` itself, as "."), symlinks included."""
    out = {".": (os.lstat(root).st_uid, os.lstat(root).st_gid)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_uid, st.st_gid)
    return out


def ids_dropped(state: dict) -> dict:
    """tree_state without owners (what a remap changes) and without the written label."""
    out = {}
    for rel, e in state.items():
        if rel not in LABEL_FILES:
            out[rel] = (e[0], e[1], *e[4:]) if e[0] == "file" else e[:2] if e[0] == "dir" else e
    return out


@pytest.mark.root
def test_mover_pods_restore_owners_through_the_transforms_uid_and_gid_ranges(k8s):
    from tests.fixtures.k8s_app import StepPodKubelet

    if os.geteuid() != 0:
        pytest.skip("setting other users' owners needs root; CI runs as root")
    # GIVEN a committed backup of the app running as 999, its files owned by 999 and by root
    backup_in_backup_mode(
        k8s,
        "backup-db-pg2",
        chown={
            "pgdata": (999, 999),
            "pgdata/PG_VERSION": (999, 999),
            "pgdata/global": (999, 0),
            "pg_wal": (999, 0),
        },
    )
    before = k8s.volume_state()
    owners_before = {v: owners(k8s.server.volume_path(APP_NS, pvc)) for v, pvc in VOLUMES.items()}
    assert {o for vol in owners_before.values() for o in vol.values()} == {(0, 0), (999, 999), (999, 0)}
    repository_namespace(k8s)
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    k8s.server.set_pod_runner(kubelet)
    k8s.delete_namespace(APP_NS)
    transforms = k8s.tmp / "transforms.yaml"
    transforms.write_text('uidMap: ["999:1000650999", "0:1000650000"]\n')

    # WHEN it is restored by mover pods with UID ranges from a transforms file and GID ranges as flags
    res = restore_by_mover_pods(
        k8s, "backup-db-pg2", "shop-ocp", "--transforms", transforms,
        "--gid-map", "999:1000650999", "--gid-map", "0:1000650000",
    )  # fmt: skip

    # THEN the pods' security context and every restored owner (files, directories, the symlink, the
    # volume roots) moved by the same ranges, the label is owned like its data directory, and the
    # content is the same
    assert res.rc == 0, res.stderr + "\n".join(r["stderr"] for r in kubelet.runs)
    assert all("--uid-map" in r["argv"] and "--gid-map" in r["argv"] for r in kubelet.runs)
    pod = k8s.server.get("statefulsets.apps", "db", "shop-ocp")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 1000650999, "fsGroup": 1000650999}
    shift = {0: 1000650000, 999: 1000650999}
    for volume, pvc in VOLUMES.items():
        got = owners(k8s.server.volume_path("shop-ocp", pvc))
        for name in LABEL_FILES:
            got.pop(name, None)
        assert got == {rel: (shift[u], shift[g]) for rel, (u, g) in owners_before[volume].items()}
    data = k8s.server.volume_path("shop-ocp", VOLUMES["data"])
    assert os.lstat(data / "pg_wal").st_uid == 1000650999  # the symlink itself
    label = os.lstat(data / "pgdata" / "backup_label")
    assert (label.st_uid, label.st_gid) == (1000650999, 1000650999)
    after = k8s.volume_state("shop-ocp")
    assert {v: ids_dropped(st) for v, st in after.items()} == {v: ids_dropped(st) for v, st in before.items()}
