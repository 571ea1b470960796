"""``etcd-snapshot``: back up an etcd cluster's keyspace (one member's snapshot) into the repository."""

from __future__ import annotations

from steps.commands._identity import add_app_args, run_identity, snapshot_identity
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, parse_tags, print_json

NAME = "etcd-snapshot"
HELP = "back up etcd (a snapshot through its v3 maintenance API) as a snapshot of kind etcd"
DESCRIPTION = """Take a snapshot of the etcd member at --etcd through etcd's JSON gateway on its client port
(POST /v3/maintenance/snapshot), with client TLS, and store it in the repository as a snapshot tagged
kind=etcd and etcd-cluster-id=ID. The snapshot's trailing SHA-256 is checked as it streams into
SCRATCH/etcd-CLUSTER_ID (--scratch, default $TMPDIR; one snapshot of a cluster at a time on a machine);
only a complete, matching snapshot is stored. It holds two files: snapshot.db (the file etcd's tools
restore from) and etcd.json (etcd version, revision, cluster ID, member list, size and digest). The
revision comes from the stream (etcd 3.5+) or the file; where an etcd tool is present (etcdutl, else
etcdctl, or --etcd-tool), its 'snapshot status' must agree before the snapshot is committed.

The connection is checked first by a TLS handshake of our own, so that a closed port, an unknown CA, a
server certificate for another host name, or a missing or refused client certificate each fail with one
line naming the cause (etcd's own tools say only "context deadline exceeded"). Exit 75 when etcd cannot
be reached (worth retrying), 3 for a refused certificate or a snapshot whose digest does not match, 2 for
bad arguments; nothing is stored in any of these cases.

Certificates: --cacert, --cert and --key, or --tls-dir DIR holding either ca.crt, tls.crt and tls.key
(a mounted Secret) or kubeadm's ca.crt, healthcheck-client.crt and healthcheck-client.key
(/etc/kubernetes/pki/etcd on a control-plane node).

examples:
  python -m steps etcd-snapshot --repo s3://backups/etcd --etcd https://10.0.0.10:2379 \\
      --tls-dir /etc/kubernetes/pki/etcd --cluster prod
  python -m steps etcd-snapshot --repo file:///backups --etcd https://127.0.0.1:2379 --cacert ca.crt \\
      --cert client.crt --key client.key --json
"""


def add_tls_args(parser) -> None:
    g = parser.add_argument_group("etcd")
    g.add_argument(
        "--etcd",
        required=True,
        metavar="URL[,URL...]",
        help="etcd's client URL (https://HOST:PORT); with several members' URLs, the first that answers",
    )
    g.add_argument("--cacert", metavar="FILE", help="CA bundle that signed etcd's server certificate")
    g.add_argument("--cert", metavar="FILE", help="client certificate (PEM)")
    g.add_argument("--key", metavar="FILE", help="the client certificate's key (PEM, unencrypted)")
    g.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="take --cacert, --cert and --key from DIR (ca.crt + tls.crt + tls.key, or kubeadm's ca.crt +"
        " healthcheck-client.crt + healthcheck-client.key)",
    )
    g.add_argument(
        "--server-name",
        metavar="NAME",
        help="check the server certificate against NAME instead of the URL's host",
    )
    g.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to connect (default 10)"
    )
    g.add_argument(
        "--read-timeout", type=float, default=60.0, metavar="S", help="seconds for each read (default 60)"
    )


