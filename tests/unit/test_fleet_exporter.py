"""The metrics exporter: values from committed records, incremental refreshes, unreachable repositories,
and a real scrape over HTTP whose metric names cover every alert's."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.source_backups import SOURCE_APPS, SourceRepo
from workflows.fleet import dashboard, rules
from workflows.fleet.exporter import METRICS, Exporter, serve
from workflows.fleet.model import Targets

NOW = time.time()
APP = {"cluster": "east", "namespace": "shop", "name": "orders-db", "policy": "orders-db"}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def cut_timeline(t: float) -> dict:
    return {
        "volumes": [{"name": "data", "cut": iso(t)}],
        "targets": [{"quiesced": iso(t - 0.1), "released": iso(t + 0.1)}],
    }


def write_run(repo, backup_id: str, t: float, *, commit: bool, verify_ok: bool = True, freeze_ms: float = 40):
    """The records of one backup run: consistent point, verify and (when ``commit``) the backup record."""
    cp = {"verdict": "app-consistent", "freeze_window_ms": freeze_ms, "timeline": cut_timeline(t), "app": APP}
    repo.save_record(
        "runs", {"name": "consistent-point", "backup_id": backup_id, "time": iso(t + 1), **cp}, key=backup_id
    )
    repo.save_record(
        "runs",
        {"name": "verify", "backup_id": backup_id, "time": iso(t + 50), "ok": verify_ok},
        key=backup_id,
    )
    if commit:
        record = {
            "version": 1,
            "backup_id": backup_id,
            "time": iso(t + 60),
            "workflow_status": "Succeeded",
            "app": APP,
            "volumes": [{"name": "data", "snapshot": "s-" + backup_id, "files": 12, "bytes": 4096}],
            "consistency": {k: cp[k] for k in ("verdict", "freeze_window_ms", "timeline")},
            "verify": {"ok": True, "time": iso(t + 50)},
        }
        repo.save_record("backups", record, key=backup_id)


def scrape_text(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def collected(exporter: Exporter) -> dict[tuple[str, str | None], float]:
    """{(metric, app or None): value} of what a scrape would serve."""
    out = {}
    for family in exporter.collect():
        for s in family.samples:
            out[(s.name, s.labels.get("app"))] = s.value
    return out


def test_metrics_say_what_the_committed_records_say(mem_repo):
    # GIVEN two committed backups, then a newer run that never committed and whose verify failed
    write_run(mem_repo, "b-1", NOW - 7200, commit=True)
    write_run(mem_repo, "b-2", NOW - 3600, commit=True, freeze_ms=250)
    write_run(mem_repo, "b-3", NOW - 600, commit=False, verify_ok=False, freeze_ms=90)
    mem_repo.save_record(
        "runs",
        {"name": "restore-test", "backup_id": "b-2", "time": iso(NOW - 300), "ok": True, "app": APP},
        key="b-2",
    )
    exporter = Exporter(["mem://repo"], opener=lambda url: mem_repo, default_targets=Targets(rpo_s=5000))

    # WHEN it refreshes
    exporter.refresh()
    m = collected(exporter)

    # THEN the newest committed backup is b-2's cut, and the uncommitted run and failed verify show
    assert m[("snapflow_backup_last_committed_timestamp_seconds", "orders-db")] == pytest.approx(
        NOW - 3600, abs=0.01
    )
    assert m[("snapflow_backup_committed", "orders-db")] == 2
    assert m[("snapflow_backup_rpo_target_seconds", "orders-db")] == 5000
    assert m[("snapflow_backup_size_bytes", "orders-db")] == 4096
    assert m[("snapflow_backup_uncommitted_runs", "orders-db")] == 1
    assert m[("snapflow_backup_last_uncommitted_run_timestamp_seconds", "orders-db")] == pytest.approx(
        NOW - 599, abs=0.01
    )
    assert m[("snapflow_freeze_window_seconds", "orders-db")] == pytest.approx(0.09)
    assert m[("snapflow_verify_last_ok", "orders-db")] == 0
    assert m[("snapflow_restore_test_last_ok", "orders-db")] == 1
    assert m[("snapflow_restore_test_last_success_timestamp_seconds", "orders-db")] == pytest.approx(
        NOW - 300, abs=0.01
    )
    assert m[("snapflow_repository_up", None)] == 1
    assert m[("snapflow_repository_records", None)] == 9  # 3 runs of 2 or 3 records, a restore test


def test_a_refresh_reads_only_new_records_and_forgets_pruned_ones(mem_repo):
    # GIVEN an exporter that has read three runs
    for i in range(3):
        write_run(mem_repo, f"b-{i}", NOW - 3600 * (3 - i), commit=True)
    exporter = Exporter(["mem://repo"], opener=lambda url: mem_repo)
    exporter.refresh()
    cache = exporter.states[0].cache
    assert len(cache.entries) == 9
    reads = []
    mem_repo.store.hook = lambda op, key: reads.append(key) if op == "get" else None
    # WHEN nothing changed, THEN a refresh opens no record
    exporter.refresh()
    assert reads == []
    # WHEN one more run is committed, THEN only its three records are opened
    write_run(mem_repo, "b-new", NOW - 60, commit=True)
    exporter.refresh()
    assert len(reads) == 3
    assert collected(exporter)[("snapflow_backup_committed", "orders-db")] == 4
    # WHEN a backup record is deleted (pruned), THEN it is forgotten
    from workflows.fleet.records import record_key

    gone = next(i.key for i in mem_repo.store.list("backups/"))
    assert record_key(gone) in cache.entries
    mem_repo.store.delete(gone)
    exporter.refresh()
    assert record_key(gone) not in cache.entries and len(cache.entries) == 11
    assert collected(exporter)[("snapflow_backup_committed", "orders-db")] == 3


def test_an_unreachable_repository_is_a_zero_gauge_and_an_error_count_not_a_crash(mem_repo):
    # GIVEN one good repository and one that cannot be opened
    write_run(mem_repo, "b-1", NOW - 60, commit=True)

    def opener(url):
        if url == "s3://down/repo":
            raise ConnectionError("connection refused")
        return mem_repo

    exporter = Exporter(["s3://down/repo", "mem://repo"], opener=opener)
    # WHEN it refreshes twice
    exporter.refresh()
    exporter.refresh()
    values = {}
    for family in exporter.collect():
        for s in family.samples:
            values[(s.name, s.labels.get("repository"), s.labels.get("app"))] = s.value
    # THEN the bad one is down with two errors, the good one is up with its app
    assert values[("snapflow_repository_up", "s3://down/repo", None)] == 0
    assert values[("snapflow_repository_errors_total", "s3://down/repo", None)] == 2
    assert values[("snapflow_repository_up", "mem://repo", None)] == 1
    assert values[("snapflow_backup_committed", "mem://repo", "orders-db")] == 1


def test_a_damaged_record_is_counted_not_fatal(mem_repo):
    write_run(mem_repo, "b-1", NOW - 60, commit=True)
    key = next(i.key for i in mem_repo.store.list("runs/"))
    mem_repo.store.put(key, b"not a record")
    exporter = Exporter(["mem://repo"], opener=lambda url: mem_repo)
    exporter.refresh()
    m = collected(exporter)
    assert m[("snapflow_repository_damaged_records", None)] == 1
    assert m[("snapflow_repository_up", None)] == 1


def test_a_running_exporter_serves_every_metric_the_alerts_use(s3_repo, tmp_path):
    # GIVEN an S3 repository with a committed backup, an uncommitted run and a restore test
    from steps.api import Repository, open_repository, open_store

    Repository.init(
        open_store(s3_repo), "correct horse battery staple", kdf_params={"n": 1024, "r": 8, "p": 1}
    )
    repo = open_repository(s3_repo)
    write_run(repo, "b-1", NOW - 3600, commit=True)
    write_run(repo, "b-2", NOW - 60, commit=False, verify_ok=False)
    data = tmp_path / "etcd"
    data.mkdir()
    (data / "snapshot.db").write_bytes(b"etcd data\n" * 100)
    SourceRepo(s3_repo, tmp_path).backup("etcd", "e-1", data)
    repo.save_record(
        "runs",
        {"name": "restore-test", "backup_id": "b-1", "time": iso(NOW - 30), "ok": True, "app": APP},
        key="b-1",
    )

    # WHEN the exporter serves on an OS-chosen port and refreshes in its background thread
    exporter = Exporter(
        [s3_repo, "s3://unreachable-bucket/repo"],
        interval_s=0.2,
        default_targets=Targets(restore_test_max_age_s=8 * 86400),
    )
    server, _thread = serve(exporter, "127.0.0.1", 0)
    exporter.start()
    try:
        deadline = time.monotonic() + 30
        while exporter.refreshes < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            served = scrape_text(answer.read().decode())
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()

    # THEN every metric of every alert and every dashboard panel is served, and so is every documented one
    assert rules.metrics_used() <= set(served), rules.metrics_used() - set(served)
    board = dashboard.metrics_used(dashboard.build())
    assert board <= set(served), board - set(served)
    assert set(METRICS) <= set(served), set(METRICS) - set(served)
    ups = {s.labels["repository"]: s.value for s in served["snapflow_repository_up"]}
    assert ups == {s3_repo: 1.0, "s3://unreachable-bucket/repo": 0.0}
    committed = served["snapflow_backup_last_committed_timestamp_seconds"]
    etcd = SOURCE_APPS["etcd"]
    assert sorted((s.labels for s in committed), key=lambda labels: labels["app"]) == [
        {"cluster": etcd["cluster"], "namespace": etcd["namespace"], "app": etcd["name"], "source": "etcd",
         "repository": s3_repo},
        {"cluster": "east", "namespace": "shop", "app": "orders-db", "source": "app", "repository": s3_repo},
    ]  # fmt: skip
    assert [(s.labels["app"], s.value) for s in served["snapflow_backup_anomaly_flagged"]] == [
        ("cluster-etcd", 0.0)  # (the first backup of a source: no history, not flagged)
    ]


def test_targets_come_from_the_policy_schedule_freeze_deadline_and_restore_test():
    from workflows.fleet.model import targets_from_policies

    # GIVEN the example policy: daily backups, a monthly check with a restore test
    path = "examples/postgresql-statefulset.yaml"
    targets = targets_from_policies([path], Targets(rpo_s=1.0))
    t = targets[("prod-eu", "shop", "orders-db")]
    # THEN its RPO is a day plus the start deadline, its restore test may be a month and a day old
    assert 86400 + 600 <= t.rpo_s <= 90000 + 600
    assert 29 * 86400 <= t.restore_test_max_age_s <= 33 * 86400  # (the longest month, a DST hour)
    assert t.freeze_budget_s == 30.0 and t.source == path


def test_apps_without_a_policy_expect_no_restore_test_unless_told(mem_repo):
    write_run(mem_repo, "b-1", NOW - 60, commit=True)
    quiet = Exporter(["mem://repo"], opener=lambda url: mem_repo)
    quiet.refresh()
    assert ("snapflow_restore_test_max_age_seconds", "orders-db") not in collected(quiet)
    told = Exporter(
        ["mem://repo"], opener=lambda url: mem_repo, default_targets=Targets(restore_test_max_age_s=600)
    )
    told.refresh()
    m = collected(told)
    assert m[("snapflow_restore_test_max_age_seconds", "orders-db")] == 600
    assert m[("snapflow_restore_test_last_success_timestamp_seconds", "orders-db")] == 0  # never tested


def test_an_object_store_that_stops_answering_is_down_until_it_answers_again(private_s3_server):
    from steps.api import Repository, open_repository, open_store

    # GIVEN an exporter that has read a repository on a server of the test's own
    url = "s3://t-stops/repo"
    Repository.init(open_store(url), "correct horse battery staple", kdf_params={"n": 1024, "r": 8, "p": 1})
    write_run(open_repository(url), "b-1", NOW - 60, commit=True)
    exporter = Exporter([url])
    exporter.refresh()
    assert collected(exporter)[("snapflow_repository_up", None)] == 1

    # WHEN the server stops, THEN a refresh marks it down, counts the error, and keeps the app's values
    private_s3_server.stop()
    t0 = time.monotonic()
    exporter.refresh()
    m = collected(exporter)
    assert m[("snapflow_repository_up", None)] == 0
    assert m[("snapflow_repository_errors_total", None)] == 1
    assert m[("snapflow_backup_committed", "orders-db")] == 1
    assert time.monotonic() - t0 < 60  # (short client timeouts: a refresh does not hang)

    # WHEN it answers again, THEN the next refresh reads it
    private_s3_server.start()
    exporter.refresh()
    assert collected(exporter)[("snapflow_repository_up", None)] == 1


def _data(tmp_path, name: str, files: int) -> object:
    d = tmp_path / name
    d.mkdir()
    for i in range(files):
        (d / f"object-{i:03d}").write_bytes(f"{name} object {i}\n".encode() * 50)
    return d


@pytest.mark.slow  # (ten backups through copy, verify and finalize: about 2 s)
def test_source_backups_are_apps_labelled_with_their_source_kind(source_repo, tmp_path):
    # GIVEN committed backups of a bucket, of a registry (twice) and of etcd (a history, then one after a
    # mass deletion, which finalize flagged), each through copy, verify and finalize
    source_repo.backup("bucket", "bucket-1", _data(tmp_path, "bucket", 3))
    source_repo.backup("registry", "reg-1", _data(tmp_path, "registry", 2))
    record = source_repo.backup("registry", "reg-2", _data(tmp_path, "registry-2", 4))
    etcd = source_repo.mass_deletion("etcd", tmp_path / "etcd", "etcd")
    assert etcd[-1]["anomaly"]["flagged"] is True and not etcd[-2]["anomaly"]["flagged"]
    exporter = Exporter([source_repo.url], opener=lambda url: source_repo.open())

    # WHEN it refreshes
    exporter.refresh()
    served = {}
    for family in exporter.collect():
        for s in family.samples:
            served[(s.name, s.labels.get("app"))] = (s.value, s.labels)

    # THEN each source is an app under its policy's namespace and name, labelled with its kind and the
    # repository, with its committed backups, its newest snapshot's size and files, and its record's time
    for kind, count in (("bucket", 1), ("registry", 2), ("etcd", len(etcd))):
        value, labels = served[("snapflow_backup_committed", SOURCE_APPS[kind]["name"])]
        assert value == count
        assert labels == {
            "cluster": "prod-eu",
            "namespace": SOURCE_APPS[kind]["namespace"],
            "app": SOURCE_APPS[kind]["name"],
            "source": kind,
            "repository": source_repo.url,
        }
    summary = record["source"]["summary"]
    assert served[("snapflow_backup_size_bytes", "harbor-shop")][0] == summary["bytes_total"] == 4 * 1000
    assert served[("snapflow_backup_files", "harbor-shop")][0] == 4
    written = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
    assert served[("snapflow_backup_last_committed_timestamp_seconds", "harbor-shop")][0] == pytest.approx(
        written
    )
    # AND no source has a freeze window (nothing is quiesced)
    assert not [k for k in served if k[0] == "snapflow_freeze_window_seconds"]
    # AND the anomaly of each newest backup is served: etcd's flagged with its score, the others not
    assert served[("snapflow_backup_anomaly_flagged", "cluster-etcd")][0] == 1
    score = served[("snapflow_backup_anomaly_score", "cluster-etcd")][0]
    assert score == etcd[-1]["anomaly"]["score"] and score >= 6
    assert served[("snapflow_backup_anomaly_flagged", "harbor-shop")][0] == 0
    assert served[("snapflow_backup_anomaly_flagged", "shop-uploads")][0] == 0


@pytest.mark.slow  # (eight backups through copy, verify and finalize: about 1.5 s)
def test_record_summaries_carry_verdict_own_verify_and_anomaly_reasons(mem_repo, source_repo, tmp_path):
    from workflows.fleet.records import RecordCache

    # GIVEN an app's committed run and a source's history ending in a mass deletion
    write_run(mem_repo, "b-1", NOW - 60, commit=True)
    etcd = source_repo.mass_deletion("etcd", tmp_path / "etcd", "etcd", files=20)
    assert etcd[-1]["anomaly"]["flagged"]

    # WHEN their records are summarized
    app = RecordCache()
    app.refresh(mem_repo)
    source = RecordCache()
    source.refresh(source_repo.open())

    # THEN an app's backup and consistent point carry the verdict, the backup its own verify's result
    (backup,) = [s for s in app.summaries() if s.kind == "backups"]
    assert (backup.verdict, backup.ok, backup.source) == ("app-consistent", True, "app")
    (cp,) = [s for s in app.summaries() if s.kind == "consistent-point"]
    assert cp.verdict == "app-consistent"
    # AND a source's backup has no verdict, and its flagged one says why
    newest = max((s for s in source.summaries() if s.kind == "backups"), key=lambda s: s.time or 0)
    assert (newest.verdict, newest.ok, newest.source, newest.anomaly_flagged) == (None, True, "etcd", True)
    assert newest.anomaly_reasons == tuple(etcd[-1]["anomaly"]["reasons"])


def test_another_reader_keeps_its_own_summaries_through_the_same_cache(mem_repo):
    from workflows.fleet.records import RecordCache

    write_run(mem_repo, "b-1", NOW - 60, commit=True)
    seen = []

    def describe(kind, group, data):
        seen.append(kind)
        return (kind, data.get("backup_id"))

    cache = RecordCache(describe=describe)
    cache.refresh(mem_repo)
    cache.refresh(mem_repo)  # (nothing new: nothing described again)
    assert sorted(seen) == ["backups", "runs", "runs"]
    assert sorted(cache.entries.values()) == [("backups", "b-1"), ("runs", "b-1"), ("runs", "b-1")]


def test_source_policies_give_their_apps_an_rpo_from_their_schedule():
    from workflows.fleet.model import targets_from_policies

    # GIVEN the example source policies: etcd every 6 hours, the bucket hourly, the registry daily
    paths = [f"examples/sources/{kind}.yaml" for kind in ("etcd", "bucket", "registry")]
    targets = targets_from_policies(paths, Targets(rpo_s=1.0))
    # THEN each source's app (the identity its backup records carry) gets its schedule's RPO
    rpo = {key: t.rpo_s for key, t in targets.items()}
    apps = {kind: (a["cluster"], a["namespace"], a["name"]) for kind, a in SOURCE_APPS.items()}
    assert rpo == {apps["etcd"]: 6 * 3600 + 600, apps["bucket"]: 3600 + 600, apps["registry"]: 86400 + 600}
