"""``registry-backup``: back up images of an OCI registry (manifests and blobs) into the repository."""

from __future__ import annotations

from steps.commands._identity import add_app_args, run_identity, snapshot_identity
from steps.commands._kube import KUBE_EPILOG, add_kube_args
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, parse_tags, print_json

NAME = "registry-backup"
HELP = "back up images of an OCI registry (Harbor, distribution) as a snapshot of kind registry"
DESCRIPTION = """Back up images of the OCI Distribution registry at --registry: either whole repositories
selected by name patterns (--repository, every tag of each, found through the registry's catalog),
exactly the images given with --image (e.g. harbor.example.com/shop/api@sha256:...; a tag is resolved to
its digest at backup time), or exactly the images the pods selected with --images-of run: their
status.containerStatuses[].imageID and initContainerStatuses[].imageID, read through the Kubernetes API,
each backed up by that digest under the tag its pod spec names. A container whose image is on another
registry is skipped with a warning naming it; an imageID without a digest is refused.

Every manifest (image manifests, OCI indexes, Docker manifest lists and every platform's manifest below
them, OCI artifacts) is kept byte for byte as the registry served it, with its media type; every blob
(configs and layers) is streamed to SCRATCH (--scratch, default $TMPDIR) and checked against its digest
as it arrives, then stored in the repository, deduplicated across images, repositories and runs. The
snapshot is tagged kind=registry and registry=HOST; its layout is described in docs/user/registry.md.

Incremental: a blob the newest committed registry snapshot of the same HOST written by registry-backup
holds whole (checked against its digest when it was downloaded; its entry and stored chunks complete)
is taken from that snapshot without downloading it; a tag is resolved with a HEAD, and a manifest that
snapshot holds is read back from the repository and checked against its digest and against the media
type listed for it (else fetched). A parent that a later backup reused and whose verify then failed is
not used (everything is downloaded). `verify` hashes the registry files in the packs it reads back
against their digests. --full downloads everything.

Credentials: --username and --password-file (a mounted Secret; never an argument). Basic and Bearer
token authentication are both answered; Bearer tokens are asked for per repository and action. TLS: the
CA bundle --ca is the only one trusted for the registry (SSL_CERT_FILE and REQUESTS_CA_BUNDLE are not
read). A blob download redirected to another host (object storage) is followed without credentials.

Exit 75 when the registry cannot be reached (worth retrying); 3 for refused credentials, an untrusted
certificate, a digest that does not match or a manifest that is not JSON or refers to itself; 2 for bad
arguments. Nothing is stored in any of these cases.

examples:
  python -m steps registry-backup --repo s3://backups/registry --registry https://harbor.example.com \\
      --ca /etc/snapflow/harbor-ca.crt --username robot\\$backup --password-file /secrets/harbor/password \\
      --repository 'shop/*'
  python -m steps registry-backup --repo s3://backups/shop --registry https://harbor.example.com \\
      --image harbor.example.com/shop/api@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  python -m steps registry-backup --repo s3://backups/shop --registry https://harbor.example.com \\
      --images-of 'shop:app.kubernetes.io/part-of=orders'
"""


def add_registry_args(parser, purpose: str) -> None:
    g = parser.add_argument_group("registry")
    g.add_argument(
        "--registry", required=True, metavar="URL", help=f"the registry {purpose} (https://HOST[:PORT])"
    )
    g.add_argument(
        "--ca", metavar="FILE", help="CA bundle that signed the registry's certificate (only it is trusted)"
    )
    g.add_argument("--username", metavar="USER", help="user name for Basic or token authentication")
    g.add_argument(
        "--password-file", metavar="FILE", help="file holding the password or token (a mounted Secret)"
    )
    g.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to connect (default 10)"
    )
    g.add_argument(
        "--read-timeout", type=float, default=60.0, metavar="S", help="seconds for each read (default 60)"
    )


