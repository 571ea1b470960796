"""``etcd-restore``: write a new etcd data directory from an etcd snapshot in the repository."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_as_of_arg, add_repo_args, open_repository, print_json

NAME = "etcd-restore"
HELP = "write a new etcd data directory from an etcd snapshot (etcdutl/etcdctl snapshot restore)"
DESCRIPTION = """Restore the etcd snapshot --snapshot (an ID, a unique prefix, or 'latest': the newest
committed snapshot of kind etcd) and write a new data directory for one member with etcd's own tool:
etcdutl snapshot restore (etcd 3.5 and later) when present, else etcdctl snapshot restore (etcd 3.4).
The tool must be of the etcd version the snapshot recorded (major.minor), unless
--allow-version-mismatch is given. The snapshot's trailing SHA-256 is checked again before the tool runs.

With --allow-version-mismatch and a tool of another version (e.g. Debian's etcdctl 3.4 for a snapshot
of etcd 3.5): a warning names both versions, and after the restore the tool's 'snapshot status' opens
the written member/snap/db (every bucket read and hashed) and its revision must be the snapshot's;
when it is not, what was written is removed and the restore fails. etcd itself does not promise that
a tool of another minor version writes a data directory the cluster's etcd accepts: docs/user/etcd.md
says what is checked and how to use a matching etcdutl instead.

Every member of the restored cluster gets its own data directory from the same snapshot: run this once
per member with its --name and --initial-advertise-peer-urls, the same --initial-cluster and the same
--initial-cluster-token (by default a new token is made and printed: give it to the other members).

--data-dir must be empty (bar an empty lost+found) or not exist; a non-empty one is refused. The data is
written next to it first and moved into place, so --data-dir may be a mount point.

