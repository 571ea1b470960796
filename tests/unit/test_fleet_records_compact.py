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