def endpoints_of(args):
    from steps.drivers.etcd import EtcdEndpoint, files_of_tls_dir
    from steps.errors import UsageError

    cacert, cert, key = args.cacert, args.cert, args.key
    if args.tls_dir:
        if cacert or cert or key:
            raise UsageError("--tls-dir: give either --tls-dir or --cacert/--cert/--key, not both")
        cacert, cert, key = files_of_tls_dir(args.tls_dir)
    for option, value in (("--connect-timeout", args.connect_timeout), ("--read-timeout", args.read_timeout)):
        if not value > 0:
            raise UsageError(f"{option}: expected a number of seconds above 0, got {value}")
    urls = [u.strip().rstrip("/") for u in args.etcd.split(",") if u.strip()]
    if not urls:
        raise UsageError(f"--etcd: expected https://HOST:PORT[,https://HOST:PORT...], got {args.etcd!r}")
    return [
        EtcdEndpoint(url, cacert, cert, key, args.server_name, args.connect_timeout, args.read_timeout)
        for url in urls
    ]


def configure(parser):
    add_repo_args(parser)
    add_tls_args(parser)
    parser.add_argument("--tag", action="append", metavar="K=V", help="tag the snapshot (repeatable)")
    parser.add_argument("--backup-id", metavar="ID", help="the backup run this snapshot belongs to")
    parser.add_argument("--cluster", metavar="NAME", help="record the Kubernetes cluster's name")
    parser.add_argument("--policy", metavar="NAME", help="record the policy")
    add_app_args(parser)
    parser.add_argument(
        "--scratch",
        metavar="DIR",
        help="directory for the streamed snapshot before it is stored (default: $TMPDIR)",
    )
    parser.add_argument(
        "--etcd-tool",
        metavar="PATH",
        help="etcdutl or etcdctl for 'snapshot status' (default: found on the PATH)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the ID")
    parser.epilog = CONNECTION_EPILOG


def describe(stream, version: dict, members: dict, status: dict, revision, revision_source, url: str) -> dict:
    """The content of ``etcd.json``: what a restore and a reader of the backup need to know."""
    from steps.repository.records import utc_now_iso

    header = stream.header or {}
    from_member = header.get("member_id") or (status.get("header") or {}).get("member_id")
    member_id = f"{int(from_member):x}" if from_member else members["member_id"]
    names = {m["id"]: m["name"] for m in members["members"]}
    return {
        "kind": "etcd",
        "format": 1,
        "endpoint": url,
        "time": utc_now_iso(),
        "etcd_version": stream.version or version.get("etcdserver") or status.get("version"),
        "cluster_version": version.get("etcdcluster"),
        "revision": revision,
        "revision_source": revision_source,
        # when nothing names the revision, the member's revision before the snapshot began bounds it
        "revision_at_least": int((status.get("header") or {}).get("revision") or 0) or None,
        "cluster_id": members["cluster_id"],
        "member_id": member_id,
        "member_name": names.get(member_id, ""),
        "members": members["members"],
        "size": stream.size,
        "sha256": stream.sha256,
    }


def status_of_other_version(status_check, desc: dict, revision, source) -> str | None:
    """The cross-check by a tool of another minor version than the etcd that took the snapshot: a
    failure or a different revision is printed as a warning (and returned), not an error."""
    import sys

    tool = status_check.tool
    try:
        status = status_check.result()
    except Exception as err:
        text = f"{tool} snapshot status could not read this etcd {desc['etcd_version']} snapshot ({err})"
    else:
        got = status.get("revision")
        if revision is None or int(got or 0) == revision:
            return None
        text = (
            f"{tool} snapshot status reads revision {got} in this etcd {desc['etcd_version']} snapshot, the"
            f" snapshot's is {revision} ({source})"
        )
    text += "; the snapshot is stored, checked by its SHA-256; use the etcd tool of the cluster's version for the cross-check"
    print(f"warning: {text}", file=sys.stderr)
    return text


