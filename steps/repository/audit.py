"""The audit trail: who created, read out or destroyed protected data, when, and with what result.

Every action on protected data (a backup's commit, a restore, prune and forget, key changes, Object
Lock settings, check results) appends one **audit record**: an encrypted, authenticated object
``audit/<ID>`` (the ID is the BLAKE3 hash of its stored bytes, like every object) holding::

    {"version": 1, "seq": 42, "time": STORE_TIME,
     "parents": [{"id": ID, "seq": 41, "time": ...}, ...],   # the heads the writer saw
     "action": "backup.commit", "result": "ok", "who": {...}, "app": {...} | null, "what": {...}}

The records form a hash chain (a DAG when writers were concurrent): each names the heads of the trail
it saw, by the hash of their stored bytes, so a record deleted or altered breaks the chain at a place
:func:`verify_trail` names. Appending takes no lock: two writers that saw the same head both append
(a fork), and the next writer lists every head as its parent (the merge). ``seq`` is one more than the
largest parent's, so a missing record is named with its sequence number and time by the record that
points at it. A chain cannot show that its newest records were deleted: backup records name the heads
their commit saw (:func:`head_refs`), which bounds it (docs/design.md, "Audit trail").

Records are never deleted by Snapflow (prune and forget leave ``audit/`` alone; prune extends their
Object Lock retention like any kept object). No I/O of its own: everything goes through
:class:`~.repo.Repository`. Called by ``steps.commands.audit_trail`` (appends) and, through
``steps.api``, by ``snapflow audit`` and the evidence page.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from steps.errors import IntegrityError

from .damage import DamagedRecord
from .records import Record, parse_time

if TYPE_CHECKING:
    from .repo import Repository

KIND = "audit"
VERSION = 1
RESULTS = ("ok", "failed", "refused", "partial")
RECENT = 64  # records an append reads to find the heads (the newest by Last-Modified)
# A record stored this long before a backup's commit must be behind the heads the commit saw (appends
# running at the same time as the commit are not).
UNSEEN_SKEW = timedelta(minutes=5)
_ID = re.compile(r"^[0-9a-f]{64}$")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Entry:
    """One audit record as read (authenticated, its name checked against its bytes)."""

    id: str
    seq: int
    time: str
    parents: list[dict]  # {"id", "seq", "time"} of the heads its writer saw
    action: str
    result: str
    who: dict
    app: dict | None
    what: dict
    modified: datetime | None = None  # Last-Modified in the store's clock

    @property
    def key(self) -> str:
        return f"{KIND}/{self.id}"

    def ref(self) -> dict:
        return {"id": self.id, "seq": self.seq, "time": self.time}

    def app_name(self) -> str:
        app = self.app or {}
        return "/".join(str(app.get(k)) for k in ("namespace", "name") if app.get(k))

    def actor(self) -> str:
        """Who, in one phrase (``claimed`` when it comes from labels anyone creating Workflows can set)."""
        who = self.who or {}
        kind = who.get("kind")
        if kind == "cron":
            return f"cron {who.get('cron_workflow')}"
        if kind == "argo":
            name = who.get("username") or who.get("email") or who.get("creator")
            wf = who.get("workflow")
            base = f"{name} (claimed)" if name else "unnamed creator"
            return f"{base} via workflow {wf}" if wf else base
        if kind == "local":
            return f"{who.get('user')}@{who.get('host')}"
        return str(who.get("name") or "unknown")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "seq": self.seq,
            "time": self.time,
            "stored": _iso(self.modified) if self.modified else None,
            "parents": self.parents,
            "action": self.action,
            "result": self.result,
            "who": self.who,
            "actor": self.actor(),
            "app": self.app,
            "what": self.what,
        }


def _entry(rec: Record) -> Entry | str:
    """The entry of an authenticated record, or why it is malformed (only a key holder can write one)."""
    d = rec.data
    seq, parents = d.get("seq"), d.get("parents")
    if d.get("version") != VERSION:
        return f"unknown audit record version {d.get('version')!r}"
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return f"seq: expected a whole number >= 1, got {seq!r}"
    if not isinstance(parents, list) or not all(
        isinstance(p, dict)
        and isinstance(p.get("id"), str)
        and _ID.match(p["id"])
        and isinstance(p.get("seq"), int)
        for p in parents
    ):
        return "parents: expected a list of {id, seq, time}"
    if parse_time(d.get("time")) is None or not isinstance(d.get("action"), str):
        return "time and action: required"
    return Entry(
        id=rec.id,
        seq=seq,
        time=d["time"],
        parents=parents,
        action=d["action"],
        result=str(d.get("result", "")),
        who=d.get("who") if isinstance(d.get("who"), dict) else {},
        app=d.get("app") if isinstance(d.get("app"), dict) else None,
        what=d.get("what") if isinstance(d.get("what"), dict) else {},
        modified=rec.modified,
    )


@dataclass
class Trail:
    """Every audit record of a repository, from one listing."""

    entries: dict[str, Entry]
    damaged: list[DamagedRecord]
    malformed: dict[str, str]  # ID -> what is wrong (authentic, but not an audit record we can use)

    @property
    def heads(self) -> list[Entry]:
        """The records no other record names as a parent (one, or several after concurrent appends)."""
        named = {p["id"] for e in self.entries.values() for p in e.parents}
        return sorted((e for e in self.entries.values() if e.id not in named), key=lambda e: (e.seq, e.id))

    def ordered(self) -> list[Entry]:
        """Oldest first: by sequence number, then time, then ID (concurrent records share a seq)."""
        return sorted(self.entries.values(), key=lambda e: (e.seq, e.time, e.id))


def read_trail(repo: Repository) -> Trail:
    records, damaged = repo.scan_records(KIND)
    entries: dict[str, Entry] = {}
    malformed: dict[str, str] = {}
    for rec in records:
        e = _entry(rec)
        if isinstance(e, Entry):
            entries[e.id] = e
        else:
            malformed[rec.id] = e
    return Trail(entries, damaged, malformed)


def head_refs(trail: Trail) -> list[dict]:
    """``{"id", "seq", "time"}`` of the trail's heads, sorted by ID: what a new record (or a backup
    record) names as the trail it saw."""
    return sorted((e.ref() for e in trail.heads), key=lambda r: r["id"])


def recent_trail(repo: Repository, limit: int | None = None) -> Trail:
    """The newest ``limit`` records by Last-Modified (all of them when the store gives no times): enough
    to find the heads, since a record's children are written after it. A record that is no head but
    looks like one here (its child fell outside, in the same second) is merely named again as a
    parent, which no rule forbids."""
    limit = RECENT if limit is None else limit
    infos = list(repo.store.list(f"{KIND}/"))
    if len(infos) > limit and all(i.last_modified is not None for i in infos):
        infos.sort(key=lambda i: (i.last_modified, i.key), reverse=True)
        infos = infos[:limit]

        def read(info) -> Record | None:
            try:
                return repo.read_record(KIND, info.key, info.last_modified)
            except (KeyError, IntegrityError, ValueError):
                return None  # deleted meanwhile, or damaged: verify names it

        with ThreadPoolExecutor(max_workers=16) as pool:
            records = [r for r in pool.map(read, infos) if r is not None]
        entries = {e.id: e for e in map(_entry, records) if isinstance(e, Entry)}
        return Trail(entries, [], {})
    return read_trail(repo)


def append(
    repo: Repository,
    action: str,
    *,
    who: dict,
    what: dict | None = None,
    app: dict | None = None,
    result: str = "ok",
) -> Entry:
    """Append one audit record naming every head of the trail as its parent (merging forks). Lock-free:
    a record that lands beside a concurrent one forks the trail, and the next append merges it."""
    if result not in RESULTS:
        raise ValueError(f"audit result: expected one of {', '.join(RESULTS)}, got {result!r}")
    now = _iso(repo.store.server_time())
    parents = head_refs(recent_trail(repo))
    seq = 1 + max((p["seq"] for p in parents), default=0)
    data: dict[str, Any] = {
        "version": VERSION,
        "seq": seq,
        "time": now,
        "parents": parents,
        "action": action,
        "result": result,
        "who": who,
        "app": app,
        "what": what or {},
    }
    rid = repo.save_record(KIND, data)
    return Entry(rid, seq, now, parents, action, result, who, app, what or {})


def select(trail: Trail, since: datetime | None = None, app: str | None = None) -> list[Entry]:
    """The entries, oldest first, from ``since`` on and of ``app`` (``NAME`` or ``NAMESPACE/NAME``)."""
    out = []
    for e in trail.ordered():
        t = parse_time(e.time)
        if since is not None and (t is None or t < since):
            continue
        if app:
            mine = e.app or {}
            if app not in (mine.get("name"), e.app_name()):
                continue
        out.append(e)
    return out


# -- verification ----------------------------------------------------------------------------------


@dataclass
class Finding:
    """A break of the trail: a record missing (deleted) or altered, or inconsistent, named by its object
    key with the sequence number and time the record pointing at it gives."""

    problem: str  # missing, altered, inconsistent, unrecorded, unseen
    key: str
    seq: int | None
    time: str | None
    message: str

    def to_dict(self) -> dict:
        return {
            "problem": self.problem,
            "key": self.key,
            "seq": self.seq,
            "time": self.time,
            "message": self.message,
        }


@dataclass
class Verification:
    records: int
    heads: list[dict]
    forks: int  # records that merged concurrent heads
    findings: list[Finding] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # read from an older version (versioned buckets)
    bound: dict | None = None  # the newest head a backup record names
    newest: dict | None = None
    cannot_prove: str = ""

    @property
    def ok(self) -> bool:
        return not self.findings and not self.replaced

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "records": self.records,
            "heads": self.heads,
            "forks_merged": self.forks,
            "findings": [f.to_dict() for f in self.findings],
            "replaced": self.replaced,
            "bound": self.bound,
            "newest": self.newest,
            "cannot_prove": self.cannot_prove,
        }


def _referrers(trail: Trail) -> dict[str, list[tuple[Entry, dict]]]:
    out: dict[str, list[tuple[Entry, dict]]] = {}
    for e in trail.entries.values():
        for p in e.parents:
            out.setdefault(p["id"], []).append((e, p))
    return out


def _older_version_opens(repo: Repository, rid: str) -> bool:
    """Whether a record missing from the listing still opens from the bucket's versions (deleted with a
    delete marker on a versioned bucket)."""
    try:
        repo.read_record(KIND, f"{KIND}/{rid}")
    except (KeyError, IntegrityError, ValueError):
        return False
    return True


def _unseen_by(trail: Trail, newest: tuple[datetime, Record, list[str]] | None) -> list[Finding]:
    """Records stored well before the newest backup's commit (:data:`UNSEEN_SKEW`) must be behind the
    heads it saw: every append names the heads it finds, so an older record outside them was hidden from
    that commit — its successors deleted and the trail forked around it (a store's listing can be made to
    look newer by re-uploading old records, without the key). Times are the records' own, authenticated."""
    if newest is None:
        return []
    committed_at, backup, heads = newest
    behind: set[str] = set()
    todo = [h for h in heads if h in trail.entries]
    while todo:
        rid = todo.pop()
        if rid in behind:
            continue
        behind.add(rid)
        todo.extend(p["id"] for p in trail.entries[rid].parents if p["id"] in trail.entries)
    out = []
    for e in trail.ordered():
        t = parse_time(e.time)
        if e.id in behind or t is None or t > committed_at - UNSEEN_SKEW:
            continue
        out.append(
            Finding(
                "unseen",
                e.key,
                e.seq,
                e.time,
                f"stored before backup {backup.data.get('backup_id')} was committed"
                f" ({backup.data.get('time')}), but not behind the heads that commit saw: records after it"
                " were deleted and the trail forked around them, or the commit read a forged trail",
            )
        )
    return out


