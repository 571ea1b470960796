"""``registry-restore``: push the images of a registry snapshot to a registry (the same or another)."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_as_of_arg, add_repo_args, open_repository, print_json
from steps.commands.registry_backup import add_registry_args, endpoint_of

NAME = "registry-restore"
HELP = "push the images of a registry snapshot to a registry, digests and tags preserved"
DESCRIPTION = """Restore the registry snapshot --snapshot (an ID, a unique prefix, or 'latest': the newest
committed snapshot of kind registry) into the registry at --registry, the one it was taken from or
another. Every repository gets back its blobs (a blob the registry already has is skipped after a HEAD,
one pushed to another repository in this run is mounted), then its manifests, byte for byte with their
media types, children before the indexes that list them, then its tags: every digest stays the same.
Each blob and manifest read back from the repository is checked against its digest before it is pushed.

--rehome OLD=NEW moves repositories: a repository whose HOST/NAME starts with OLD (a host and a path
prefix, e.g. harbor.a/proj) is pushed as NEW plus the rest of its name (e.g. harbor.b/proj); NEW's host
must be --registry's; the longest matching OLD applies. restore-app's --image-registry applies the same
rule to the restored workloads' image references. --json prints, for each image, the reference before and after, for rewriting the
image references of restored workloads.

Credentials and TLS as for registry-backup (--username, --password-file, --ca). The snapshot is
restored into SCRATCH (--scratch) first.

examples:
  python -m steps registry-restore --repo s3://backups/registry --registry https://harbor-b.example.com \\
      --rehome harbor-a.example.com/shop=harbor-b.example.com/shop --username robot\\$restore \\
      --password-file /secrets/harbor-b/password