def same_minor(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def snapshot_revision(stream, db: str, status_check) -> tuple[int | None, str | None]:
    """The snapshot's revision and where it came from: the stream's first header (etcd 3.5 and later),
    else the file's own ``key`` bucket, else etcd's tool."""
    from steps.drivers.etcd_bolt import snapshot_revision as from_file

    if (stream.header or {}).get("revision"):
        return int(stream.header["revision"]), "snapshot stream header"
    revision = from_file(db)
    if revision is not None:
        return revision, "snapshot file"
    if status_check is not None and status_check.result().get("revision"):
        return int(status_check.result()["revision"]), f"{status_check.tool} snapshot status"
    return None, None


def run(args) -> int:
    import sys

    from steps.drivers import etcd, etcd_tool
    from steps.errors import IntegrityError, UsageError
    from steps.progress import Progress, human_bytes
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.records import save_run_record

    tags = parse_tags(args.tag)
    if "kind" in tags and tags["kind"] != "etcd":
        raise UsageError(f"--tag: kind is etcd for an etcd snapshot, got kind={tags['kind']}")
    clients = [etcd.EtcdClient(endpoint) for endpoint in endpoints_of(args)]
    tool = etcd_tool.find_tool(args.etcd_tool)
    client, version = etcd.first_answering(clients)
    members = client.member_list()
    status = client.status()
    repo = open_repository(args)
    staged = etcd.stage_snapshot(client, args.scratch, name=f"etcd-{members['cluster_id'] or 'cluster'}")
    status_check = None
    try:
        # etcd's tool reads the whole file: it runs while the copy does, and is waited for before the commit
        status_check = etcd_tool.StatusInBackground(tool, staged.db) if tool else None
        revision, source = snapshot_revision(staged.stream, staged.db, status_check)
        desc = describe(staged.stream, version, members, status, revision, source, client.endpoint.url)
        staged.describe(desc)
        # the same tags for every snapshot of a cluster, so that they form one retention group; the
        # version and revision are in etcd.json and the run record
        tags.update({"kind": "etcd", "etcd-cluster-id": desc["cluster_id"]})
        if args.backup_id:
            tags.setdefault("backup", args.backup_id)
        identity = snapshot_identity(args)
        opts = CopyOptions(
            source=staged.dir, tags=tags, backup_id=args.backup_id, identity=identity, parent=None
        )
        checked: dict = {"status": None, "status_tool": None}

        def agree_with_status(_repo, _parent) -> None:
            if status_check is None:
                return
            if not same_minor(str(desc["etcd_version"] or ""), status_check.tool.version):
                # a tool of another minor version (Debian's etcdctl 3.4 on an etcd 3.5 snapshot) is not
                # known to read it the same way: what it says is a warning, the stream's digest decides
                checked.update(status_warning=status_of_other_version(status_check, desc, revision, source))
                return
            status_of_tool = status_check.result()
            if revision is not None and int(status_of_tool.get("revision") or 0) != revision:
                raise IntegrityError(
                    f"{client.where}: the snapshot's revision {revision} ({source}) differs from"
                    f" {status_check.tool} snapshot status ({status_of_tool.get('revision')}); nothing was stored"
                )
            checked.update(status=status_of_tool, status_tool=str(status_check.tool))

        with Progress("etcd-snapshot") as progress:
            result = copy_source(repo, opts, progress, before_commit=agree_with_status)
    finally:
        if status_check is not None:
            status_check.wait()
        staged.remove()
    desc.update(checked)
    if args.backup_id:
        save_run_record(
            repo, args.backup_id, "etcd", {"snapshot": result.snapshot_id, **desc, **run_identity(args)}
        )
    members_text = ", ".join(f"{m['name'] or '?'} ({m['id']})" for m in desc["members"])
    print(
        f"etcd snapshot {result.snapshot_id[:8]} saved: etcd {desc['etcd_version']}, revision"
        f" {desc['revision'] if desc['revision'] is not None else 'unknown (no etcd tool)'}, cluster"
        f" {desc['cluster_id']}, from member {desc['member_name'] or desc['member_id']}, {human_bytes(desc['size'])},"
        f" members {members_text}; added {result.stats.bytes_added} bytes",
        file=sys.stderr,
    )
    if args.json:
        print_json({"snapshot": result.snapshot_id, **desc, "bytes_added": result.stats.bytes_added})
    else:
        print(result.snapshot_id)
    return 0