def verify_trail(
    repo: Repository, trail: Trail | None = None, backups: list[Record] | None = None
) -> Verification:
    """Walk the trail from its heads: every parent must be an intact record whose ``seq`` and ``time``
    are what its children say, and every record's ``seq`` one more than its largest parent's. Backup
    records name the heads their commit saw: each must be there, and so must the record of the commit.
    What this cannot prove (the newest records after the last backup's reference) is stated."""
    trail = trail if trail is not None else read_trail(repo)
    backups = backups if backups is not None else repo.list_records("backups")
    refs = _referrers(trail)
    damaged = {d.id: d for d in trail.damaged}
    findings: list[Finding] = []
    for pid, users in sorted(refs.items(), key=lambda kv: (kv[1][0][1]["seq"], kv[0])):
        if pid in trail.entries:
            parent = trail.entries[pid]
            for child, ref in users:
                if ref.get("seq") != parent.seq or ref.get("time") != parent.time:
                    findings.append(
                        Finding(
                            "inconsistent",
                            parent.key,
                            parent.seq,
                            parent.time,
                            f"{child.key} (seq {child.seq}) names it as seq {ref.get('seq')} of {ref.get('time')}",
                        )
                    )
            continue
        child, ref = users[0]
        seq, when = ref.get("seq"), ref.get("time")
        by = f"named as parent by {child.key} (seq {child.seq}, {child.time})"
        if pid in damaged:
            findings.append(Finding("altered", damaged[pid].key, seq, when, f"{damaged[pid].problem}; {by}"))
        elif pid in trail.malformed:
            findings.append(Finding("altered", f"{KIND}/{pid}", seq, when, f"{trail.malformed[pid]}; {by}"))
        else:
            kept = _older_version_opens(repo, pid)
            how = "deleted, its intact old version is kept by the bucket" if kept else "deleted"
            findings.append(Finding("missing", f"{KIND}/{pid}", seq, when, f"{how}; {by}"))
    for d in trail.damaged:
        if d.id not in refs:
            findings.append(
                Finding(
                    "altered",
                    d.key,
                    None,
                    _iso(d.modified) if d.modified else None,
                    f"{d.problem} (no record names it)",
                )
            )
    for rid, why in sorted(trail.malformed.items()):
        if rid not in refs:
            findings.append(Finding("altered", f"{KIND}/{rid}", None, None, why))
    for e in trail.ordered():
        expected = 1 + max((p["seq"] for p in e.parents), default=0)
        if e.seq != expected:
            findings.append(
                Finding(
                    "inconsistent", e.key, e.seq, e.time, f"seq {e.seq}, but its parents make it {expected}"
                )
            )
    # backups: the heads their commit saw must be there, and so must the record of their commit
    committed = {
        str(e.what.get("backup_id"))
        for e in trail.entries.values()
        if e.action == "backup.commit" and e.result == "ok"
    }
    bound: dict | None = None
    newest_backup: tuple[datetime, Record, list[str]] | None = None
    for b in backups:
        seen = b.data.get("audit_heads")
        if not isinstance(seen, list):
            continue  # committed before the trail existed
        bid = b.data.get("backup_id")
        where = f"backups/{b.key_group}/{b.id}" if b.key_group else f"backups/{b.id}"
        good = [
            h
            for h in seen
            if isinstance(h, dict)
            and isinstance(h.get("id"), str)
            and _ID.match(h["id"])
            and isinstance(h.get("seq"), int)
            and not isinstance(h.get("seq"), bool)
        ]
        if len(good) != len(seen):
            findings.append(
                Finding(
                    "inconsistent",
                    where,
                    None,
                    b.data.get("time") if isinstance(b.data.get("time"), str) else None,
                    f"backup {bid}: audit_heads holds {len(seen) - len(good)} entr(ies) that name no audit"
                    " record ({id, seq, time} expected)",
                )
            )
        committed_at = parse_time(b.data.get("time"))
        if committed_at is not None and (newest_backup is None or committed_at > newest_backup[0]):
            newest_backup = (committed_at, b, [h["id"] for h in good])
        for h in good:
            if bound is None or h["seq"] > bound["seq"]:
                bound = {**h, "backup_id": bid}
            known = h["id"] in trail.entries or h["id"] in damaged or h["id"] in trail.malformed
            if not known and h["id"] not in refs:
                findings.append(
                    Finding(
                        "missing",
                        f"{KIND}/{h['id']}",
                        h.get("seq"),
                        h.get("time"),
                        f"deleted; backup {bid} (record {b.id[:12]}) saw it as a head of the trail",
                    )
                )
        if bid not in committed:
            findings.append(
                Finding(
                    "unrecorded",
                    f"backups/{b.key_group}/{b.id}" if b.key_group else f"backups/{b.id}",
                    None,
                    b.data.get("time"),
                    f"backup {bid} was committed at {b.data.get('time')}, but no audit record of its commit"
                    " is in the trail: deleted, or its append failed (finalize warned)",
                )
            )
    findings += _unseen_by(trail, newest_backup)
    named = {f.key for f in findings}
    replaced = [m for m in repo.fallbacks if m.startswith(f"{KIND}/") and m.split(":", 1)[0] not in named]
    ordered = trail.ordered()
    newest = ordered[-1].ref() if ordered else None
    if newest is None:
        cannot = "the trail is empty: nothing shows whether records were ever written"
    elif bound is None:
        cannot = (
            f"records after seq {newest['seq']} ({newest['time']}) could have been deleted without a trace:"
            " no backup record names a head of the trail yet"
        )
    else:
        cannot = (
            f"records after seq {bound['seq']} ({bound['time']}, the newest head a backup record names:"
            f" backup {bound['backup_id']}) are proven only by their presence: deleting the newest records"
            f" (up to seq {newest['seq']}) leaves no gap"
        )
    return Verification(
        records=len(trail.entries),
        heads=head_refs(trail),
        forks=sum(1 for e in trail.entries.values() if len(e.parents) > 1),
        findings=findings,
        replaced=replaced,
        bound=bound,
        newest=newest,
        cannot_prove=cannot,
    )


def describe(findings: list[Finding]) -> str:
    """One line naming the first break of the trail (and how many there are)."""
    f = findings[0]
    at = ", ".join(x for x in (f"seq {f.seq}" if f.seq is not None else "", f.time or "") if x)
    where = f"{f.key} ({at})" if at else f.key
    more = f"; and {len(findings) - 1} more" if len(findings) > 1 else ""
    return f"audit trail broken: {f.problem} record {where}: {f.message}{more}"
