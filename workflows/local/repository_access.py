"""The local runner's way into the repository: opened with :func:`steps.api.open_repository` in the
steps' environment (the object store client and the password are read from it), to choose what to
restore and to store a run's step timeline as the run record ``pipeline`` of its backup (through
:func:`steps.api.save_run_record`, the steps' own way to write a run record)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from steps.api import Repository, SnapflowError, open_repository, save_run_record
from workflows.local.step_runs import utc_iso
from workflows.policy import Policy

if TYPE_CHECKING:
    from workflows.local.step_runs import RunResult


@contextlib.contextmanager
def steps_environ(env: dict[str, str]) -> Iterator[None]:
    """Use the steps' environment in this process for a moment (the object store client reads it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def open_policy_repository(policy: Policy, env: dict[str, str]) -> Repository:
    """The repository of ``policy``, opened with the steps' environment ``env``."""
    with steps_environ(env):
        repo_spec = policy.spec.repository
        return open_repository(repo_spec.url, repo_spec.endpoint)


def store_run_record(policy: Policy, env: dict[str, str], result: RunResult) -> str | None:
    """The step timeline as the run record ``pipeline`` of the backup; a warning when it fails."""
    record = result.to_dict()
    schedule = policy.spec.schedule
    record["schedule"] = None if schedule is None else {"cron": schedule.cron, "timezone": schedule.timezone}
    record["cluster"] = policy.spec.cluster
    record["namespace"] = policy.namespace
    record["time"] = utc_iso(result.finished)
    try:
        with steps_environ(env):
            repo = open_policy_repository(policy, env)
            save_run_record(repo, result.backup_id, "pipeline", record)
    except SnapflowError as err:
        return f"the step timeline was not stored in the repository: {err}"
    return None
