"""snapflow exporter: Prometheus metrics from repositories' committed backup records."""

from __future__ import annotations

NAME = "exporter"
HELP = "serve Prometheus metrics read from repositories' committed backup records"
DESCRIPTION = """\
Read each repository's backup and run records (records only, never packs; a refresh opens only the
records it has not seen) every --interval seconds in the background, and serve /metrics from the last
refresh: per app (labels cluster, namespace, app, source, repository) the newest committed backup, its
RPO target, size, freeze window, verify and restore-test results; per repository (label repository)
whether it could be read. Targets come from --policy files or directories of them (their *.yaml and
*.yml files: schedule, freeze deadline, restore test) or from the flags for apps without one. With
--render, print the exporter's Deployment, Service, ServiceMonitor, PrometheusRule and a ConfigMap
with its Grafana dashboard as YAML (credentials only by Secret reference) instead of serving; --rules
prints the plain rule file, --dashboard the dashboard's JSON.

Password and S3 settings come from the environment as for the steps (SNAPFLOW_PASSWORD or
SNAPFLOW_PASSWORD_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SNAPFLOW_S3_ENDPOINT).

examples:
  snapflow exporter --repo s3://backups/shop --repo s3://backups/erp --listen 0.0.0.0:9464
  snapflow exporter --repo s3://backups/shop --policy policies/ --interval 300
  snapflow exporter --render --namespace monitoring --repo s3://backups/shop \\
      --password-secret snapflow-repository --credentials-secret snapflow-s3 > exporter.yaml
"""


def configure(parser):
    parser.add_argument("--repo", action="append", default=[], metavar="URL", help="repository (repeatable)")
    parser.add_argument("--endpoint", metavar="URL", help="S3 endpoint URL (default: $SNAPFLOW_S3_ENDPOINT)")
    parser.add_argument("--listen", default="0.0.0.0:9464", metavar="HOST:PORT", help="default 0.0.0.0:9464")
    parser.add_argument(
        "--interval", default="60", metavar="S", help="seconds between refreshes (default 60)"
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="policy file, or a directory of them (repeatable)",
    )
    parser.add_argument("--rpo", default="26h", metavar="DURATION", help="RPO of apps without a policy (26h)")
    parser.add_argument(
        "--freeze-budget",
        default="30s",
        metavar="DURATION",
        help="freeze budget of apps without a policy (30s)",
    )
    parser.add_argument(
        "--restore-test-max-age",
        default="off",
        metavar="DURATION",
        help="of apps without a policy (default off: none expected)",
    )
    parser.add_argument(
        "--commit-deadline", default="6h", metavar="DURATION", help="of apps without a policy (6h)"
    )
    parser.add_argument("--once", action="store_true", help="refresh once, print the metrics and exit")
    render = parser.add_argument_group("rendering (--render)")
    render.add_argument("--render", action="store_true", help="print the Kubernetes objects as YAML")
    render.add_argument("--rules", action="store_true", help="print the plain Prometheus rule file")
    render.add_argument("--dashboard", action="store_true", help="print the Grafana dashboard (JSON)")
    render.add_argument("--namespace", metavar="NS", help="namespace of the rendered objects")
    render.add_argument("--image", metavar="IMAGE", help="image (default: the step image)")
    render.add_argument("--password-secret", default="snapflow-repository", metavar="NAME[:KEY]")
    render.add_argument("--credentials-secret", metavar="NAME", help="Secret with the S3 key pair")
    render.add_argument("--policy-config-map", metavar="NAME", help="ConfigMap of policy files to mount")
    render.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="added to every object"
    )
    render.add_argument(
        "--runbook-base", default="docs/runbooks", metavar="URL", help="where the runbooks are served"
    )


def run(args) -> int:
    from workflows.cli._common import policy_errors_as_lines
    from workflows.fleet.command import run_exporter

    return policy_errors_as_lines(lambda: run_exporter(args))
