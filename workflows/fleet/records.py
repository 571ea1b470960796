"""Reading a repository's records for the exporter, incrementally: records only, never packs.

:class:`RecordCache` keeps, per object name (``backups/GROUP/ID``, ``runs/GROUP/ID``; keyed by the
name's ID as 32 bytes, :func:`record_key`), a small summary of what the record says (:class:`Summary`).
A record is named by the hash of its stored bytes and never rewritten, so a name read once needs no
second reading: a refresh lists ``backups/`` and ``runs/`` and opens only the names it has not seen, and
forgets the names that are gone (pruned). Summaries live in memory only (records are encrypted in the
repository; a decrypted copy on disk would leak them). A fleet holds hundreds of thousands of records,
so the exporter's summaries are compact (:func:`compact`): the values many records share (an app, a
kind, a verdict, anomaly reasons) are one object each, and the backup ID, which no metric carries, is
not kept.

Called by :mod:`workflows.fleet.exporter`; reads through :mod:`steps.api`.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from steps.api import Repository, parse_time

KINDS = ("backups", "runs")
RUN_NAMES = ("consistent-point", "verify", "restore-test")  # the run records the exporter uses
# the run records of the source steps (etcd-snapshot, registry-backup, bucket-backup), named by the kind;
# they say when the source's snapshot was taken and, since they carry ``app``, whose run it is
SOURCE_RUN_NAMES = ("etcd", "registry", "bucket")
READ_PARALLEL = 8
READ_BATCH = 512
SOURCE_KINDS = ("etcd", "registry", "bucket")  # a backup record's ``source.kind``; else it is an app's


def _time(value: Any) -> float | None:
    t = parse_time(value)
    return t.timestamp() if t else None


def _first_cut(consistency: Any) -> float | None:
    """The point in time of a backup: its first volume cut (as the report has it)."""
    timeline = consistency.get("timeline") if isinstance(consistency, dict) else None
    volumes = timeline.get("volumes") if isinstance(timeline, dict) else None
    cuts = [_time(v.get("cut") or v.get("copy_started")) for v in volumes or () if isinstance(v, dict)]
    cuts = [c for c in cuts if c is not None]
    return min(cuts) if cuts else None


def _app(data: dict) -> tuple[str, str, str] | None:
    app = data.get("app")
    if not isinstance(app, dict):
        return None
    name = app.get("name") or app.get("app")
    if not isinstance(name, str) or not name:
        return None
    return (str(app.get("cluster") or "default"), str(app.get("namespace") or ""), name)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _source_kind(data: dict) -> str:
    """``app``, or the kind of source a backup record protects (``etcd``, ``registry``, ``bucket``)."""
    source = data.get("source")
    kind = source.get("kind") if isinstance(source, dict) else None
    return kind if isinstance(kind, str) and kind in SOURCE_KINDS else "app"


def _verdict(data: dict) -> str | None:
    verdict = data.get("verdict")
    return verdict if isinstance(verdict, str) else None


def _freeze_s(data: dict) -> float | None:
    value = data.get("freeze_window_ms")
    return float(value) / 1000 if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Summary:
    """What the exporter needs of one record (``kind`` is ``backups``, a run name, or ``damaged``)."""

    kind: str
    group: str | None
    backup_id: str | None = None
    app: tuple[str, str, str] | None = None  # cluster, namespace, name
    time: float | None = None  # when the record says it was written
    point_in_time: float | None = None  # a backup's first cut
    ok: bool | None = None  # verify / restore test passed
    freeze_s: float | None = None
    size_bytes: int | None = None
    files: int | None = None
    source: str = "app"  # a backup record's source: app, etcd, registry, bucket
    anomaly_score: float | None = None  # a backup record's ``anomaly`` (records before it have none)
    anomaly_flagged: bool | None = None
    anomaly_reasons: tuple[str, ...] = ()
    # a backup record's consistency verdict, or a consistent-point record's (None for a source's backup:
    # it has no consistent point; ``source`` says so)
    verdict: str | None = None
    # a source's backup record: its snapshot's time (``source.time``; None in records without it)
    source_time: float | None = None


def summarize(kind: str, group: str | None, data: dict) -> Summary | None:
    """The summary of a record that opened (None: a run record the exporter has no use for)."""
    bid = data.get("backup_id") if isinstance(data.get("backup_id"), str) else None
    if kind == "backups":
        consistency = data.get("consistency") if isinstance(data.get("consistency"), dict) else {}
        volumes = [v for v in data.get("volumes") or () if isinstance(v, dict)]
        sizes = [v.get("bytes") for v in volumes if isinstance(v.get("bytes"), int)]
        files = [v.get("files") for v in volumes if isinstance(v.get("files"), int)]
        source = _source_kind(data)
        source_time = None
        if source != "app":  # a source's backup: its one snapshot's summary
            source_time = _time(data["source"].get("time"))
            summary = data["source"].get("summary")
            summary = summary if isinstance(summary, dict) else {}
            sizes = [summary["bytes_total"]] if isinstance(summary.get("bytes_total"), int) else []
            files = [summary["files"]] if isinstance(summary.get("files"), int) else []
        anomaly = data.get("anomaly") if isinstance(data.get("anomaly"), dict) else {}
        flagged = anomaly.get("flagged")
        reasons = anomaly.get("reasons") if isinstance(anomaly.get("reasons"), list) else []
        verify = data.get("verify") if isinstance(data.get("verify"), dict) else {}
        written = _time(data.get("time"))
        return Summary(
            "backups",
            group,
            bid,
            _app(data),
            written,
            # (a source's backup has no consistent point: its snapshot's time is its point in time,
            # else the run record of its source step says it (:func:`~workflows.fleet.model.app_states`),
            # else its record's time stands for it)
            _first_cut(consistency) or source_time or written,
            # (the record's own verify: the one that let it commit)
            ok=verify.get("ok") if isinstance(verify.get("ok"), bool) else None,
            freeze_s=_freeze_s(consistency),
            size_bytes=sum(sizes) if sizes else None,
            files=sum(files) if files else None,
            source=source,
            anomaly_score=_number(anomaly.get("score")),
            anomaly_flagged=flagged if isinstance(flagged, bool) else None,
            anomaly_reasons=tuple(str(r) for r in reasons),
            verdict=_verdict(consistency),
            source_time=source_time,
        )
    name = data.get("name")
    if name in SOURCE_RUN_NAMES:  # a source step's run record: when its snapshot was taken
        taken = _time(data.get("time"))
        return Summary(str(name), group, bid, _app(data), taken, taken, source=str(name))
    if name not in RUN_NAMES:
        return None
    ok = data.get("ok") if isinstance(data.get("ok"), bool) else None
    return Summary(
        str(name),
        group,
        bid,
        _app(data),
        # (a consistent-point record says when it ``finished``; the others carry a ``time``)
        _time(data.get("time")) or _time(data.get("finished")) or _first_cut(data),
        _first_cut(data),
        ok,
        _freeze_s(data) if name == "consistent-point" else None,
        verdict=_verdict(data) if name == "consistent-point" else None,
    )


_SHARED: dict[Any, Any] = {}
_SHARED_MAX = 200_000  # (values beyond these are kept as they come)


def _share(value: Any) -> Any:
    """One object for equal values that many records carry (apps, kinds, verdicts)."""
    if value is None or len(_SHARED) >= _SHARED_MAX:
        return value
    return _SHARED.setdefault((type(value), value), value)


def compact(summary: Summary | None) -> Summary | None:
    """``summary`` as the exporter keeps it: shared values, no backup ID (no metric carries it)."""
    if summary is None:
        return None
    return Summary(
        _share(summary.kind),
        summary.group,
        None,
        _share(summary.app and tuple(_share(part) for part in summary.app)),
        summary.time,
        summary.point_in_time,
        summary.ok,
        summary.freeze_s,
        summary.size_bytes,
        summary.files,
        _share(summary.source),
        summary.anomaly_score,
        summary.anomaly_flagged,
        _share(summary.anomaly_reasons),
        _share(summary.verdict),
        summary.source_time,
    )


def summarize_compact(kind: str, group: str | None, data: dict) -> Summary | None:
    """:func:`summarize`, kept compact (:func:`compact`): the exporter's summaries."""
    return compact(summarize(kind, group, data))


