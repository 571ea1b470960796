"""The anomaly detector on its own (pure): minimum history, floors for a quiet app, robustness to an
outlier in the history, untrusted record values, and how a backup's snapshots are summed."""

from __future__ import annotations

from steps.repository import anomaly


def _changes(changed=2, deleted=0, added=1, total=200, new=20_000, size=2_000_000, comp=0.7):
    return {
        "newBytes": new,
        "newDataRatio": new / size,
        "newDataCompressibility": comp,
        "filesAdded": added,
        "filesChanged": changed,
        "filesDeleted": deleted,
        "filesRenamed": 0,
        "filesTotal": total,
    }


HISTORY = [_changes(changed=c) for c in (1, 2, 3, 2, 4, 2, 3, 1, 2, 2)]


def test_a_mass_change_is_flagged_with_its_reason_and_baseline():
    found = anomaly.detect(_changes(changed=60, new=600_000, comp=0.0), HISTORY)
    assert found["flagged"] and found["baseline"] == 10
    assert found["score"] >= anomaly.THRESHOLD
    names = {r.split(":")[0] for r in found["reasons"]}
    assert {"changedShare", "newDataRatio", "incompressibleRatio"} <= names


def test_an_ordinary_day_is_not_flagged():
    found = anomaly.detect(_changes(changed=4), HISTORY)
    assert not found["flagged"] and found["reasons"] == [] and found["score"] < anomaly.THRESHOLD


def test_nothing_is_flagged_before_the_minimum_history():
    few = HISTORY[: anomaly.MIN_HISTORY - 1]
    found = anomaly.detect(_changes(changed=150, deleted=40), few)
    assert found == {"flagged": False, "score": 0.0, "reasons": [], "baseline": len(few)}


def test_a_quiet_app_does_not_flag_on_a_few_files():
    # GIVEN an app that usually changes nothing
    quiet = [_changes(changed=0, added=0, new=0, total=20) for _ in range(10)]
    # WHEN 5 of its 20 files change (25 %, far above its usual 0 %)
    found = anomaly.detect(_changes(changed=5, added=0, new=0, total=20), quiet)
    # THEN it is not flagged: fewer than MIN_FILES files changed
    assert not found["flagged"]
    # BUT 12 of 40 is
    quiet40 = [_changes(changed=0, added=0, new=0, total=40) for _ in range(10)]
    assert anomaly.detect(_changes(changed=12, added=0, new=0, total=40), quiet40)["flagged"]


def test_one_outlier_in_the_history_does_not_move_the_baseline():
    # the first (full) copy of an app is in its history: everything was new then
    history = [_changes(changed=0, added=200, new=2_000_000, comp=0.6), *HISTORY]
    assert not anomaly.detect(_changes(changed=3), history)["flagged"]
    assert anomaly.detect(_changes(changed=0, deleted=100), history)["flagged"]


def test_untrusted_values_are_left_out_not_trusted():
    bad = [{"newDataRatio": "lots", "filesTotal": True, "filesChanged": None}] * 10
    found = anomaly.detect(_changes(changed=60), bad)
    assert found["flagged"] is False and found["baseline"] == 10
    assert anomaly.backup_changes([{"new_bytes": -5, "bytes_total": "x"}])["newBytes"] == 0


def test_a_backup_sums_its_snapshots_and_block_volumes_have_no_file_counts():
    files = {
        "bytes_total": 1000, "bytes_read": 100, "new_bytes": 100, "new_bytes_stored": 40,
        "files_total": 10, "files_added": 1, "files_changed": 2, "files_deleted": 3, "files_renamed": 1,
    }  # fmt: skip
    block = {"bytes_total": 3000, "bytes_read": 3000, "new_bytes": 300, "new_bytes_stored": 300}
    both = anomaly.backup_changes([files, block, None])
    assert both["newBytes"] == 400 and both["newDataRatio"] == 0.1
    assert both["newDataCompressibility"] == 0.15  # 1 - 340/400
    assert (both["filesTotal"], both["filesChanged"], both["filesDeleted"]) == (10, 2, 3)
    only_block = anomaly.backup_changes([block])
    assert only_block["filesTotal"] is None and only_block["newDataCompressibility"] == 0.0
    assert anomaly.backup_changes([None]) is None


def test_the_baseline_is_the_apps_own_unflagged_earlier_backups():
    app = {"cluster": "c", "namespace": "n", "name": "a"}
    records = [
        {"app": app, "time": f"2026-12-0{d}T00:00:00Z", "changes": {"day": d}, "anomaly": {"flagged": d == 3}}
        for d in range(1, 8)
    ]
    records.append({"app": {**app, "name": "other"}, "time": "2026-12-02T01:00:00Z", "changes": {"day": 0}})
    records.append({"app": app, "time": "2026-12-02T02:00:00Z"})  # an older record: no changes
    picked = anomaly.baseline(records, app, before="2026-12-06T00:00:00Z")
    assert [c["day"] for c in picked] == [1, 2, 4, 5]


def test_nan_or_huge_values_in_crafted_history_neither_crash_nor_silence_a_flag():
    # a writer with the key stores records whose numbers are NaN, infinite or beyond any float
    poisoned = [*HISTORY[:6]] + [dict(_changes(), newDataRatio=float("nan"), filesChanged=float("nan"))] * 4
    poisoned += [dict(_changes(), newBytes=10**400, filesTotal=10**400, newDataRatio=float("inf"))] * 2
    found = anomaly.detect(_changes(changed=150, new=1_500_000, comp=0.0), poisoned)
    assert found["flagged"] and found["score"] == found["score"]  # not NaN
    # ... and a snapshot's own telemetry cannot overflow the sums
    summed = anomaly.backup_changes([{"new_bytes": 10**400, "bytes_total": 1, "new_bytes_stored": 10**400}])
    assert summed["newBytes"] == 0 and summed["newDataRatio"] == 0.0