def endpoint_of(args):
    from steps.drivers.registry_client import RegistryEndpoint, read_password_file
    from steps.errors import UsageError

    for option, value in (("--connect-timeout", args.connect_timeout), ("--read-timeout", args.read_timeout)):
        if not value > 0:
            raise UsageError(f"{option}: expected a number of seconds above 0, got {value}")
    password = None
    if args.password_file:
        if not args.username:
            raise UsageError("--password-file: give --username too")
        password = read_password_file(args.password_file)
    return RegistryEndpoint(
        args.registry, args.ca, args.username, password, args.connect_timeout, args.read_timeout
    )


def configure(parser):
    add_repo_args(parser)
    add_registry_args(parser, "to back up")
    sel = parser.add_argument_group("what to back up (one of)")
    sel.add_argument(
        "--repository",
        action="append",
        metavar="PATTERN",
        help="repositories whose names match PATTERN (shell-style: 'shop/*', 'base/alpine'), every tag (repeatable)",
    )
    sel.add_argument(
        "--image",
        action="append",
        metavar="REF",
        help="[HOST/]REPOSITORY@sha256:DIGEST or [HOST/]REPOSITORY:TAG on --registry (repeatable)",
    )
    sel.add_argument(
        "--images-of",
        action="append",
        metavar="NS[:SELECTOR]",
        help="the images the pods of namespace NS (matching the label SELECTOR) run, by their imageID"
        " (repeatable; needs get and list on pods there)",
    )
    add_kube_args(parser)
    parser.add_argument("--tag", action="append", metavar="K=V", help="tag the snapshot (repeatable)")
    parser.add_argument("--backup-id", metavar="ID", help="the backup run this snapshot belongs to")
    parser.add_argument("--cluster", metavar="NAME", help="record the Kubernetes cluster's name")
    parser.add_argument("--policy", metavar="NAME", help="record the policy")
    add_app_args(parser)
    parser.add_argument(
        "--scratch", metavar="DIR", help="directory for the blobs before they are stored (default: $TMPDIR)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="download every blob and manifest, even those the previous snapshot of this registry holds",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the ID")
    parser.epilog = CONNECTION_EPILOG + KUBE_EPILOG


def images_of(args, client) -> tuple[list[tuple], dict]:
    """The images the pods of ``--images-of`` run (see :mod:`steps.manifests.pod_images`)."""
    import sys

    from steps.commands._kube import kube_client
    from steps.errors import UsageError
    from steps.manifests.pod_images import images_of_pods, list_selected_pods, parse_images_of

    selections = [parse_images_of(text) for text in args.images_of]
    with kube_client(args) as kube:
        pods = list_selected_pods(kube, selections)
    found = images_of_pods(pods, client.endpoint.host)
    for line in found.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not found.roots:
        raise UsageError(
            f"--images-of {' '.join(map(str, selections))}: the {len(pods)} pod(s) selected run no image of"
            f" {client.endpoint.host} ({len(found.warnings)} container(s) skipped, listed above)"
        )
    recorded = {"images_of": [str(s) for s in selections], "pods": found.pods, "skipped": found.warnings}
    return list(found.roots), recorded


def roots_of(args, client) -> tuple[list[tuple], dict]:
    """``[(repository, tag or digest)]`` (or ``(repository, digest, tag)``) to back up, and the
    selection as recorded."""
    import fnmatch

    from steps.drivers.registry_reference import parse_reference
    from steps.errors import UsageError

    given = [o for o, v in (("--repository", args.repository), ("--image", args.image),
                            ("--images-of", args.images_of)) if v]  # fmt: skip
    if len(given) != 1:
        raise UsageError(
            "--repository / --image / --images-of: give repository patterns, image references or pods"
            f" (one of them){', got ' + ' and '.join(given) if given else ''}"
        )
    if args.images_of:
        return images_of(args, client)
    if args.image:
        roots = []
        for text in args.image:
            ref = parse_reference(text)
            if ref.host and ref.host.lower() != client.endpoint.host.lower():
                raise UsageError(
                    f"--image: {text!r} is on {ref.host}, not on --registry {client.endpoint.host}"
                    " (one registry per backup)"
                )
            roots.append((ref.repository, ref.digest or ref.tag))
        return sorted(set(roots)), {"images": list(args.image)}
    names = client.catalog()
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in args.repository)]
    if not chosen:
        raise UsageError(
            f"--repository: no repository of {client.endpoint.host} matches {', '.join(args.repository)}"
            f" ({len(names)} repositories listed)"
        )
    roots = []
    for name in chosen:
        roots.extend((name, tag) for tag in client.list_tags(name))
    return roots, {"repositories": list(args.repository)}