# A summary as the exporter's cache holds it: one bytes object of fixed layout (:func:`pack`), not a
# Summary and its dozen field objects. Values many records share (kind, app, source, anomaly reasons,
# verdict) are indexes into _VALUES; the group (a hex MAC) is its bytes; numbers are doubles and int64s with a
# mask of those present. A summary that does not fit (a group that is no hex ID, a huge number) is kept
# as it is.
_ROW = struct.Struct("<HB5I5d2q32s")
_FLOATS = ("time", "point_in_time", "freeze_s", "anomaly_score", "source_time")
_INTS = ("size_bytes", "files")
_VALUES: list[Any] = [None]
_VALUE_INDEX: dict[tuple[type, Any], int] = {(type(None), None): 0}
_INT64 = 2**63


_VALUES_LOCK = threading.Lock()


def _value_index(value: Any) -> int:
    key = (type(value), value)
    idx = _VALUE_INDEX.get(key)
    if idx is None:
        with _VALUES_LOCK:  # (caches may be refreshed in several threads)
            idx = _VALUE_INDEX.get(key)
            if idx is None:
                _VALUES.append(value)
                idx = _VALUE_INDEX[key] = len(_VALUES) - 1
    return idx


def _tri(value: bool | None) -> int:
    return 0 if value is None else 2 if value else 1


def _untri(bits: int) -> bool | None:
    return None if bits == 0 else bits == 2


