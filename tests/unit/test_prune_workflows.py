"""The rendered prune and init workflows: retention time zone, grace period, Object Lock, a mutex per
repository, and separate (non append-only) credentials for prune."""

from __future__ import annotations

import copy

from workflows.render import render_files


def _templates(rendering) -> dict[str, dict]:
    return {o.obj["metadata"]["name"]: o.obj for o in rendering.ordered() if o.kind == "WorkflowTemplate"}


def _container(wt: dict, step: str) -> dict:
    return next(t["container"] for t in wt["spec"]["templates"] if t["name"] == step)


def _arg(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def _secret_of(container: dict) -> str:
    env = {e["name"]: e for e in container.get("env", [])}
    return env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"]


def test_prune_gets_the_policys_time_zone_grace_period_and_lock(minimal_policy, write_policy):
    # GIVEN a scheduled policy in Berlin time, with Object Lock and separate prune credentials
    policy = copy.deepcopy(minimal_policy)
    policy["spec"]["schedule"] = {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "prune": "0 5 * * *"}
    policy["spec"]["retention"] = {"keepDaily": 7}
    policy["spec"]["workflow"] = {"activeDeadlineSeconds": 172800}
    policy["spec"]["repository"]["objectLock"] = {"mode": "compliance", "days": 30}
    policy["spec"]["repository"]["pruneCredentialsSecret"] = {"name": "snapflow-s3-prune"}
    # WHEN it is rendered
    wts = _templates(render_files([write_policy(policy)]))
    prune = _container(wts["prune-orders-db"], "prune")
    init = _container(wts["init-orders-db"], "init")
    copy_step = next(
        t["container"] for t in wts["backup-orders-db"]["spec"]["templates"] if t["name"].startswith("copy-")
    )
    # THEN prune counts days in Berlin, waits longer than the longest backup, and keeps locks for 30 days
    assert _arg(prune["args"], "--timezone") == "Europe/Berlin"
    assert _arg(prune["args"], "--grace") == f"{172800 + 3600}s"
    assert (_arg(prune["args"], "--lock-mode"), _arg(prune["args"], "--lock-days")) == ("compliance", "30")
    # AND init creates the bucket with Object Lock
    assert (_arg(init["args"], "--object-lock-mode"), _arg(init["args"], "--object-lock-days")) == (
        "compliance",
        "30",
    )
    # AND prune uses its own credentials, backups the (append-only) ones
    assert _secret_of(prune) == "snapflow-s3-prune"
    assert _secret_of(copy_step) == "snapflow-s3"


def test_policies_sharing_a_repository_share_one_prune_mutex(minimal_policy, write_policy):
    # GIVEN two policies of one namespace writing to the same repository, and one to another
    a = copy.deepcopy(minimal_policy)
    b = copy.deepcopy(minimal_policy)
    b["metadata"]["name"] = "orders-cache"
    c = copy.deepcopy(minimal_policy)
    c["metadata"]["name"] = "other"
    c["spec"]["repository"]["url"] = "s3://backups/elsewhere"
    # WHEN rendered
    wts = _templates(render_files([write_policy([a, b, c])]))

    def mutex(name: str) -> str:
        return wts[name]["spec"]["synchronization"]["mutexes"][0]["name"]

    # THEN both prunes of the shared repository hold one mutex, not the backups' mutex
    assert mutex("prune-orders-db") == mutex("prune-orders-cache") != mutex("prune-other")
    assert mutex("prune-orders-db") != mutex("backup-orders-db")
    # AND without a schedule prune counts in UTC, with a grace period of at least a day
    args = _container(wts["prune-orders-db"], "prune")["args"]
    assert _arg(args, "--timezone") == "UTC" and _arg(args, "--grace") == "86400s"
    assert "--lock-mode" not in args
