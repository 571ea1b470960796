"""Damaged records are loud: a snapshot, backup or run record that was byte-flipped, swapped with
another, renamed or deleted is never chosen around quietly.

The repository (``file://``) holds two committed backups of one app and a third whose copy and verify
ran but which finalize has not committed yet, all made by the real steps (copy, verify, finalize)
through the step command line, in process (``steps.cli.main``) like an operator's shell would run them.
Then one record is damaged on disk, and each command that chooses among records is run:
``restore --snapshot latest``, ``finalize``, ``forget --keep-last`` (retention), ``backups``, and the
report. What each must do, per kind of damage:

==========  ===========================  ===========================  ==========================
damage      snapshot record              backup record                run record
==========  ===========================  ===========================  ==========================
flip/swap/  latest refuses, naming it;   latest refuses, naming it;   latest restores the newest;
rename      finalize of the backup it    finalize of that backup      finalize of that backup
            may belong to refuses;       refuses; retention refuses;  refuses; retention goes on;
            retention refuses; report    report banner; ``backups``   report banner; ``backups``
            banner; ``backups`` marks    lists it DAMAGED             names it under its backup
            the volume
delete      latest refuses (the newest   latest restores the older    latest restores the newest;
            backup names it); retention  backup (a backup never       finalize: no verify, not
            refuses; report banner;      committed looks the same);   committed
            ``backups`` marks the        finalize commits it again
            volume MISSING
==========  ===========================  ===========================  ==========================
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "records password"
APP = {"cluster": "eu", "namespace": "shop", "name": "db", "policy": "db"}
B1, B2, B3 = "backup-db-0001", "backup-db-0002", "backup-db-0003"


# --------------------------------------------------------------------------------------------------
# The repository, made once by the real steps


def _env(monkeypatch) -> None:
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")


def steps(*args: str) -> int:
    from steps.cli import main

    return main(list(args))


def _plan(path: Path, repo_url: str, source: Path) -> Path:
    plan = {
        "version": 1,
        "app": APP,
        "repository": {"url": repo_url},
        "snapshot": {"driver": "local"},
        "targets": [],
        "volumes": [{"name": "data", "path": str(source)}],
    }
    path.write_text(json.dumps(plan))
    return path


def _backup(repo_url: str, source: Path, plan: Path, backup_id: str, commit: bool) -> None:
    """copy → consistent-point record → verify → finalize, as the pipeline runs them."""
    from steps.drivers.objectstore import open_store
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.records import utc_now_iso
    from steps.repository.repo import Repository

    repo = Repository.open(open_store(repo_url), PASSWORD)
    t = utc_now_iso()
    repo.save_record(
        "runs",
        {
            "name": "consistent-point",
            "backup_id": backup_id,
            "app": APP,
            "verdict": "app-consistent",
            "reasons": [],
            "recovery": {},
            "freeze_window_ms": 12.5,
            "started": t,
            "finished": t,
            "timeline": {
                "targets": [{"name": "db-0", "quiesced": t, "released": t, "window_ms": 12.5}],
                "volumes": [{"volume": "data", "cut": t}],
            },
        },
        key=backup_id,
    )
    identity = {"cluster": "eu", "namespace": "shop", "app": "db", "volume": "data", "policy": "db"}
    copy_source(repo, CopyOptions(str(source), {"backup": backup_id}, backup_id, identity))
    assert steps("verify", "--repo", repo_url, "--backup-id", backup_id) == 0
    if commit:
        assert (
            steps("finalize", "--plan", str(plan), "--backup-id", backup_id, "--workflow-status", "Succeeded")
            == 0
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A repository directory with backups B1, B2 (committed, B2 newer) and B3 (copied and verified,
    not committed); the source holds 'generation N' for backup N."""
    with pytest.MonkeyPatch.context() as mp:
        _env(mp)
        base = tmp_path_factory.mktemp("records")
        source = base / "source"
        source.mkdir()
        repo_dir = base / "repo"
        url = f"file://{repo_dir}"
        assert steps("init", "--repo", url) == 0
        plan = _plan(base / "plan.json", url, source)
        for n, bid in enumerate((B1, B2, B3), start=1):
            (source / "data.txt").write_text(f"generation {n}\n")
            _backup(url, source, plan, bid, commit=bid != B3)
        yield repo_dir