def run(args) -> int:
    import sys

    from steps.drivers.files import remove_dir, scratch_dir
    from steps.drivers.registry_client import RegistryClient
    from steps.drivers.registry_stage import stage_images, write_description
    from steps.errors import UsageError
    from steps.progress import human_bytes
    from steps.repository.records import save_run_record, utc_now_iso
    from steps.repository.registry_tree import RegistryParent, registry_parent, store_registry_tree

    tags = parse_tags(args.tag)
    if "kind" in tags and tags["kind"] != "registry":
        raise UsageError(f"--tag: kind is registry for a registry snapshot, got kind={tags['kind']}")
    client = RegistryClient(endpoint_of(args))
    roots, selection = roots_of(args, client)
    repo = open_repository(args)

    def warn(line: str) -> None:
        print(f"warning: {line}", file=sys.stderr)

    work = scratch_dir(args.scratch, "registry-backup-")
    try:
        # load before anything is downloaded, without prune's deletion candidates (docs/design.md, Prune)
        repo.begin_write()
        parent_snap = None if args.full else registry_parent(repo, client.endpoint.host, warn)
        parent = RegistryParent.load(repo, parent_snap, warn) if parent_snap is not None else None
        staged = stage_images(client, roots, work, parent=parent)
        desc = staged.describe(client.endpoint.host, utc_now_iso(), selection)
        write_description(work, desc)
        # one retention group per registry: the same tags for every snapshot of it
        tags.update({"kind": "registry", "registry": client.endpoint.host})
        if args.backup_id:
            tags.setdefault("backup", args.backup_id)
        identity = snapshot_identity(args)
        result = store_registry_tree(
            repo,
            work,
            staged.reused,
            tags=tags,
            backup_id=args.backup_id,
            identity=identity,
            parent=parent.snapshot_id if parent is not None else None,
        )
    finally:
        remove_dir(work)
    summary = {
        "snapshot": result.snapshot_id,
        "registry": desc["registry"],
        "repositories": len(desc["repositories"]),
        "tags": sum(len(e["tags"]) for e in desc["repositories"].values()),
        "manifests": desc["manifest_count"],
        "blobs": desc["blob_count"],
        "blob_bytes": desc["blob_bytes"],
        "image_bytes": desc["image_bytes"],
        "bytes_added": result.bytes_added,
        "parent": parent.snapshot_id if parent is not None else None,
        "blobs_downloaded": staged.blobs_downloaded,
        "bytes_downloaded": staged.bytes_downloaded,
        "blobs_reused": len(staged.reused),
        "manifests_fetched": staged.manifests_fetched,
        "manifests_reused": staged.manifests_reused,
    }
    if args.backup_id:
        save_run_record(
            repo, args.backup_id, "registry", {**summary, "time": desc.get("time"), **run_identity(args)}
        )
    print(
        f"registry snapshot {result.snapshot_id[:8]} saved: {summary['repositories']} repositories,"
        f" {summary['tags']} tags, {summary['manifests']} manifests, {summary['blobs']} blobs"
        f" ({human_bytes(summary['blob_bytes'])}; images total {human_bytes(summary['image_bytes'])}) from"
        f" {desc['registry']}; downloaded {staged.blobs_downloaded} blobs"
        f" ({human_bytes(staged.bytes_downloaded)}), {len(staged.reused)} taken from parent"
        f" {parent.snapshot_id[:8] if parent is not None else 'none'}; added {result.bytes_added} bytes",
        file=sys.stderr,
    )
    if args.json:
        print_json(summary)
    else:
        print(result.snapshot_id)
    return 0
