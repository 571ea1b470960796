"""The identity options of the source steps (``etcd-snapshot``, ``registry-backup``, ``bucket-backup``):
which cluster, namespace, app and policy a snapshot and its run record belong to, as ``copy`` records
them. A run record carries them as ``app: {cluster, namespace, name, policy}`` (docs/design.md,
"runs/GROUP/ID"), so that a run that never committed still names its app."""

from __future__ import annotations

FIELDS = (("cluster", "cluster"), ("namespace", "namespace"), ("app", "name"), ("policy", "policy"))


def add_app_args(parser) -> None:
    """``--namespace`` and ``--app`` (the steps already take ``--cluster`` and ``--policy``)."""
    parser.add_argument("--namespace", metavar="NS", help="record the namespace of the policy")
    parser.add_argument("--app", metavar="NAME", help="record the app name (the policy's spec.app)")


def snapshot_identity(args) -> dict[str, str]:
    """The identity fields of the snapshot (those given)."""
    return {opt: value for opt, _ in FIELDS if (value := getattr(args, opt, None))}


def run_identity(args) -> dict:
    """``{"app": {cluster, namespace, name, policy}}`` for the run record, or ``{}`` when no identity
    option was given (a step run by hand)."""
    app = {key: getattr(args, opt, None) or None for opt, key in FIELDS}
    return {"app": app} if any(app.values()) else {}
