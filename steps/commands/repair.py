"""``repair index``: rebuild the index from the packs' own headers."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, print_json, warn

NAME = "repair"
HELP = "repair the repository (index: rebuild it from the packs)"
DESCRIPTION = """Rebuild the index from the packs alone (each pack carries an encrypted list of its
blobs). The new index files supersede every old one, which are then deleted.

A pack whose bytes do not match its name is skipped, and the command exits 3 after the rebuild. A pack
that cannot be read for any other reason (permissions, the store not answering) stops the repair
before it writes or deletes anything: an index without that pack would drop its blobs.

example:
  python -m steps repair index --repo s3://backups/shop
"""


def configure(parser):
    sub = parser.add_subparsers(dest="what", metavar="WHAT", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser(
        "index", help="rebuild the index from the packs", description="rebuild the index from the packs"
    )
    add_repo_args(p)
    p.add_argument("--json", action="store_true")
    p.epilog = CONNECTION_EPILOG


def run(args) -> int:
    from steps.repository.checker import rebuild_index

    repo = open_repository(args)
    report = rebuild_index(repo)
    for d in report.damaged:
        warn(f"skipped damaged {d}")
    if args.json:
        print_json(
            {
                "packs": report.packs,
                "blobs": report.blobs,
                "damaged": report.damaged,
                "new_index": report.new_index,
                "removed_index": report.removed_index,
            }
        )
    else:
        print(
            f"index rebuilt from {report.packs} packs ({report.blobs} blobs); {len(report.damaged)} damaged packs"
            f" skipped; {len(report.removed_index)} old index files removed"
        )
    if report.damaged:
        from steps.errors import IntegrityError

        raise IntegrityError(
            f"repair index: {len(report.damaged)} damaged pack(s) skipped (their bytes do not match their"
            f" names), e.g. {report.damaged[0]}; their blobs are no longer indexed: run verify to see which"
            " snapshots need them"
        )
    return 0
