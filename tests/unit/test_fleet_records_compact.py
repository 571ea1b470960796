"""The exporter's record cache is compact: keyed by the records' 32-byte IDs, with one object for the
values many records share (app, verdict, kind) and no backup ID, and folds into the same app states."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from steps.api import Repository, open_store
from workflows.fleet.model import app_states
from workflows.fleet.records import RecordCache, summarize

NOW = time.time()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_summaries_share_their_apps_and_verdicts_and_fold_as_full_ones():
    repo = Repository.init(
        open_store(f"mem://compact-{time.monotonic_ns()}"), "pw", kdf_params={"n": 1024, "r": 8, "p": 1}
    )
    for i in range(4):
        t = NOW - (4 - i) * 86400
        app = {"cluster": "c1", "namespace": "ns", "name": "db", "policy": "db"}
        repo.save_record(
            "runs", {"name": "verify", "backup_id": f"b-{i}", "time": iso(t + 50), "ok": True}, key=f"b-{i}"
        )
        repo.save_record(
            "backups",
            {
                "backup_id": f"b-{i}",
                "time": iso(t + 60),
                "app": app,
                "volumes": [{"name": "data", "files": 3 + i, "bytes": 4096 + i}],
                "consistency": {
                    "verdict": "app-consistent",
                    "timeline": {"volumes": [{"name": "data", "cut": iso(t)}]},
                },
                "verify": {"ok": True},
            },
            key=f"b-{i}",
        )
    cache = RecordCache()
    cache.refresh(repo)
    assert len(cache.entries) == 8 and all(len(k) == 32 and isinstance(k, bytes) for k in cache.entries)
    backups = [s for s in cache.summaries() if s.kind == "backups"]
    assert (
        len(backups) == 4
        and len({id(s.app) for s in backups}) == 1
        and len({id(s.verdict) for s in backups}) == 1
    )
    assert {s.backup_id for s in cache.summaries()} == {None}

    # THEN the app states are those of the full summaries
    full = []
    for kind in ("backups", "runs"):
        for info in repo.store.list(f"{kind}/"):
            full.append(summarize(kind, info.key.split("/")[1], repo.read_record(kind, info.key).data))
    assert app_states(cache.summaries()) == app_states(full)
    state = app_states(cache.summaries())[("c1", "ns", "db")]
    assert state.backups == 4 and state.files == 6 and state.size_bytes == 4099 and state.verify_ok is True


def test_a_packed_summary_comes_back_as_it_was_without_its_backup_id():
    from dataclasses import replace

    from workflows.fleet.records import Summary, pack, unpack

    group = "ab" * 32
    full = Summary(
        "backups",
        group,
        "b-1",
        ("c", "ns", "db"),
        1.5,
        1.25,
        False,
        0.04,
        2**40,
        12,
        "etcd",
        0.97,
        True,
        ("82% of the files changed",),
        "app-consistent",
        1.0,
    )
    sparse = Summary("restore-test", "0f" * 16, "b-1", None, 3.0, None, True)
    for s in (full, sparse):
        row = pack(s)
        assert isinstance(row, bytes) and len(row) < 120
        assert unpack(row) == replace(s, backup_id=None)
    # what does not fit the layout is kept as it is
    for odd in (
        replace(sparse, group="not-hex"),
        replace(sparse, group="AB" * 16),
        replace(full, size_bytes=2**70),
    ):
        assert pack(odd) is odd and unpack(odd) is odd