examples:
  python -m steps etcd-restore --repo s3://backups/etcd --snapshot latest --data-dir /var/lib/etcd-restored \\
      --name cp1 --initial-advertise-peer-urls https://10.0.0.10:2380
  python -m steps etcd-restore --repo s3://backups/etcd --snapshot 3f2a9c1e --data-dir /var/lib/etcd-new \\
      --name cp2 --initial-advertise-peer-urls https://10.0.0.11:2380 \\
      --initial-cluster cp1=https://10.0.0.10:2380,cp2=https://10.0.0.11:2380,cp3=https://10.0.0.12:2380 \\
      --initial-cluster-token etcd-restored-7f3a
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument("--snapshot", default="latest", metavar="ID", help="snapshot ID, prefix or 'latest'")
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="the new data directory (empty)")
    parser.add_argument("--name", required=True, metavar="NAME", help="this member's name")
    parser.add_argument(
        "--initial-advertise-peer-urls", required=True, metavar="URLS", help="this member's peer URL(s)"
    )
    parser.add_argument(
        "--initial-cluster",
        metavar="NAME=URL,...",
        help="every member of the restored cluster (default: this member alone)",
    )
    parser.add_argument(
        "--initial-cluster-token", metavar="TOKEN", help="the restored cluster's token (default: a new one)"
    )
    parser.add_argument("--etcd-tool", metavar="PATH", help="etcdutl or etcdctl (default: found on the PATH)")
    parser.add_argument(
        "--allow-version-mismatch",
        nargs="?",
        const="true",
        default="false",
        choices=("true", "false"),
        metavar="true|false",
        help="use an etcd tool of another major.minor version than the snapshot's: warn naming both,"
        " then open the written database with the tool and check its revision (default false)",
    )
    parser.add_argument(
        "--allow-uncommitted",
        action="store_true",
        help="also restore a snapshot of a backup that was never committed (not a restore point)",
    )
    parser.add_argument("--scratch", metavar="DIR", help="directory for the snapshot file (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"


def check_arguments(args) -> tuple[str, str]:
    """``(initial_cluster, token)``, with the defaults filled in."""
    import re
    import secrets
    from urllib.parse import urlsplit

    from steps.errors import UsageError

    if not re.fullmatch(_NAME_RE, args.name):
        raise UsageError(
            f"--name: expected a member name of letters, digits, '.', '_', '-', got {args.name!r}"
        )
    urls = [u.strip() for u in args.initial_advertise_peer_urls.split(",") if u.strip()]
    for url in urls or [args.initial_advertise_peer_urls]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--initial-advertise-peer-urls: expected http(s)://HOST:PORT, got {url!r}")
    cluster = args.initial_cluster or ",".join(f"{args.name}={u}" for u in urls)
    pairs = [p.partition("=") for p in cluster.split(",") if p.strip()]
    if not pairs or any(not sep or not re.fullmatch(_NAME_RE, n.strip()) for n, sep, _ in pairs):
        raise UsageError(f"--initial-cluster: expected NAME=URL,NAME=URL,..., got {cluster!r}")
    mine = {u for n, _, u in pairs if n.strip() == args.name}
    if not mine:
        raise UsageError(f"--initial-cluster: names no member {args.name!r} (the --name of this member)")
    if not set(urls) <= mine:
        raise UsageError(
            f"--initial-cluster: gives {args.name!r} other peer URLs than --initial-advertise-peer-urls"
        )
    token = args.initial_cluster_token or f"etcd-restored-{secrets.token_hex(4)}"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", token):
        raise UsageError(f"--initial-cluster-token: expected letters, digits, '.', '_', '-', got {token!r}")
    return cluster, token


def same_minor(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def warn_version_mismatch(recorded: str, tool) -> None:
    import sys

    taken = f"etcd {recorded}" if recorded else "an etcd of unknown version"
    accepts = f"etcd {'.'.join(recorded.split('.')[:2])}" if recorded else "that etcd"
    print(
        f"warning: the snapshot was taken by {taken} but the tool is {tool} (--allow-version-mismatch):"
        f" etcd does not promise that this tool writes a data directory {accepts} accepts; the written"
        " database is opened and its revision checked before it is moved into place, start the member"
        " and check the cluster before relying on it",
        file=sys.stderr,
    )


def check_written(tool, revision, verified: dict):
    """The check :func:`steps.drivers.etcd_tool.restore_data_dir` runs on the directory it wrote, before
    moving it into place: the tool's ``snapshot status`` opens the new database and its revision must be
    the snapshot's."""
    from steps.drivers import etcd_tool

    def check(directory: str) -> None:
        verified["status"] = etcd_tool.verify_data_dir(
            tool, directory, int(revision) if revision is not None else None
        )

    return check


def find_etcd_snapshot(repo, ref: str, allow_uncommitted: bool):
    from steps.errors import UsageError

    commits = repo.commits()
    snaps = repo.list_snapshots()
    if ref == "latest":
        etcd_snaps = [s for s in snaps if s.tags.get("kind") == "etcd"]
        if not etcd_snaps:
            raise UsageError(f"--snapshot latest: {repo.url} holds no snapshot of kind etcd")
        snap = repo.find_snapshot("latest", etcd_snaps, commits)
    else:
        snap = repo.find_snapshot(ref, snaps, commits)
    if snap.tags.get("kind") != "etcd":
        raise UsageError(
            f"--snapshot {ref}: snapshot {snap.short_id} is not an etcd snapshot (kind"
            f" {snap.tags.get('kind') or 'none'}); restore it with 'restore'"
        )
    state = commits.state(snap)
    if state in ("uncommitted", "damaged") and not allow_uncommitted:
        raise UsageError(
            f"--snapshot {ref}: snapshot {snap.short_id} belongs to backup {snap.backup_id}, which was never"
            " committed (not a restore point); give --allow-uncommitted to restore it anyway"
        )
    return snap


def _audited(repo, what: dict, write):
    """``write()`` (the data directory from the snapshot), recorded in the audit trail: which snapshot
    and backup, into which data directory for which member, and the revision written."""
    from steps.commands.audit_trail import run_audited

    def describe(out):
        desc, size, _ = out
        more = {k: desc.get(k) for k in ("etcd_version", "revision", "cluster_id") if desc.get(k) is not None}
        return {**more, "size": size}, None, "ok"

    return run_audited(repo, "etcd-restore", what, write, describe=describe)


def run(args) -> int:
    import os
    import sys

    from steps.drivers import etcd, etcd_tool, files
    from steps.errors import UsageError
    from steps.repository.restorer import restore_snapshot

    cluster, token = check_arguments(args)
    tool = etcd_tool.find_tool(args.etcd_tool)
    if tool is None:
        raise UsageError(
            "--etcd-tool: no etcdutl or etcdctl on the PATH (install the etcd tools of the snapshot's version,"
            " or give --etcd-tool)"
        )
    etcd_tool.prepare_data_dir(args.data_dir)
    repo = open_repository(args)
    snap = find_etcd_snapshot(repo, args.snapshot, args.allow_uncommitted)

    verified: dict = {"status": None}

    def write():
        work = files.scratch_dir(args.scratch, "etcd-restore-")
        try:
            restore_snapshot(repo, snap, work)
            desc = etcd.read_description(work)
            recorded = str(desc.get("etcd_version") or "")
            # a snapshot that does not say which etcd took it is restored like one of another version
            mismatch = not recorded or not same_minor(recorded, tool.version)
            if mismatch and args.allow_version_mismatch != "true":
                if not recorded:
                    raise UsageError(
                        f"--etcd-tool: the snapshot does not record which etcd version took it, so {tool} may"
                        " not match it; give --allow-version-mismatch to restore and check it"
                    )
                raise UsageError(
                    f"--etcd-tool: the snapshot was taken by etcd {recorded} but the tool is {tool}; use the"
                    f" tool of etcd {'.'.join(recorded.split('.')[:2])} (--etcd-tool) or give"
                    " --allow-version-mismatch"
                )
            db = os.path.join(work, etcd.SNAPSHOT_FILE)
            size = etcd.check_snapshot_file(db, desc)
            if mismatch:
                warn_version_mismatch(recorded, tool)
            written = etcd_tool.restore_data_dir(
                tool,
                db,
                args.data_dir,
                args.name,
                cluster,
                args.initial_advertise_peer_urls,
                token,
                check=check_written(tool, desc.get("revision"), verified) if mismatch else None,
            )
            return desc, size, written
        finally:
            files.remove_dir(work)

    what = {
        "snapshot": snap.id,
        "backup_id": snap.backup_id,
        "data_dir": args.data_dir,
        "member": args.name,
        "initial_cluster": cluster,
        "tool": str(tool),
    }
    desc, size, written = _audited(repo, what, write)
    summary = {
        "snapshot": snap.id,
        "data_dir": args.data_dir,
        "name": args.name,
        "initial_cluster": cluster,
        "initial_cluster_token": token,
        "tool": str(tool),
        "etcd_version": desc.get("etcd_version"),
        "revision": desc.get("revision"),
        "cluster_id": desc.get("cluster_id"),
        "size": size,
        "written": written,
        "version_mismatch_checked": verified["status"],
    }
    print(
        f"etcd data directory {args.data_dir} written by {tool} from snapshot {snap.short_id} (etcd"
        f" {desc.get('etcd_version')}, revision {desc.get('revision')}) for member {args.name} of {cluster},"
        f" cluster token {token}",
        file=sys.stderr,
    )
    if args.json:
        print_json(summary)
    return 0