class World:
    """A fresh copy of the template repository, and what is in it."""

    def __init__(self, template: Path, tmp: Path):
        self.dir = tmp / "repo"
        shutil.copytree(template, self.dir)
        self.url = f"file://{self.dir}"
        self.tmp = tmp
        plan = json.loads((template.parent / "plan.json").read_text())
        plan["repository"]["url"] = self.url
        self.plan = tmp / "plan.json"
        self.plan.write_text(json.dumps(plan))

    def repo(self):
        from steps.drivers.objectstore import open_store
        from steps.repository.repo import Repository

        return Repository.open(open_store(self.url), PASSWORD)

    def snapshot_of(self, backup_id: str) -> str:
        (snap,) = [s for s in self.repo().list_snapshots() if s.backup_id == backup_id]
        return f"snapshots/{snap.id}"

    def backup_record(self, backup_id: str) -> str:
        (rec,) = self.repo().list_records("backups", key=backup_id)
        return rec.key

    def run_record(self, backup_id: str, name: str) -> str:
        (rec,) = [r for r in self.repo().list_records("runs", key=backup_id) if r.data["name"] == name]
        return rec.key

    # -- damage, done to the files as someone with write access to the bucket would
    def path(self, key: str) -> Path:
        return self.dir / key

    def flip(self, key: str) -> str:
        data = bytearray(self.path(key).read_bytes())
        data[len(data) // 2] ^= 0x01
        self.path(key).write_bytes(bytes(data))
        return key

    def swap(self, a: str, b: str) -> str:
        pa, pb = self.path(a), self.path(b)
        da, db = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(db)
        pb.write_bytes(da)
        return a

    def rename(self, key: str) -> str:
        new = key.rsplit("/", 1)[0] + "/" + "0" * 64
        self.path(key).rename(self.path(new))
        return new

    def delete(self, key: str) -> str:
        self.path(key).unlink()
        return key


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    _env(monkeypatch)
    return World(template, tmp_path)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run a step in process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = steps(*args)
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    """The error of a failed step: exactly one line starting with 'error: '."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "\n" not in lines[0]
    return lines[0]


def restored_generation(world: World, capsys) -> str:
    target = world.tmp / "restored"
    shutil.rmtree(target, ignore_errors=True)
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", "latest", "--target", str(target)
    )
    assert rc == 0, err
    return (target / "data.txt").read_text().strip()


# --------------------------------------------------------------------------------------------------
# The damage, per kind of record


def damage(world: World, kind: str, how: str) -> str:
    """Damage the newest committed backup's (B2's) record of ``kind``; the object key that is damaged
    (or deleted) afterwards. A swap exchanges it with B1's record of the same kind (run records: the
    two records of B2, whose group is the only place a run record authenticates)."""
    if kind == "snapshots":
        key, other = world.snapshot_of(B2), world.snapshot_of(B1)
    elif kind == "backups":
        key, other = world.backup_record(B2), world.backup_record(B1)
    else:
        key, other = world.run_record(B2, "verify"), world.run_record(B2, "consistent-point")
    if how == "flip":
        return world.flip(key)
    if how == "swap":
        return world.swap(key, other)
    if how == "rename":
        return world.rename(key)
    return world.delete(key)


KINDS = ("snapshots", "backups", "runs")
DAMAGE = ("flip", "swap", "rename")


def test_the_template_repository_restores_the_newest_backup(world, capsys):
    # GIVEN the untouched repository THEN latest is B2 (B3 is not committed) and nothing is damaged
    assert restored_generation(world, capsys) == "generation 2"
    rc, out, _err = cli(capsys, "backups", "--repo", world.url, "--json")
    assert rc == 0
    assert [(b["backup_id"], b["damaged"], b["consistency"]) for b in json.loads(out)] == [
        (B1, False, "app-consistent"),
        (B2, False, "app-consistent"),
    ]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", ("snapshots", "backups"))
def test_restore_latest_refuses_naming_a_damaged_snapshot_or_backup_record(world, capsys, kind, how):
    # GIVEN B2's snapshot or backup record damaged
    key = damage(world, kind, how)
    # WHEN the newest backup is restored
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", "latest", "--target", str(world.tmp / "r")
    )
    # THEN it refuses (exit 3) in one line naming the object key and the ways out, and wrote nothing
    assert rc == 3
    line = error_line(err)
    assert key in line and "--snapshot ID" in line and "repair records" in line
    assert not (world.tmp / "r").exists()


@pytest.mark.parametrize("how", DAMAGE)
def test_restore_latest_is_not_concerned_by_a_damaged_run_record(world, capsys, how):
    # GIVEN a run record of B2 damaged (run records are no restore points)
    damage(world, "runs", how)
    # THEN latest is still B2
    assert restored_generation(world, capsys) == "generation 2"


def test_restore_latest_after_deletes(world, capsys):
    # GIVEN B2's backup record deleted: B2 looks exactly like a backup finalize never committed
    world.delete(world.backup_record(B2))
    # THEN latest is B1, the newest restore point the repository holds
    assert restored_generation(world, capsys) == "generation 1"


def test_restore_latest_refuses_when_the_newest_backup_names_a_deleted_snapshot(world, capsys):
    # GIVEN B2's snapshot record deleted (B2's committed record still names it)
    key = world.delete(world.snapshot_of(B2))
    # WHEN latest is restored THEN it refuses naming the missing record, instead of restoring B1
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", "latest", "--target", str(world.tmp / "r")
    )
    assert rc == 3
    line = error_line(err)
    assert key in line and "missing" in line and f"forget --backup-id {B2}" in line


def test_restore_latest_with_a_deleted_run_record_restores_the_newest(world, capsys):
    world.delete(world.run_record(B2, "verify"))
    assert restored_generation(world, capsys) == "generation 2"


@pytest.mark.parametrize("how", DAMAGE)
def test_restore_by_id_still_works_around_damage(world, capsys, how):
    # GIVEN B2's snapshot record damaged
    b1 = world.snapshot_of(B1).split("/")[1]
    damage(world, "snapshots", how if how != "swap" else "flip")
    # WHEN B1's snapshot is restored by ID THEN it is
    target = world.tmp / "by-id"
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", b1[:12], "--target", str(target)
    )
    assert rc == 0, err
    assert (target / "data.txt").read_text() == "generation 1\n"


def test_restore_of_a_damaged_snapshot_by_id_says_it_is_damaged(world, capsys):
    sid = world.snapshot_of(B2).split("/")[1]
    key = world.flip(f"snapshots/{sid}")
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", sid[:8], "--target", str(world.tmp / "r")
    )
    assert rc == 3
    line = error_line(err)
    assert key in line and "damaged" in line and "no snapshot" not in line


def test_restore_by_id_of_a_backup_whose_record_is_damaged_says_so(world, capsys):
    sid = world.snapshot_of(B2).split("/")[1]
    key = world.flip(world.backup_record(B2))
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, "--snapshot", sid, "--target", str(world.tmp / "r")
    )
    assert rc == 3
    line = error_line(err)
    assert key in line and "--allow-uncommitted" in line
    rc, _out, err = cli(
        capsys,
        "restore",
        "--repo",
        world.url,
        "--snapshot",
        sid,
        "--target",
        str(world.tmp / "r"),
        "--allow-uncommitted",
    )
    assert rc == 0, err


# --------------------------------------------------------------------------------------------------
# finalize


def finalize(world: World, capsys, backup_id: str) -> tuple[int, str]:
    rc, _out, err = cli(
        capsys,
        "finalize",
        "--plan",
        str(world.plan),
        "--backup-id",
        backup_id,
        "--workflow-status",
        "Succeeded",
    )
    return rc, err


def damage_b3(world: World, kind: str, how: str) -> str:
    """Damage a record of B3, the backup finalize is about to commit."""
    if kind == "snapshots":
        key, other = world.snapshot_of(B3), world.snapshot_of(B1)
    elif kind == "runs":
        key, other = world.run_record(B3, "verify"), world.run_record(B3, "consistent-point")
    else:
        raise AssertionError(kind)
    return {"flip": world.flip, "rename": world.rename, "delete": world.delete}.get(
        how, lambda k: world.swap(k, other)
    )(key)


def test_finalize_commits_the_third_backup_when_nothing_is_damaged(world, capsys):
    rc, err = finalize(world, capsys, B3)
    assert rc == 0, err
    assert restored_generation(world, capsys) == "generation 3"


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", ("snapshots", "runs"))
def test_finalize_refuses_to_commit_around_a_damaged_record_of_its_backup(world, capsys, kind, how):
    # GIVEN B3's snapshot or one of its run records damaged
    key = damage_b3(world, kind, how)
    # WHEN finalize runs for B3
    rc, err = finalize(world, capsys, B3)
    # THEN it does not commit, in one line naming the key and the way out
    assert rc == 3
    line = error_line(err)
    assert key in line and "repair records" in line and "not committed" in line
    assert world.repo().list_records("backups", key=B3) == []


@pytest.mark.parametrize("how", DAMAGE)
def test_finalize_run_again_refuses_to_commit_over_a_damaged_backup_record(world, capsys, how):
    # GIVEN B2 committed, and its backup record damaged afterwards
    key = damage(world, "backups", how)
    # WHEN finalize runs again for B2 (an exit handler retried)
    rc, err = finalize(world, capsys, B2)
    # THEN it refuses rather than write a second commit beside the damaged one
    assert rc == 3
    line = error_line(err)
    assert key in line and "repair records" in line
    assert world.repo().list_records("backups", key=B2) == []


def test_finalize_after_deletes_does_what_an_undamaged_repository_would(world, capsys):
    # GIVEN B3's verify record deleted THEN finalize finds no verify: not committed (exit 3)
    world.delete(world.run_record(B3, "verify"))
    rc, err = finalize(world, capsys, B3)
    assert rc == 3 and "no verify run record" in error_line(err)
    # GIVEN B2's backup record deleted THEN finalize run again commits B2 again (its checks still pass)
    world.delete(world.backup_record(B2))
    rc, err = finalize(world, capsys, B2)
    assert rc == 0, err
    assert len(world.repo().list_records("backups", key=B2)) == 1


# --------------------------------------------------------------------------------------------------
# retention


def forget(world: World, capsys, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "forget", "--repo", world.url, "--keep-last", "1", *extra)


@pytest.mark.parametrize(
    ("kind", "how"),
    # (a deleted backup record is a backup never committed: see the test after this one)
    [("snapshots", h) for h in (*DAMAGE, "delete")] + [("backups", h) for h in DAMAGE],
)
def test_retention_refuses_to_count_restore_points_around_damage(world, capsys, kind, how):
    # GIVEN a damaged (or, for a snapshot record a backup names, deleted) record
    key = damage(world, kind, how)
    before = sorted(p.name for p in (world.dir / "snapshots").iterdir())
    # WHEN retention keeps the newest restore point
    rc, _out, err = forget(world, capsys)
    # THEN it refuses in one line naming the key, and nothing was deleted
    assert rc == 3
    line = error_line(err)
    assert key in line and "retention" in line
    assert sorted(p.name for p in (world.dir / "snapshots").iterdir()) == before


def test_retention_after_a_deleted_backup_record_keeps_the_newest_committed_one(world, capsys):
    world.delete(world.backup_record(B2))
    rc, out, err = forget(world, capsys, "--dry-run", "--json")
    assert rc == 0, err
    decisions = {d["id"]: d["keep"] for d in json.loads(out)["decisions"]}
    assert decisions == {B1: True}


@pytest.mark.parametrize("how", (*DAMAGE, "delete"))
def test_retention_goes_on_with_a_damaged_run_record(world, capsys, how):
    damage(world, "runs", how)
    rc, out, err = forget(world, capsys, "--dry-run", "--json")
    assert rc == 0, err
    assert {d["id"]: d["keep"] for d in json.loads(out)["decisions"]} == {B2: True, B1: False}


def test_forget_by_name_removes_a_backup_whose_record_is_damaged(world, capsys):
    key = world.flip(world.backup_record(B2))
    rc, _out, err = cli(capsys, "forget", "--repo", world.url, "--backup-id", B2)
    assert rc == 0, err
    assert not world.path(key).exists()
    assert restored_generation(world, capsys) == "generation 1"


# --------------------------------------------------------------------------------------------------
# the backups listing


@pytest.mark.parametrize("how", DAMAGE)
def test_backups_lists_a_damaged_backup_record_as_damaged(world, capsys, how):
    key = damage(world, "backups", how)
    rc, out, err = cli(capsys, "backups", "--repo", world.url, "--json")
    assert rc == 0, err
    items = json.loads(out)
    damaged = [i for i in items if i["damaged"]]
    assert key in [i["record"] for i in damaged]
    rc, out, _err = cli(capsys, "backups", "--repo", world.url)
    assert "DAMAGED" in out and key in out


@pytest.mark.parametrize("how", (*DAMAGE, "delete"))
def test_backups_marks_a_volume_whose_snapshot_record_is_damaged_or_missing(world, capsys, how):
    damage(world, "snapshots", how)
    rc, out, err = cli(capsys, "backups", "--repo", world.url, "--json")
    assert rc == 0, err
    (b2,) = [i for i in json.loads(out) if i["backup_id"] == B2]
    assert b2["volumes"][0]["state"] == ("missing" if how in ("delete", "rename") else "damaged")
    assert b2["problems"]


@pytest.mark.parametrize("how", DAMAGE)
def test_backups_names_a_damaged_run_record_under_its_backup(world, capsys, how):
    key = damage(world, "runs", how)
    rc, out, err = cli(capsys, "backups", "--repo", world.url, "--json")
    assert rc == 0, err
    (b2,) = [i for i in json.loads(out) if i["backup_id"] == B2]
    assert any(key in p for p in b2["problems"])


def test_backups_describes_one_backup(world, capsys):
    rc, out, err = cli(capsys, "backups", "--repo", world.url, "--id", B2)
    assert rc == 0, err
    for label in (
        "Name:",
        "Consistency:",
        "Freeze window:",
        "Verify:",
        "Volumes:",
        B2,
        "app-consistent",
        "12.5 ms",
    ):
        assert label in out
    rc, out, err = cli(capsys, "backups", "--repo", world.url, "--id", B2, "--json")
    item = json.loads(out)
    assert item["backup_id"] == B2 and item["volumes"][0]["snapshot"] == world.snapshot_of(B2).split("/")[1]
    key = world.flip(world.backup_record(B2))
    rc, _out, err = cli(capsys, "backups", "--repo", world.url, "--id", B2)
    assert rc == 3 and key in error_line(err)
    rc, _out, err = cli(capsys, "backups", "--repo", world.url, "--id", B3)
    assert rc == 2 and "never committed" in error_line(err)


# --------------------------------------------------------------------------------------------------
# snapshots --json: the verdict of the backup


def test_snapshots_json_shows_the_verdict_of_each_snapshot_s_backup(world, capsys):
    rc, out, err = cli(capsys, "snapshots", "--repo", world.url, "--json")
    assert rc == 0, err
    by_backup = {s["backup_id"]: s for s in json.loads(out)}
    assert by_backup[B1]["consistency"] == "app-consistent"
    assert by_backup[B2]["consistency"] == "app-consistent"
    assert by_backup[B3]["consistency"] == "uncommitted" and by_backup[B3]["committed"] is False
    world.flip(world.backup_record(B2))
    rc, out, _err = cli(capsys, "snapshots", "--repo", world.url, "--json")
    assert {s["backup_id"]: s["consistency"] for s in json.loads(out)}[B2] == "damaged"


# --------------------------------------------------------------------------------------------------
# the report


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_the_report_flags_damaged_records_in_a_banner_at_the_top(world, kind, how):
    from workflows.report import collect, render_html

    key = damage(world, kind, how)
    report = collect(world.url)
    assert key in [d["key"] for d in report.damaged]
    html = render_html(report)
    banner = html.index('id="damaged-records"')
    assert html.index(key) > banner
    assert banner < html.index("<nav") if "<nav" in html else True


def test_the_report_flags_a_deleted_snapshot_a_backup_names(world):
    from workflows.report import collect, render_html

    key = world.delete(world.snapshot_of(B2))
    report = collect(world.url)
    assert key in [d["key"] for d in report.damaged]
    assert 'id="damaged-records"' in render_html(report)


def test_the_report_of_an_undamaged_repository_has_no_banner(world):
    from workflows.report import collect, render_html

    report = collect(world.url)
    assert report.damaged == []
    assert 'id="damaged-records"' not in render_html(report)


# --------------------------------------------------------------------------------------------------
# repair records


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_repair_records_undoes_a_rename_or_swap_and_removes_what_cannot_be_read(world, capsys, kind, how):
    damage(world, kind, how)
    rc, _out, err = cli(capsys, "repair", "records", "--repo", world.url)
    assert rc == 0, err
    repo = world.repo()
    for k in KINDS:
        assert repo.damaged_records(k) == [], k
    if kind == "snapshots" and how == "flip":
        # B2's snapshot record could not be read, so it is gone; B2 names it: latest says so, and
        # the way out is to forget B2
        assert "forget --backup-id" in err
        rc, _out, err = cli(
            capsys, "restore", "--repo", world.url, "--snapshot", "latest", "--target", "/nonexistent"
        )
        assert rc == 3 and f"forget --backup-id {B2}" in error_line(err)
        assert cli(capsys, "forget", "--repo", world.url, "--backup-id", B2)[0] == 0
        assert restored_generation(world, capsys) == "generation 1"
    elif kind == "backups" and how == "flip":
        # B2's commit could not be read, so it is gone and B2 is no restore point: the repair said how
        # to commit it again, and finalize run again does
        assert f"finalize for {B2}" in err
        assert restored_generation(world, capsys) == "generation 1"
        assert finalize(world, capsys, B2)[0] == 0
        assert restored_generation(world, capsys) == "generation 2"
    else:
        assert restored_generation(world, capsys) == "generation 2"


# --------------------------------------------------------------------------------------------------
# the real command lines


def _subprocess(*cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *cmd],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024", **(env or {})},
    )


def test_python_m_steps_restore_latest_refuses_in_one_line_and_exit_3(world):
    key = world.flip(world.snapshot_of(B2))
    proc = _subprocess(
        "-m",
        "steps",
        "restore",
        "--repo",
        world.url,
        "--snapshot",
        "latest",
        "--target",
        str(world.tmp / "x"),
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and key in proc.stderr and proc.stderr.startswith("error: ")


def test_backups_is_a_command_of_both_command_lines(world):
    for cmd in (("-m", "steps"), ("-m", "workflows")):
        helped = _subprocess(*cmd, "backups", "--help")
        assert helped.returncode == 0 and "--id BACKUP" in helped.stdout and "DAMAGED" in helped.stdout
        listed = _subprocess(*cmd, "--help")
        assert "backups" in listed.stdout
        proc = _subprocess(*cmd, "backups", "--repo", world.url)
        assert proc.returncode == 0, proc.stderr
        assert B1 in proc.stdout and B2 in proc.stdout and "2 backup(s)" in proc.stdout


# --------------------------------------------------------------------------------------------------
# key files


def test_a_damaged_key_file_is_named_and_told_apart_from_a_wrong_password(world, capsys):
    # GIVEN a second key, and then the first key file damaged
    from steps.drivers.objectstore import open_store
    from steps.errors import DamagedKeyFileError, WrongPasswordError
    from steps.repository.repo import Repository

    repo = world.repo()
    first = f"keys/{repo.key_id}"
    repo.add_key("second password", {"n": 1024, "r": 8, "p": 1})
    world.flip(first)
    store = open_store(world.url)
    # WHEN the repository is opened with the first key's password THEN the error names the key file
    with pytest.raises(DamagedKeyFileError) as err:
        Repository.open(store, PASSWORD)
    assert first in str(err.value) and "damaged" in str(err.value) and "\n" not in str(err.value)
    # AND the second key still opens it, with a warning naming the damaged file
    assert Repository.open(store, "second password").key_id != repo.key_id
    rc, _out, err_text = cli(capsys, "snapshots", "--repo", world.url)
    assert rc == 3 and first in error_line(err_text)
    # AND with only intact keys, a wrong password is a wrong password
    world.delete(first)
    with pytest.raises(WrongPasswordError):
        Repository.open(store, "not it")


def test_the_only_key_file_damaged_is_named(world, capsys):
    (key_file,) = [p for p in (world.dir / "keys").iterdir()]
    world.flip(f"keys/{key_file.name}")
    rc, _out, err = cli(capsys, "snapshots", "--repo", world.url)
    assert rc == 3
    line = error_line(err)
    assert f"keys/{key_file.name}" in line and "no other key file is intact" in line


def test_the_local_runner_s_latest_refuses_a_damaged_backup_record_of_its_app(world):
    from types import SimpleNamespace

    from steps.errors import DamagedRecordError
    from workflows.local.local_restore import refuse_damaged_backup_records

    repo = world.repo()
    refuse_damaged_backup_records(repo, SimpleNamespace(app="db", namespace="shop"))
    key = world.flip(world.backup_record(B2))
    repo = world.repo()
    repo.list_records("backups")
    with pytest.raises(DamagedRecordError) as err:
        refuse_damaged_backup_records(repo, SimpleNamespace(app="db", namespace="shop"))
    assert key in str(err.value) and "--snapshot ID" in str(err.value)


@pytest.mark.slow
def test_the_damage_banner_is_the_first_thing_a_browser_shows(world, chromium, capsys):
    # GIVEN B2's backup record byte-flipped and the report written by `snapflow report`
    from workflows.cli import main as snapflow

    key = world.flip(world.backup_record(B2))
    out = world.tmp / "report.html"
    capsys.readouterr()
    assert snapflow(["report", "--repo", world.url, "-o", str(out)]) == 0
    # WHEN a browser opens it
    visit = chromium(
        out.as_uri(),
        {
            "banner": "(() => { const b = document.getElementById('damaged-records');"
            " if (!b) return null; const r = b.getBoundingClientRect();"
            " return {top: r.top, height: r.height, text: b.innerText,"
            " color: getComputedStyle(b).borderTopColor}; })()",
            "nav_top": "document.querySelector('nav').getBoundingClientRect().top",
            "statuses": "[...document.querySelectorAll('table.runs tbody tr')].map(r => r.children[2].innerText)",
        },
    )
    (out.parent / "report.png").write_bytes(visit.screenshot)
    # THEN the banner is there, above everything else of the page's body, names the record and the way out
    assert visit.errors == []
    banner = visit.values["banner"]
    assert banner is not None and banner["height"] > 40
    assert banner["top"] < visit.values["nav_top"]
    assert key in banner["text"] and "repair records" in banner["text"]
    assert banner["color"] == "rgb(207, 34, 46)"  # the page's red
    # AND the run whose record is damaged says so
    assert "record damaged" in visit.values["statuses"]


def test_restore_app_s_latest_backup_refuses_a_damaged_backup_record(world):
    from steps.errors import DamagedRecordError
    from steps.manifests.backup_record import find_backup

    assert find_backup(world.repo(), "latest", app="db")["backup_id"] == B2
    key = world.flip(world.backup_record(B2))
    with pytest.raises(DamagedRecordError) as err:
        find_backup(world.repo(), "latest", app="db")
    assert key in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DamagedRecordError, match=key):
        find_backup(world.repo(), B2)
    assert find_backup(world.repo(), B1)["backup_id"] == B1