"""


def configure(parser):
    add_repo_args(parser)
    add_registry_args(parser, "to push to")
    parser.add_argument("--snapshot", default="latest", metavar="ID", help="snapshot ID, prefix or 'latest'")
    parser.add_argument(
        "--rehome",
        action="append",
        metavar="OLD=NEW",
        help="push HOST/PATH-prefix OLD as NEW (repeatable; the longest OLD that matches applies)",
    )
    parser.add_argument(
        "--allow-uncommitted",
        action="store_true",
        help="also restore a snapshot of a backup that was never committed (not a restore point)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=64,
        metavar="MiB",
        help="blobs larger than this are uploaded in chunks of this size (default 64)",
    )
    parser.add_argument(
        "--scratch", metavar="DIR", help="directory for the restored snapshot (default: $TMPDIR)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def parse_rehome(values: list[str] | None, target_host: str) -> dict[str, str]:
    """``{OLD: NEW}`` of ``--rehome`` (:func:`steps.manifests.image_rehome.parse_rehome`), each NEW on
    ``target_host`` with a valid repository path."""
    from steps.drivers.registry_reference import check_repository_name
    from steps.errors import UsageError
    from steps.manifests.image_rehome import parse_rehome as parse_rules

    rules = parse_rules(values or [], "--rehome")
    for old, new in rules.items():
        new_host, _, new_path = new.partition("/")
        if new_host.lower() != target_host.lower():
            raise UsageError(
                f"--rehome: {old}={new} moves images to {new_host}, but --registry is {target_host}"
            )
        if new_path:
            check_repository_name(new_path, "--rehome")
    return rules


def renamer(rules: dict[str, str], source_host: str):
    """The repository (on the target registry) each repository of ``source_host`` is pushed as: the
    re-home rule that restore-app's image transform applies to the workloads' image references
    (:func:`steps.manifests.image_rehome.rehome_name`, the longest matching OLD wins)."""
    from steps.drivers.registry_reference import check_repository_name
    from steps.manifests.image_rehome import rehome_name

    def rename(repository: str) -> str:
        moved = rehome_name(f"{source_host}/{repository}", rules)
        if moved is None:
            return repository
        return check_repository_name(moved.partition("/")[2], "--rehome")

    return rename


def find_registry_snapshot(repo, ref: str, allow_uncommitted: bool):
    from steps.errors import UsageError

    commits = repo.commits()
    snaps = repo.list_snapshots()
    if ref == "latest":
        mine = [s for s in snaps if s.tags.get("kind") == "registry"]
        if not mine:
            raise UsageError(f"--snapshot latest: {repo.url} holds no snapshot of kind registry")
        restorable = [s for s in mine if commits.state(s) in ("plain", "committed")]
        if not restorable:
            newest = max(mine, key=lambda s: s.time)
            if not allow_uncommitted:
                raise UsageError(
                    f"--snapshot latest: no registry snapshot in {repo.url} belongs to a committed backup (the"
                    f" newest, {newest.short_id}, is of backup {newest.backup_id}, never committed); give"
                    " --allow-uncommitted to restore it anyway"
                )
            return newest
        snap = repo.find_snapshot("latest", mine, commits)
    else:
        snap = repo.find_snapshot(ref, snaps, commits)
    if snap.tags.get("kind") != "registry":
        raise UsageError(
            f"--snapshot {ref}: snapshot {snap.short_id} is not a registry snapshot (kind"
            f" {snap.tags.get('kind') or 'none'})"
        )
    if commits.state(snap) in ("uncommitted", "damaged") and not allow_uncommitted:
        raise UsageError(
            f"--snapshot {ref}: snapshot {snap.short_id} belongs to backup {snap.backup_id}, which was never"
            " committed (not a restore point); give --allow-uncommitted to restore it anyway"
        )
    return snap


def _audited(args, repo, snap, registry: str, push):
    """``push()``, recorded in the audit trail: which snapshot and backup, into which registry (and
    re-homed where), and what was pushed."""
    from steps.commands.audit_trail import run_audited

    what = {"snapshot": snap.id, "backup_id": snap.backup_id, "registry": registry}
    if args.rehome:
        what["rehome"] = list(args.rehome)
    if args.allow_uncommitted:
        what["allow_uncommitted"] = True

    def describe(out):
        desc, _, stats = out
        pushed = {k: v for k, v in stats.__dict__.items() if isinstance(v, int)}
        return {"source_registry": desc.get("registry"), **pushed}, None, "ok"

    return run_audited(repo, "registry-restore", what, push, describe=describe)


def run(args) -> int:
    import sys

    from steps.drivers.files import remove_dir, scratch_dir
    from steps.drivers.registry_client import RegistryClient
    from steps.drivers.registry_push import push_stage, read_stage
    from steps.errors import UsageError
    from steps.repository.restorer import restore_snapshot

    if not 1 <= args.chunk_size <= 4096:
        raise UsageError(f"--chunk-size: expected MiB between 1 and 4096, got {args.chunk_size}")
    client = RegistryClient(endpoint_of(args))
    rules = parse_rehome(args.rehome, client.endpoint.host)
    repo = open_repository(args)
    snap = find_registry_snapshot(repo, args.snapshot, args.allow_uncommitted)

    def push():
        work = scratch_dir(args.scratch, "registry-restore-")
        try:
            restore_snapshot(repo, snap, work)
            where = f"snapshot {snap.short_id}"
            desc = read_stage(work, where)
            rename = renamer(rules, desc["registry"])
            return desc, rename, push_stage(client, work, desc, rename, args.chunk_size * 1024 * 1024, where)
        finally:
            remove_dir(work)

    desc, rename, stats = _audited(args, repo, snap, client.endpoint.host, push)
    images = []
    for name, entry in sorted(desc["repositories"].items()):
        for tag, digest in sorted(entry.get("tags", {}).items()):
            images.append(
                {
                    "from": f"{desc['registry']}/{name}:{tag}@{digest}",
                    "to": f"{client.endpoint.host}/{rename(name)}:{tag}@{digest}",
                }
            )
        for digest in entry.get("digests", []):
            images.append(
                {
                    "from": f"{desc['registry']}/{name}@{digest}",
                    "to": f"{client.endpoint.host}/{rename(name)}@{digest}",
                }
            )
    summary = {"snapshot": snap.id, "registry": client.endpoint.host, **stats.__dict__, "images": images}
    print(
        f"registry snapshot {snap.short_id} pushed to {client.endpoint.host}: {len(desc['repositories'])}"
        f" repositories, {stats.tags} tags, {stats.manifests_pushed} manifests; blobs {stats.blobs_pushed}"
        f" pushed ({stats.bytes_pushed} bytes), {stats.blobs_present} already there, {stats.blobs_mounted} mounted",
        file=sys.stderr,
    )
    if args.json:
        print_json(summary)
    return 0
