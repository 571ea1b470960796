"""snapflow audit: the repository's audit trail, printed or exported, and verified."""

from __future__ import annotations

NAME = "audit"
HELP = "print, export or verify the repository's audit trail (who did what to protected data, when)"
DESCRIPTION = """\
Every action on protected data appends an authenticated record to the repository's audit trail: a
backup's commit, restores (which backup, into where), prune and forget (what was removed), key changes,
Object Lock settings, check results. Each record names the records before it by the hash of their
stored bytes, so a deleted or altered record breaks the chain.

  snapflow audit --repo URL [--since TIME] [--app APP]      the records, oldest first
  snapflow audit --repo URL --format jsonl|csv -o FILE       exported
  snapflow audit verify --repo URL                          walk the chain; exit 3 naming a break

Who: the identity the Workflow's Argo labels claim (anyone who can create Workflows can set them),
the CronWorkflow of a scheduled run, or the local user. Times are the object store's clock.

Password and S3 settings come from the environment as for the steps (SNAPFLOW_PASSWORD or
SNAPFLOW_PASSWORD_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SNAPFLOW_S3_ENDPOINT).

examples:
  snapflow audit --repo s3://backups/shop --endpoint https://minio:9000 --since 30d
  snapflow audit --repo s3://backups/shop --app shop/orders-db --format csv -o audit.csv
  snapflow audit verify --repo s3://backups/shop --json
"""

CSV_COLUMNS = ("seq", "time", "action", "result", "who", "app", "what", "id")


def configure(parser):
    parser.add_argument(
        "action", nargs="?", default="list", choices=("list", "verify"), help="list (default) or verify"
    )
    parser.add_argument("--repo", required=True, metavar="URL", help="s3://BUCKET/PREFIX (also file:///PATH)")
    parser.add_argument("--endpoint", metavar="URL", help="S3 endpoint URL (default: $SNAPFLOW_S3_ENDPOINT)")
    parser.add_argument(
        "--since", metavar="TIME", help="only records from this ISO time on, or this long ago (30d)"
    )
    parser.add_argument("--app", metavar="APP", help="only records of this app (NAME or NAMESPACE/NAME)")
    parser.add_argument(
        "--format", choices=("text", "jsonl", "csv"), default="text", help="output format (default text)"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.add_argument("--json", action="store_true", help="verify: print the verification as JSON")


def run(args) -> int:
    from datetime import UTC, datetime

    from steps.api import UsageError, audit_trail, open_repository
    from steps.errors import IntegrityError
    from workflows.report.evidence import audit_rows, parse_since

    if args.action == "verify" and (args.since or args.app or args.format != "text" or args.output):
        raise UsageError(
            "verify: walks the whole trail; --since, --app, --format and -o apply to the listing"
        )
    since = parse_since(args.since, datetime.now(UTC), 0) if args.since else None
    repo = open_repository(args.repo, args.endpoint)
    trail = audit_trail.read_trail(repo)
    if args.action == "verify":
        report = audit_trail.verify_trail(repo, trail)
        _verify_out(report, args.json)
        if report.findings:
            raise IntegrityError(audit_trail.describe(report.findings))
        if report.replaced:
            raise IntegrityError(f"audit trail: a record was replaced: {report.replaced[0]}")
        return 0
    entries = audit_trail.select(trail, since, args.app)
    if args.format == "jsonl":
        import json

        text = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
    elif args.format == "csv":
        from workflows.report.csv_export import csv_text

        rows = audit_rows(trail, since, args.app)
        text = csv_text(CSV_COLUMNS, ([row[k] for k in CSV_COLUMNS] for row in rows))
    else:
        from steps.errors import printable

        text = "".join(
            printable(
                f"{r['seq']:>6}  {r['time'][:19]}  {r['action']:<18} {r['result']:<8} {r['who']}"
                + (f"  [{r['app']}]" if r["app"] else "")
                + (f"  {r['what']}" if r["what"] else "")
            )
            + "\n"
            for r in audit_rows(trail, since, args.app)
        )
    _write(text, args.output)
    return 0


def _verify_out(report, as_json: bool) -> None:
    import json
    import sys

    if as_json:
        print(json.dumps(report.to_dict(), sort_keys=True))
        return
    for f in report.findings:
        seq = f" seq {f.seq}" if f.seq is not None else ""
        when = f" ({f.time})" if f.time else ""
        print(f"{f.problem}: {f.key}{seq}{when}: {f.message}")
    for r in report.replaced:
        print(f"replaced: {r}")
    state = "verified" if report.ok else f"BROKEN ({len(report.findings) + len(report.replaced)} finding(s))"
    print(
        f"audit trail {state}: {report.records} record(s), {len(report.heads)} head(s),"
        f" {report.forks} merge(s) of concurrent appends",
        file=sys.stdout,
    )
    print(f"cannot prove: {report.cannot_prove}")


def _write(text: str, output: str | None) -> None:
    import sys

    if not output:
        sys.stdout.write(text)
        return
    from steps.api import write_text_atomic

    write_text_atomic(output, text)
