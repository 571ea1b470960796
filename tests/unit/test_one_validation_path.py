"""Lint and run time apply the same hook rules from the same code: a policy target that ``snapflow lint``
accepts renders its hook in the freeze holder, and one the freeze holder would refuse fails lint with
the same message (only the field's prefix differs: ``spec.quiesce[0]`` in a policy, ``targets[0]`` in
the plan)."""

from __future__ import annotations

import copy

import pytest

from steps.errors import UsageError
from steps.plan import plan_from_dict
from steps.quiesce.hook_specs import RenderContext, render_hook
from tests.fixtures.policies import MINIMAL_POLICY
from workflows.cli import main
from workflows.policy import PolicyError, parse_policy

CTX = RenderContext(
    backup_id="b1", hold_id="shop/app/t", atomic_cut=True, keepalive_s=1, deadline_s=30, freeze_timeout_s=5
)


def _policy(target: dict) -> dict:
    doc = copy.deepcopy(MINIMAL_POLICY)
    doc["spec"]["quiesce"] = [target]
    return doc


def _lint_problem(target: dict) -> str | None:
    """The policy's problem with ``target``, without the ``FILE: spec.quiesce[0].`` prefix."""
    try:
        parse_policy(_policy(target), "p.yaml")
    except PolicyError as err:
        (line,) = err.problems
        prefix = "p.yaml: spec.quiesce[0]."
        assert line.startswith(prefix), line
        return line[len(prefix) :]
    return None


def _run_time_problem(target: dict) -> str | None:
    """The freeze holder's problem with ``target`` read from a plan, without ``targets[0].``."""
    plan = plan_from_dict(_plan_doc(target))
    try:
        render_hook(plan.targets[0], CTX, where="targets[0]")
    except UsageError as err:
        assert str(err).startswith("targets[0]."), err
        return str(err)[len("targets[0].") :]
    return None


POD = {"pod": "orders-db-0"}
TARGETS = [
    # Disagreement 1: a custom hook with only prepare commands (docs/consistency.md allows it).
    {"hook": "custom", **POD, "params": {"prepare": ["sync"]}},
    # Disagreement 2: a credential-like parameter the policy let through to the plan ConfigMap.
    {"hook": "postgresql", **POD, "params": {"access_key": "AKIA-not-a-real-key"}},
    {"hook": "custom", **POD, "params": {"freeze": ["a"], "thaw": ["b"]}},
    {"hook": "custom", **POD, "params": {"freeze": ["a"]}},
    {"hook": "custom", **POD},
    {"hook": "fsfreeze", **POD},
    {"hook": "fsfreeze", **POD, "params": {"mount": "/data"}},
    {"hook": "postgresql", **POD, "params": {"mode": "snapshot"}},
    {"hook": "mysql", **POD, "params": {"method": "lock_everything"}},
    {"hook": "postgresql", **POD, "params": {"password_env": "not a name"}},
    {"hook": "postgresql", **POD, "params": {"password_file": "/etc/pg/password", "user": "backup"}},
    {"hook": "postgresql", **POD, "params": {"db_pass": "hunter2"}},
    {"hook": "redis", **POD, "params": {"auth": "hunter2"}},
    {"hook": "mongodb", **POD, "params": {"apiKey": "k"}},
]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t['hook']}-{'-'.join(t.get('params', {}))}")
def test_lint_and_run_time_give_the_same_verdict_and_message(target):
    lint = _lint_problem(target)
    assert lint == _run_time_problem(target)
    if lint and "credentials" in lint:  # and the value of a credential is not echoed
        assert all(str(value) not in lint for value in target["params"].values())


@pytest.mark.slow
def test_a_custom_hook_with_only_prepare_commands_lints_clean_and_runs(write_policy, capsys):
    target = {"hook": "custom", **POD, "params": {"prepare": ["sync"]}}
    assert main(["lint", str(write_policy(_policy(target)))]) == 0
    assert render_hook(plan_from_dict(_plan_doc(target)).targets[0], CTX)["kind"] == "prepare"


@pytest.mark.slow
def test_a_credential_parameter_fails_lint_with_the_run_time_message(write_policy, capsys):
    target = {"hook": "postgresql", **POD, "params": {"access_key": "AKIA-not-a-real-key"}}
    assert main(["lint", str(write_policy(_policy(target)))]) != 0
    err = capsys.readouterr().err
    message = (
        "params.access_key: credentials are not accepted inline; "
        "expected password_file (a mounted file) or password_env (a variable name)"
    )
    assert f"spec.quiesce[0].{message}" in err and "AKIA" not in err
    with pytest.raises(UsageError) as refused:
        render_hook(plan_from_dict(_plan_doc(target)).targets[0], CTX, where="targets[0]")
    assert str(refused.value) == f"targets[0].{message}"


def _plan_doc(target: dict) -> dict:
    return {
        "version": 1,
        "app": {"cluster": "default", "namespace": "shop", "name": "orders-db", "policy": "orders-db"},
        "targets": [{"name": "t", **target}],
        "volumes": [{"name": "data", "pvc": "data-orders-db-0"}],
    }
