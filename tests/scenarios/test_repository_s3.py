"""The repository steps against a real S3 server (SeaweedFS), through the step command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from steps.drivers.objectstore import open_store
from tests.fixtures.repository import build_tricky_tree, describe_tree

ROOT = Path(__file__).resolve().parents[2]


def steps(
    *args: str, timeout: float = 120, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"steps {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def copy_json(repo: str, source, *extra: str) -> dict:
    out = steps("copy", "--repo", repo, "--source", str(source), "--json", *extra).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_random(path: Path, mib: int, files: int = 1) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (path / f"blob{i}.bin").write_bytes(os.urandom(mib * 1024 * 1024 // files))


def pack_keys(repo: str) -> list[str]:
    return [i.key for i in open_store(repo).list("data/")]


# --------------------------------------------------------------------------------------------------


def test_tricky_tree_round_trips_byte_and_metadata_identical(s3_repo, tmp_path):
    # GIVEN a repository and a tree with every kind of entry
    src = build_tricky_tree(tmp_path / "src")
    steps("init", "--repo", s3_repo)
    # WHEN it is copied and restored
    out = steps("copy", "--repo", s3_repo, "--source", src, "--tag", "volume=data").stdout
    snapshot_id = out.strip().splitlines()[-1]
    steps(
        "restore", "--repo", s3_repo, "--snapshot", snapshot_id[:10], "--target", str(tmp_path / "restored")
    )
    # THEN the restored tree is identical: bytes, modes, owners, times, links, holes
    assert len(snapshot_id) == 64
    assert describe_tree(tmp_path / "restored") == describe_tree(src)
    assert os.stat(tmp_path / "restored" / "sparse.img").st_blocks * 512 < 1024 * 1024


def test_incremental_copy_reads_only_what_changed(s3_repo, tmp_path):
    # GIVEN a first snapshot of a tree
    src = build_tricky_tree(tmp_path / "src")
    steps("init", "--repo", s3_repo)
    first = copy_json(s3_repo, src)
    # WHEN one file changes, one is added, and the tree is copied again
    with open(os.path.join(src, "many", "f0007.dat"), "ab") as f:
        f.write(b"more")
    Path(src, "new-file").write_bytes(b"new" * 100)
    second = copy_json(s3_repo, src)
    # THEN the parent was found and only the two files were read (two more entries are hard links)
    assert second["parent"] == first["id"]
    assert second["files_read"] == 2
    assert second["files_unchanged"] == first["files"] - 1 - 2
    assert second["files_changed"] == 1 and second["files_new"] == 1
    assert second["bytes_read"] == os.path.getsize(os.path.join(src, "many", "f0007.dat")) + 300
    assert second["bytes_added"] < 64 * 1024
    # AND the second snapshot restores the new state
    steps("restore", "--repo", s3_repo, "--snapshot", "latest", "--target", str(tmp_path / "r"))
    assert describe_tree(tmp_path / "r") == describe_tree(src)


def test_identical_data_from_another_source_is_stored_once(s3_repo, tmp_path):
    write_random(tmp_path / "a", 12, files=3)
    (tmp_path / "b").mkdir()
    for f in (tmp_path / "a").iterdir():
        (tmp_path / "b" / ("copy-of-" + f.name)).write_bytes(f.read_bytes())
    steps("init", "--repo", s3_repo)
    first = copy_json(s3_repo, tmp_path / "a")
    second = copy_json(s3_repo, tmp_path / "b", "--tag", "other=source")
    assert second["parent"] is None
    assert first["bytes_added"] > 12 * 1024 * 1024
    assert second["bytes_added"] < 16 * 1024


def test_wrong_password_is_a_one_line_error(s3_repo, tmp_path):
    steps("init", "--repo", s3_repo)
    proc = steps("snapshots", "--repo", s3_repo, env={"SNAPFLOW_PASSWORD": "wrong one"}, check=False)
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "wrong password" in proc.stderr
    assert "wrong one" not in proc.stderr


def test_verify_names_truncated_deleted_and_corrupted_packs(s3_repo, tmp_path):
    # GIVEN a snapshot spread over several packs
    write_random(tmp_path / "src", 40, files=4)
    steps("init", "--repo", s3_repo)
    copy_json(s3_repo, tmp_path / "src")
    assert steps("verify", "--repo", s3_repo, "--read-data", "100").returncode == 0
    store = open_store(s3_repo)
    packs = sorted(pack_keys(s3_repo), key=lambda k: -store.stat(k).size)
    assert len(packs) >= 3
    truncated, deleted, flipped = packs[:3]
    # WHEN one pack is truncated, one deleted and one has a flipped bit
    store.put(truncated, store.get(truncated)[:-1000])
    store.delete(deleted)
    data = bytearray(store.get(flipped))
    data[len(data) // 2] ^= 0x01
    store.put(flipped, bytes(data))
    # THEN verify fails and names each of them
    proc = steps("verify", "--repo", s3_repo, "--read-data", "100", check=False)
    assert proc.returncode == 3
    name = lambda k: k.rsplit("/", 1)[-1]  # noqa: E731
    assert f"pack {name(truncated)}: size" in proc.stdout
    assert f"pack {name(deleted)}: missing" in proc.stdout
    assert f"pack {name(flipped)}: content does not match its name" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: verify failed")
    # AND the structural check alone already finds the truncated and the deleted one
    structural = steps("verify", "--repo", s3_repo, check=False)
    assert (
        structural.returncode == 3
        and name(deleted) in structural.stdout
        and name(truncated) in structural.stdout
    )


def test_copy_killed_mid_way_leaves_a_valid_repository_and_the_next_copy_resumes(s3_repo, tmp_path):
    # GIVEN a copy of enough data to take a while, writing an index every 2 packs
    write_random(tmp_path / "src", 120, files=6)
    steps("init", "--repo", s3_repo)
    env = {**os.environ, "SNAPFLOW_INDEX_EVERY_PACKS": "2", "SNAPFLOW_UPLOADERS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steps", "copy", "--repo", s3_repo, "--source", str(tmp_path / "src")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    store = open_store(s3_repo)
    # WHEN it is killed with SIGKILL once an intermediate index exists
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(True for _ in store.list("index/")):
        assert proc.poll() is None, "copy finished before it could be killed; give it more data"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert list(store.list("snapshots/")) == []
    # THEN reads work at once (no lock to wait for) and the repository verifies
    assert steps("verify", "--repo", s3_repo, "--read-data", "100", timeout=60).returncode == 0
    # AND the next copy succeeds, reusing what the killed one had uploaded and indexed
    result = copy_json(s3_repo, tmp_path / "src")
    assert result["bytes_added"] < 115 * 1024 * 1024
    steps("verify", "--repo", s3_repo, "--read-data", "100")
    steps("restore", "--repo", s3_repo, "--snapshot", result["id"], "--target", str(tmp_path / "r"))
    assert describe_tree(tmp_path / "r") == describe_tree(tmp_path / "src")


def test_s3_server_stopped_mid_copy_gives_a_clear_error_in_bounded_time(private_s3_server, tmp_path):
    # GIVEN a copy of enough data to take a while, to a server of our own
    repo = "s3://private/repo"
    write_random(tmp_path / "src", 120, files=6)
    steps("init", "--repo", repo)
    env = {**os.environ, "SNAPFLOW_UPLOADERS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steps", "copy", "--repo", repo, "--source", str(tmp_path / "src")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = open_store(repo)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(True for _ in store.list("data/")):
        assert proc.poll() is None
        time.sleep(0.05)
    # WHEN the server stops mid-copy
    private_s3_server.stop()
    stopped = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("copy hung after the S3 server stopped")
    # THEN the copy fails with the retryable exit code and one clear line, within the retry bound
    assert proc.returncode == 75, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: object store") and "did not answer" in last
    assert time.monotonic() - stopped < 60
    # AND once the server is back, the repository verifies and the copy succeeds
    private_s3_server.start()
    steps("verify", "--repo", repo)
    copy_json(repo, tmp_path / "src")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["copy", "--repo", "s3://bucket/p"], "--source"),
        (
            ["copy", "--repo", "s3://bucket/p", "--source", "/tmp", "--tag", "novalue"],
            "--tag: expected KEY=VALUE",
        ),
        (["verify", "--repo", "s3://bucket/p", "--read-data", "150"], "--read-data: expected a percentage"),
        (["snapshots", "--repo", "ftp://somewhere"], "--repo: expected a repository URL s3://BUCKET/PREFIX"),
        (["restore", "--repo", "s3://bucket/p", "--snapshot", "latest"], "--target"),
        (["key", "frobnicate", "--repo", "s3://bucket/p"], "invalid choice"),
        (["copy", "--repo", "s3://bucket/p", "--source", "/nonexistent/dir"], "--source"),
        (["snapshots", "--repo", "s3://B_/p"], "bucket name"),
    ],
)
def test_malformed_arguments_give_one_line_errors(s3_repo, args, expected):
    proc = steps(*args, check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr


def test_missing_password_is_a_one_line_usage_error(s3_repo):
    env = {k: v for k, v in os.environ.items() if k not in ("SNAPFLOW_PASSWORD", "SNAPFLOW_PASSWORD_FILE")}
    proc = subprocess.run(
        [sys.executable, "-m", "steps", "init", "--repo", s3_repo],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "SNAPFLOW_PASSWORD" in proc.stderr


def test_password_from_a_mounted_secret_file(s3_repo, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    env = {"SNAPFLOW_PASSWORD_FILE": str(secret), "SNAPFLOW_PASSWORD": ""}
    steps("init", "--repo", s3_repo, env=env)
    assert steps("snapshots", "--repo", s3_repo, env={"SNAPFLOW_PASSWORD": "from-a-file"}).returncode == 0


def test_verify_of_a_backup_stores_its_verdict_as_a_run_record(s3_repo, tmp_path):
    from steps.repository.repo import Repository

    write_random(tmp_path / "src", 2)
    steps("init", "--repo", s3_repo)
    copy_json(s3_repo, tmp_path / "src", "--backup-id", "backup-app-x1", "--app", "app", "--namespace", "ns")
    out = json.loads(steps("verify", "--repo", s3_repo, "--backup-id", "backup-app-x1", "--json").stdout)
    assert out["ok"] and len(out["snapshots"]) == 1
    # a backup ID no snapshot carries (a typo) is refused in one line, and nothing is stored for it
    missing = steps("verify", "--repo", s3_repo, "--backup-id", "backup-app-x2", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "error: --backup-id: no snapshot carries the backup ID 'backup-app-x2'; nothing was verified or recorded"
    ]
    repo = Repository.open(open_store(s3_repo), os.environ["SNAPFLOW_PASSWORD"])
    records = repo.list_records("runs", key="backup-app-x1")
    assert [(r.data["name"], r.data["ok"]) for r in records] == [("verify", True)]
    assert repo.list_records("runs", key="backup-app-x2") == []
    # a snapshot of an uncommitted backup is no restore point until finalize writes the backup record
    snaps = json.loads(steps("snapshots", "--repo", s3_repo, "--json").stdout)
    assert [s["committed"] for s in snaps] == [False]
    repo.save_record(
        "backups", {"backup_id": "backup-app-x1", "time": "2024-01-01T00:00:00Z"}, key="backup-app-x1"
    )
    snaps = json.loads(steps("snapshots", "--repo", s3_repo, "--json").stdout)
    assert [s["committed"] for s in snaps] == [True]


def test_many_writers_at_once_and_readers_never_wait(s3_repo, tmp_path):
    # GIVEN three sources copied into one repository at the same time
    steps("init", "--repo", s3_repo)
    for i in range(3):
        write_random(tmp_path / f"src{i}", 9, files=3)
    results: dict[int, dict] = {}

    def run(i: int) -> None:
        results[i] = copy_json(s3_repo, tmp_path / f"src{i}", "--volume", f"v{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    # WHILE they run, a reader lists snapshots without waiting on anything
    assert steps("snapshots", "--repo", s3_repo).returncode == 0
    for t in threads:
        t.join()
    # THEN every snapshot verifies and restores
    assert len(results) == 3
    assert steps("verify", "--repo", s3_repo, "--read-data", "100").returncode == 0
    steps("restore", "--repo", s3_repo, "--snapshot", results[1]["id"], "--target", str(tmp_path / "r1"))
    assert describe_tree(tmp_path / "r1") == describe_tree(tmp_path / "src1")


def test_a_single_file_is_backed_up_and_restored(s3_repo, tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.write(os.urandom(1024 * 1024))
        f.truncate(16 * 1024 * 1024)
    steps("init", "--repo", s3_repo)
    sid = copy_json(s3_repo, image)["id"]
    steps("restore", "--repo", s3_repo, "--snapshot", sid, "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "disk.img").read_bytes() == image.read_bytes()
    # an existing file that holds data is written over only when asked to
    target = tmp_path / "existing.img"
    target.write_bytes(b"old")
    refused = steps("restore", "--repo", s3_repo, "--snapshot", sid, "--target", str(target), check=False)
    assert refused.returncode == 2 and "--overwrite always" in refused.stderr
    assert target.read_bytes() == b"old"
    steps("restore", "--repo", s3_repo, "--snapshot", sid, "--target", str(target), "--overwrite", "always")
    assert target.read_bytes() == image.read_bytes()


def test_manifests_stored_with_a_backup_are_listed_by_tag(s3_repo):
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    steps("init", "--repo", s3_repo)
    repo = Repository.open(open_store(s3_repo), os.environ["SNAPFLOW_PASSWORD"])
    store_files(
        repo, {"v1/ConfigMap/app.yaml": b"kind: ConfigMap\n"}, tags={"kind": "manifests"}, backup_id="b-1"
    )
    listed = json.loads(steps("snapshots", "--repo", s3_repo, "--tag", "kind=manifests", "--json").stdout)
    assert len(listed) == 1 and listed[0]["backup_id"] == "b-1"
    out = steps("ls", "--repo", s3_repo, "--snapshot", listed[0]["id"]).stdout
    assert "/v1/ConfigMap/app.yaml" in out


def test_keys_are_added_and_the_password_changed_without_rewriting_data(s3_repo, tmp_path):
    write_random(tmp_path / "src", 1)
    steps("init", "--repo", s3_repo)
    copy_json(s3_repo, tmp_path / "src")
    before = sorted(pack_keys(s3_repo))
    steps("key", "add", "--repo", s3_repo, env={"SNAPFLOW_NEW_PASSWORD": "second"})
    steps("key", "passwd", "--repo", s3_repo, env={"SNAPFLOW_NEW_PASSWORD": "third"})
    assert steps("snapshots", "--repo", s3_repo, check=False).returncode == 3  # old password gone
    for pw in ("second", "third"):
        assert steps("verify", "--repo", s3_repo, env={"SNAPFLOW_PASSWORD": pw}).returncode == 0
    assert sorted(pack_keys(s3_repo)) == before
    keys = json.loads(
        steps("key", "list", "--repo", s3_repo, "--json", env={"SNAPFLOW_PASSWORD": "third"}).stdout
    )
    assert len(keys) == 2


def _without_root_read_override() -> list[str]:
    """A command prefix under which root, too, is refused a file it has no permission for (CI runs as
    root, whose CAP_DAC_OVERRIDE would read a chmod 000 file)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_repair_with_an_unreadable_pack_changes_nothing_and_prune_keeps_the_data(tmp_path, monkeypatch):
    # GIVEN a repository in a directory, a backup of two files, and one of its data packs unreadable
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    repo = f"file://{tmp_path / 'repo'}"
    write_random(tmp_path / "src", 20, files=2)
    steps("init", "--repo", repo)
    snap = copy_json(repo, tmp_path / "src")["id"]
    store = open_store(repo)
    index_before = sorted(i.key for i in store.list("index/"))
    pack = max(pack_keys(repo), key=lambda k: store.stat(k).size)
    path = tmp_path / "repo" / pack
    path.chmod(0)
    try:
        # WHEN the index is rebuilt
        proc = subprocess.run(
            [*_without_root_read_override(), sys.executable, "-m", "steps", "repair", "index", "--repo", repo],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ,
        )  # fmt: skip
        # THEN it fails in one line naming the pack, and no index file was written or deleted
        assert proc.returncode == 3, proc.stdout + proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert pack.rsplit("/", 1)[-1] in last and "nothing was changed" in last
        assert sorted(i.key for i in store.list("index/")) == index_before
        # AND a prune right after deletes nothing the backup needs
        steps("prune", "--repo", repo, "--keep-last", "1", "--grace", "0", "--wait")
        assert path.exists()
    finally:
        path.chmod(0o644)
    steps("verify", "--repo", repo, "--read-data", "100")
    steps("restore", "--repo", repo, "--snapshot", snap, "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "blob0.bin").read_bytes() == (tmp_path / "src" / "blob0.bin").read_bytes()


def test_repair_skips_a_corrupt_pack_and_says_so_with_a_failing_exit_code(s3_repo, tmp_path):
    # GIVEN a repository on S3 with one pack truncated
    write_random(tmp_path / "src", 20, files=2)
    steps("init", "--repo", s3_repo)
    copy_json(s3_repo, tmp_path / "src")
    store = open_store(s3_repo)
    pack = max(pack_keys(s3_repo), key=lambda k: store.stat(k).size)
    store.put(pack, store.get(pack)[:-4096])
    # WHEN the index is rebuilt THEN the other packs are indexed, and the command fails naming the skipped one
    proc = steps("repair", "index", "--repo", s3_repo, check=False)
    assert proc.returncode == 3
    assert "1 damaged packs skipped" in proc.stdout
    assert pack.rsplit("/", 1)[-1] in proc.stderr.strip().splitlines()[-1]


def test_verify_of_a_backup_reads_every_pack_it_wrote_whatever_the_read_data_share(s3_repo, tmp_path):
    # GIVEN a backup b1, and a backup b2 of the same source with one new file
    write_random(tmp_path / "src", 10, files=1)
    steps("init", "--repo", s3_repo)
    copy_json(s3_repo, tmp_path / "src", "--backup-id", "b1")
    store = open_store(s3_repo)
    before = set(pack_keys(s3_repo))
    (tmp_path / "src" / "new.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    copy_json(s3_repo, tmp_path / "src", "--backup-id", "b2")
    written = sorted(set(pack_keys(s3_repo)) - before, key=lambda k: -store.stat(k).size)
    # WHEN a bit flips in the data pack b2 wrote (same size: the structural check cannot tell)
    data = bytearray(store.get(written[0]))
    data[len(data) // 2] ^= 0x01
    store.put(written[0], bytes(data))
    # THEN verify of b2 reads it back even with --read-data 0, and fails naming it
    proc = steps("verify", "--repo", s3_repo, "--backup-id", "b2", "--read-data", "0", check=False)
    assert proc.returncode == 3
    assert f"pack {written[0].rsplit('/', 1)[-1]}: content does not match its name" in proc.stdout
    # AND verify of b1, which does not use that pack, reads only what b1 wrote, and passes
    out = json.loads(steps("verify", "--repo", s3_repo, "--backup-id", "b1", "--json").stdout)
    assert out["ok"] and out["packs_read"] == out["packs_new"] == len(before)


def _copy_unprivileged(repo: str, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_without_root_read_override(), sys.executable, "-m", "steps", "copy", "--repo", repo,
         "--source", str(source), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


def test_a_copy_that_cannot_read_a_file_fails_and_records_no_snapshot(tmp_path, monkeypatch):
    # GIVEN a source with one file the copy is not allowed to read
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    repo = f"file://{tmp_path / 'repo'}"
    src = tmp_path / "src"
    write_random(src, 1, files=2)
    (src / "secret").write_bytes(os.urandom(100_000))
    (src / "secret").chmod(0)
    steps("init", "--repo", repo)

    # WHEN it is copied without the privilege to read it
    run = _copy_unprivileged(repo, src)

    # THEN the copy fails with one line naming the file, and no snapshot claims the source
    assert run.returncode == 3, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "secret" in errors[0] and "no snapshot was recorded" in errors[0]
    assert json.loads(steps("snapshots", "--repo", repo, "--json").stdout) == []

    # ... and on request the snapshot is recorded, marked incomplete
    run = _copy_unprivileged(repo, src, "--allow-errors")
    assert run.returncode == 0, run.stderr
    [snap] = json.loads(steps("snapshots", "--repo", repo, "--json").stdout)
    assert snap.get("incomplete") is True or snap.get("summary", {}).get("errors") == 1


def test_a_snapshot_of_a_backup_never_committed_is_restored_only_on_request(tmp_path, monkeypatch):
    # GIVEN a copy that belongs to a backup run whose record was never committed
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    repo = f"file://{tmp_path / 'repo'}"
    write_random(tmp_path / "src", 1, files=2)
    steps("init", "--repo", repo)
    snap = copy_json(repo, tmp_path / "src", "--backup-id", "b-x")["id"]

    # WHEN it is restored by its ID
    refused = steps(
        "restore", "--repo", repo, "--snapshot", snap, "--target", str(tmp_path / "out"), check=False
    )

    # THEN the restore is refused with one line and writes nothing; on request it restores identically
    assert refused.returncode == 2 and "never committed" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
    steps(
        "restore",
        "--repo",
        repo,
        "--snapshot",
        snap,
        "--target",
        str(tmp_path / "out"),
        "--allow-uncommitted",
    )
    assert describe_tree(tmp_path / "out") == describe_tree(tmp_path / "src")
