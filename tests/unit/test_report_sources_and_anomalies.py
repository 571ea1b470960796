"""The report of a repository holding backups of sources (etcd, registry, bucket) committed by copy, verify
and finalize, one of them flagged as an anomaly by finalize: each source is an app with its kind, sizes,
dedup, duration and RPO against its example policy's schedule, consistency "n/a (source)", anomalies in
a column and in the backup's detail, and the restore commands of its kind."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fixtures.source_backups import SOURCE_APPS
from workflows.report import collect, render_html
from workflows.report.model import restore_commands

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [str(ROOT / "examples" / "sources" / f"{kind}.yaml") for kind in ("etcd", "registry", "bucket")]


class Cells(HTMLParser):
    """The text of each cell of each table row, by the ``data-app`` of the section and the table's class
    (the summary table's rows under the app ``""``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], list[list[str]]] = {}
        self.app = ""
        self.table = ""
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "data-app" in a:
            self.app = a["data-app"] or ""
        elif tag == "table":
            self.table = a.get("class") or ""
        elif tag == "tr":
            self.row = []
        elif tag == "td":
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self.row is not None and self.cell is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row:
            self.rows.setdefault((self.app, self.table), []).append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _objects(directory: Path, files: int, lines: int = 30) -> Path:
    directory.mkdir()
    for i in range(files):
        (directory / f"object-{i:03d}").write_text(f"{directory.name} object {i}\n" * lines)
    return directory


@pytest.mark.slow  # (eleven backups through copy, verify and finalize: about 4 s)
def test_sources_appear_with_their_kind_sizes_rpo_restore_commands_and_anomalies(source_repo, tmp_path):
    # GIVEN a bucket backed up twice, a registry once, and etcd: a history, then a backup after three
    # quarters of its files were deleted, which finalize flagged (and asked to lock the last good one)
    bucket = _objects(tmp_path / "uploads", 6, lines=4000)
    source_repo.backup("bucket", "bucket-1", bucket)
    (bucket / "object-000").write_text("changed\n")
    newest_bucket = source_repo.backup("bucket", "bucket-2", bucket)
    registry = source_repo.backup("registry", "registry-1", _objects(tmp_path / "images", 3))
    etcd = source_repo.mass_deletion("etcd", tmp_path / "etcd", "etcd", 40, "--lock-last-good", "1d")
    assert etcd[-1]["anomaly"]["flagged"] is True

    # WHEN the report is collected with the example source policies (their schedules) and rendered
    report = collect(source_repo.url, policies=POLICIES)
    html = render_html(report)

    # THEN every source is an app of its kind, under its policy's identity
    apps = {a.name: a for a in report.apps}
    assert {name: a.source for name, a in apps.items()} == {
        SOURCE_APPS[kind]["name"]: kind for kind in ("etcd", "registry", "bucket")
    }
    uploads, harbor, cluster_etcd = apps["shop-uploads"], apps["harbor-shop"], apps["cluster-etcd"]
    assert (uploads.cluster, uploads.namespace, uploads.policies) == ("prod-eu", "shop", ["shop-uploads"])

    # AND sizes, dedup, duration and RPO are those of app backups: from the source's snapshot records
    last = uploads.last_backup
    assert last is not None and last.committed and last.source == "bucket"
    summary = newest_bucket["source"]["summary"]
    assert last.bytes_total == summary["bytes_total"] == sum(f.stat().st_size for f in bucket.iterdir())
    assert [v["snapshot"] for v in last.volumes] == [newest_bucket["source"]["snapshot"]]
    assert last.dedup_ratio is not None and last.dedup_ratio > 3  # (the second backup stored one file anew)
    assert uploads.totals["backups"] == 2 and uploads.totals["dedup_ratio"] > 1
    assert last.duration_s is not None and last.duration_s >= 0
    assert [s.name for s in last.steps] == ["bucket-backup", "verify", "finalize"]
    assert uploads.rpo.schedule == "0 * * * *" and uploads.rpo.target_s == 3600 + 600
    assert cluster_etcd.rpo.target_s == 6 * 3600 + 600 and cluster_etcd.rpo.current_s is not None

    # AND no source is flagged for its consistency: it has no consistent point
    assert all(r.verdict is None for a in apps.values() for r in a.runs)
    assert not [p for a in apps.values() for p in a.problems if "consistent" in p]
    assert harbor.problems == [] and uploads.problems == []

    # AND the flagged etcd backup is flagged on its app, with the detector's reason
    assert cluster_etcd.totals["anomalies"] == 1
    (problem,) = cluster_etcd.problems
    assert problem.startswith("newest backup flagged as an anomaly: deletedShare: 75.0% of the files deleted")

    # AND the page shows it: source and consistency columns, the anomaly column and detail, changes
    cells = Cells()
    cells.feed(html)
    summary_rows = {row[0].split()[0]: row for row in cells.rows[("", "summary")]}
    assert summary_rows["cluster-etcd"][3:6] == ["etcd", "n/a (source)", "passed · 100%"]
    assert summary_rows["cluster-etcd"][6] == "1 flagged"
    assert summary_rows["harbor-shop"][6] == "normal · 0.0"
    etcd_runs = cells.rows[("cluster-etcd", "runs")]  # newest first
    assert [row[3] for row in etcd_runs] == ["n/a (source)"] * len(etcd)
    score = etcd[-1]["anomaly"]["score"]
    assert etcd_runs[0][5] == f"flagged · {score:.1f}"
    assert {row[5] for row in etcd_runs[1:]} <= {"normal · 0.0"}
    text = re.sub(r"<[^>]+>", "", html)
    assert f"Anomaly check: flagged · {score:.1f} against 6 earlier backup(s): deletedShare: 75.0%" in text
    changes = "new data 0 B (0.0% of the data); files 0 added, 0 changed, 30 deleted, 0 renamed of 10"
    assert f"Changes: {changes}" in text
    # (the last good backup could not be locked: this repository has no Object Lock)
    assert f"Object Lock: last good backup {etcd[-2]['backup_id']} not locked: the repository has no" in text

    # AND each source has the restore commands of its kind, for its newest snapshot
    etcd_sid = etcd[-1]["source"]["snapshot"]
    (argo, cli) = restore_commands(cluster_etcd, report.repository)
    assert argo[1].startswith(
        f"argo submit -n snapflow-etcd --from workflowtemplate/restore-cluster-etcd -p snapshot={etcd_sid}"
    )
    assert cli[1].startswith(f"python -m steps etcd-restore --repo {source_repo.url} --snapshot {etcd_sid}")
    registry_sid = registry["source"]["snapshot"]
    commands = [c for _, c in restore_commands(harbor, report.repository)]
    assert commands[0].startswith(
        f"argo submit -n snapflow-registry --from workflowtemplate/restore-harbor-shop -p snapshot={registry_sid}"
    )
    assert commands[1].startswith(
        f"python -m steps registry-restore --repo {source_repo.url} --snapshot {registry_sid}"
    )
    commands = [c for _, c in restore_commands(uploads, report.repository)]
    assert "workflowtemplate/restore-shop-uploads" in commands[0] and "-p dry-run=true" in commands[0]
    assert commands[1].startswith("python -m steps bucket-restore") and "--dry-run" in commands[1]
    for a in (cluster_etcd, harbor, uploads):
        for _what, command in restore_commands(a, report.repository):
            assert command in html.replace("&#39;", "'")


def test_a_source_run_that_was_never_committed_is_shown_as_such(source_repo, tmp_path, capsys):
    from steps.cli import main

    # GIVEN a committed bucket backup, then a newer copy of the bucket whose verify never ran
    bucket = _objects(tmp_path / "uploads", 2)
    source_repo.backup("bucket", "bucket-1", bucket)
    args = ["copy", "--repo", source_repo.url, "--source", str(bucket), "--backup-id", "bucket-2"]
    assert main([*args, "--tag", "kind=bucket", "--cluster", "prod-eu", "--policy", "shop-uploads"]) == 0
    capsys.readouterr()

    # WHEN the report is collected
    (app,) = collect(source_repo.url).apps

    # THEN the run is the bucket's too, not committed, and the app is flagged for it
    assert [(r.backup_id, r.source, r.committed) for r in app.runs] == [
        ("bucket-1", "bucket", True),
        ("bucket-2", "bucket", False),
    ]
    assert app.problems == ["latest run bucket-2 was not committed"]