def pack(summary: Summary) -> bytes | Summary:
    """``summary`` as one bytes object (:func:`unpack` gives it back, without its backup ID); the
    summary itself when it does not fit the layout."""
    group = summary.group
    if group is None or len(group) > 64 or len(_VALUES) > 1_000_000:
        return summary
    try:
        raw_group = bytes.fromhex(group)
    except ValueError:
        return summary
    if raw_group.hex() != group:  # (upper case: would not come back as it was)
        return summary
    mask = 0
    floats = []
    for i, name in enumerate(_FLOATS):
        value = getattr(summary, name)
        if value is not None:
            mask |= 1 << i
        floats.append(0.0 if value is None else value)
    ints = []
    for i, name in enumerate(_INTS):
        value = getattr(summary, name)
        if value is not None:
            if not -_INT64 <= value < _INT64:
                return summary
            mask |= 1 << (5 + i)
        ints.append(0 if value is None else value)
    mask |= _tri(summary.ok) << 7 | _tri(summary.anomaly_flagged) << 9
    return _ROW.pack(
        mask,
        len(raw_group),
        _value_index(summary.kind),
        _value_index(summary.app),
        _value_index(summary.source),
        _value_index(summary.anomaly_reasons),
        _value_index(summary.verdict),
        *floats,
        *ints,
        raw_group,
    )


def unpack(row: bytes | Summary) -> Summary:
    if not isinstance(row, bytes):
        return row
    mask, group_len, kind, app, source, reasons, verdict, *numbers, raw_group = _ROW.unpack(row)
    f = [numbers[i] if mask >> i & 1 else None for i in range(5)]
    n = [numbers[5 + i] if mask >> (5 + i) & 1 else None for i in range(2)]
    return Summary(
        _VALUES[kind],
        raw_group[:group_len].hex(),
        None,
        _VALUES[app],
        f[0],
        f[1],
        _untri(mask >> 7 & 3),
        f[2],
        n[0],
        n[1],
        _VALUES[source],
        f[3],
        _untri(mask >> 9 & 3),
        _VALUES[reasons],
        _VALUES[verdict],
        f[4],
    )


def record_key(name: str) -> bytes:
    """A cache's key of an object name: its ID as 32 bytes (not a 137-character string)."""
    ident = name.rsplit("/", 1)[-1]
    try:
        return bytes.fromhex(ident)
    except ValueError:
        return name.encode()


@dataclass
class RefreshStats:
    listed: int = 0
    read: int = 0
    damaged: int = 0
    seconds: float = 0.0
    list_seconds: float = 0.0  # of ``seconds``, listing the names


@dataclass
class RecordCache:
    """Summaries of one repository's records by object name (:func:`record_key`); :meth:`refresh` reads
    only new names."""

    entries: dict[bytes, Summary | None] = field(default_factory=dict)
    last: RefreshStats = field(default_factory=lambda: RefreshStats())
    # what is kept of a record that opened: (kind, group, data) -> a summary (None: nothing); another
    # reader (the fleet report) may keep its own summaries through the same listing and reading
    describe: Callable[[str, str | None, dict], Any] = summarize_compact

    def refresh(self, repo: Repository) -> RefreshStats:
        t0 = time.monotonic()
        stats = RefreshStats()
        listed: set[bytes] = set()
        new: list[tuple[bytes, str, Any]] = []
        for kind in KINDS:
            for info in repo.store.list(f"{kind}/"):
                if info.key.count("/") == 2:
                    key = record_key(info.key)
                    listed.add(key)
                    if key not in self.entries:
                        new.append((key, kind, info))
        stats.listed = len(listed)
        stats.list_seconds = time.monotonic() - t0

        def read(item):
            key, kind, info = item
            group = info.key.split("/")[1]
            try:
                # (a record's name is the hash of its bytes: one reading per name is enough)
                record = repo.read_record(kind, info.key, info.last_modified)
            except KeyError:
                return key, "gone"  # deleted since the listing
            except Exception:
                return key, Summary("damaged", group)
            return key, self.describe(kind, group, record.data)

        if new:
            with ThreadPoolExecutor(max_workers=min(READ_PARALLEL, len(new))) as pool:
                for start in range(0, len(new), READ_BATCH):  # (in batches: few results wait at a time)
                    for key, summary in pool.map(read, new[start : start + READ_BATCH]):
                        if isinstance(summary, str) and summary == "gone":
                            continue
                        if (
                            self.describe is summarize_compact
                            and isinstance(summary, Summary)
                            and summary.kind != "damaged"
                        ):
                            summary = pack(summary)
                        self.entries[key] = summary
                        stats.read += 1
        for key in [k for k in self.entries if k not in listed]:
            del self.entries[key]  # pruned
        stats.damaged = sum(
            1 for s in self.entries.values() if isinstance(s, Summary) and s.kind == "damaged"
        )
        stats.seconds = time.monotonic() - t0
        self.last = stats
        return stats

    def damaged(self) -> int:
        """Records that do not open (never packed)."""
        return sum(1 for s in self.entries.values() if isinstance(s, Summary) and s.kind == "damaged")

    def summaries(self) -> list[Summary]:
        """Every record's summary (the packed ones unpacked: made anew on each call)."""
        return [unpack(s) if isinstance(s, bytes) else s for s in self.entries.values() if s is not None]
